"""Connection-status indicator accuracy (001 §9.2; the Live / Reconnecting / Offline component of 000 §3.1 Task 4):
what a browser probe's indicator showed (``Indicator`` records, page time mapped onto the run's clock) against
the true state of its connection, as the fault proxy it goes through knows it (``Fault`` start and end on that
proxy).

The truth, per fault reaching a probe: its connection is down from the fault's start to its end, up again
from the end. Judged over the window from the start to the end plus the criterion's ``max_lag_ms``:

* **share of time right**: the part of the window in which the indicator showed "Live" exactly when the
  connection was up;
* **lag to leave Live**: from the start to the first moment it showed anything but Live. A reset closes the
  socket, so the client knows at once: allowed ``max_lag_ms``. A black hole closes nothing: only the client's
  heartbeat can notice it, after up to two of its heartbeat intervals (its detection time, from the probe's
  own policy), so that is allowed on top;
* **lag back to Live**: from the end (or from when it left Live, if later) to "Live" again: ``max_lag_ms``.

An indicator that never leaves Live, or never comes back, within the window fails, with its evidence. A
fault that reached no browser probe leaves the criterion unknown: nothing was seen.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from harness.checks.result import Result
from harness.records import Fault, Indicator, ProbeInfo, Record

__all__ = ["IndicatorRun", "check_indicator", "detection_ns", "indicator_runs"]


def detection_ns(info: ProbeInfo) -> int:
    """How long a client may take to notice a silent connection: two heartbeat intervals of its policy."""
    return int(2 * info.heartbeat_s * 1e9)


@dataclass(frozen=True)
class IndicatorRun:
    probe: str
    fault_id: str
    regime: str
    start: int
    end: int
    window_end: int
    right_pct: float
    leave_lag: int | None  # ns from the start until it left Live (None: it never did in the window)
    back_lag: int | None  # ns from the end (or its leaving, if later) until Live again (None: never)
    leave_allowed: int
    states: tuple[tuple[int, str], ...]  # (t, state) it showed in the window


def _shown(timeline: list[Indicator], t: int) -> str:
    state = "Offline"  # before the page showed anything
    for r in timeline:
        if r.t > t:
            break
        state = r.state
    return state


def indicator_runs(records: list[Record], probes: dict[str, ProbeInfo], max_lag_ns: int) -> list[IndicatorRun]:
    """One ``IndicatorRun`` per (network fault, browser probe behind the faulted proxy)."""
    faults: dict[str, dict[str, Fault]] = {}
    shown: dict[str, list[Indicator]] = {}
    for r in records:
        if isinstance(r, Fault):
            faults.setdefault(r.fault_id, {})[r.phase] = r
        elif isinstance(r, Indicator):
            shown.setdefault(r.probe, []).append(r)
    out: list[IndicatorRun] = []
    for fid, f in faults.items():
        start, end = f.get("start"), f.get("end")
        if start is None or end is None or start.name not in ("reset", "blackhole"):
            continue
        for name, info in probes.items():
            if info.flavour != "browser" or info.via != start.target:
                continue
            timeline = sorted(shown.get(name, []), key=lambda r: r.t)
            window_end = end.t + max_lag_ns
            allowed = max_lag_ns + (detection_ns(info) if start.name == "blackhole" else 0)
            cuts = sorted({start.t, end.t, window_end, *(r.t for r in timeline if start.t < r.t < window_end)})
            right = 0
            for a, b in itertools.pairwise(cuts):
                up = a >= end.t
                if (_shown(timeline, a) == "Live") == up:
                    right += b - a
            leave = next((r.t for r in timeline if start.t <= r.t <= start.t + allowed + max_lag_ns
                          and r.state != "Live"), None)
            if leave is None and _shown(timeline, start.t) != "Live":
                leave = start.t
            back = None
            if leave is not None:
                since = max(end.t, leave)
                back = next((r.t for r in timeline if r.t >= since and r.state == "Live"), None)
                if back is not None:
                    back = back - since
            span = max(1, window_end - start.t)
            out.append(IndicatorRun(
                probe=name, fault_id=fid, regime=start.name, start=start.t, end=end.t, window_end=window_end,
                right_pct=100.0 * right / span, leave_lag=None if leave is None else leave - start.t,
                back_lag=back, leave_allowed=allowed,
                states=tuple((r.t, r.state) for r in timeline if start.t - 1 <= r.t <= window_end)))
    return out


def check_indicator(records: list[Record], probes: dict[str, ProbeInfo], regime: str, max_lag_ms: float,
                    name: str = "indicator") -> Result:
    max_lag = int(max_lag_ms * 1e6)
    runs = [r for r in indicator_runs(records, probes, max_lag) if regime in ("*", r.regime)]
    if not runs:
        return Result(name, None, summary=f"no {regime} fault reached a browser probe: the indicator was not seen")
    bad: list[dict[str, Any]] = []
    for r in runs:
        why = None
        if r.leave_lag is None or r.leave_lag > r.leave_allowed:
            why = "never left Live" if r.leave_lag is None else f"left Live after {r.leave_lag / 1e9:.2f} s"
            why += f" (allowed {r.leave_allowed / 1e9:.2f} s)"
        elif r.back_lag is None or r.back_lag > max_lag:
            why = "never showed Live again" if r.back_lag is None else f"back to Live after {r.back_lag / 1e9:.2f} s"
            why += f" (allowed {max_lag / 1e9:.2f} s)"
        if why:
            bad.append({"probe": r.probe, "fault_id": r.fault_id, "why": why, "right_pct": round(r.right_pct, 1),
                        "states": [[round((t - r.start) / 1e9, 3), s] for t, s in r.states]})
    leaves = [r.leave_lag for r in runs if r.leave_lag is not None]
    backs = [r.back_lag for r in runs if r.back_lag is not None]
    worst_right = min(r.right_pct for r in runs)
    longest = max([*leaves, *backs], default=0) / 1e9
    summary = (f"{len(runs)} indicator(s) through {regime} faults: right {worst_right:.1f} % of the time at worst "
               f"(mean {sum(r.right_pct for r in runs) / len(runs):.1f} %); longest lag {longest:.2f} s "
               f"(left Live after max {max(leaves, default=0) / 1e9:.2f} s of {runs[0].leave_allowed / 1e9:.2f} s "
               f"allowed; Live again after max {max(backs, default=0) / 1e9:.2f} s of {max_lag / 1e9:.2f} s)")
    if bad:
        summary = f"{len(bad)} of {len(runs)} wrong: {bad[0]['probe']} {bad[0]['why']}; " + summary
    return Result(name, not bad, value=longest, summary=summary,
                  details={"runs": [{"probe": r.probe, "fault_id": r.fault_id, "regime": r.regime,
                                     "right_pct": round(r.right_pct, 2),
                                     "leave_lag_ms": None if r.leave_lag is None else round(r.leave_lag / 1e6, 1),
                                     "back_lag_ms": None if r.back_lag is None else round(r.back_lag / 1e6, 1),
                                     "leave_allowed_ms": round(r.leave_allowed / 1e6, 1)} for r in runs],
                           "evidence": bad[:20], "longest_lag_s": longest, "worst_right_pct": worst_right})
