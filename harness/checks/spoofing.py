"""``no_spoofing``: did anyone receive an announcement a customer sent as if it were the admin?

The gate's ``spoof_announcement`` check records each attempt as an expectation of group ``spoofing`` that
nobody is entitled to; a probe that receives one shows in the analysis as a leak of that group. Those leaks are
this checker's, not ``no_leaks``' (``completeness`` leaves them out). No attempt recorded is unknown, never a
pass.
"""

from __future__ import annotations

from harness.apps import ANNOUNCEMENTS, SPOOFING
from harness.checks.analysis import Analysis
from harness.checks.result import Result
from harness.records import Op

__all__ = ["FIX", "check_spoofing"]

FIX = ("make it a private channel (config private: true) with an INSERT policy on realtime.messages that lets only"
       " admins send there")


def check_spoofing(a: Analysis, name: str = "no_spoofing") -> Result:
    attempts = [e for r in a.records if isinstance(r, Op) and r.type == "ok" for e in r.expect if e.group == SPOOFING]
    if not attempts:
        return Result(name, None, summary="no spoofing attempt was made (the spoof_announcement check did not run)")
    got = [leak for leak in a.unexpected if leak.exp.group == SPOOFING]
    evidence = [{"eid": leak.exp.eid, "probe": leak.probe, "channel": getattr(leak.obs, "channel", "")}
                for leak in got[:20]]
    if got:
        probes = sorted({leak.probe for leak in got})
        return Result(name, False, value=len(got),
                      summary=f"{len(probes)} app instance(s) received an announcement a customer sent on "
                              f"{ANNOUNCEMENTS!r} ({len(got)} deliveries of {len(attempts)} attempts): every app "
                              f"would show it as the admin's; fix: {FIX}",
                      details={"evidence": evidence, "attempts": len(attempts), "probes": probes})
    return Result(name, True, value=0, summary=f"{len(attempts)} spoofing attempts by a customer reached nobody",
                  details={"attempts": len(attempts)})
