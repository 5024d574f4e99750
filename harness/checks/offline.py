"""Offline sync (000 §5.2 "Update while offline", 001 §9.1 "Zero data loss on optimistic updates").

What an app queued while offline (``Queued``, each with an idempotency key) must reach the database exactly
once when the connection returns (``QueueVerified``: 0 rows is lost, 2 or more applied twice), the events of
its flush must reach every subscriber entitled to them (live, or by the refetch after a reconnect), and where
another device changed the same row meanwhile (``Conflict``), every app that shows the row must end at the
state the database holds (001 §8: last write wins, with conflict detection).
"""

from __future__ import annotations

from typing import Any

from harness.checks.analysis import Analysis
from harness.checks.completeness import recovered
from harness.checks.result import Result
from harness.records import Change, Conflict, Op, Queued, QueueVerified, Refetch

__all__ = ["check_offline", "final_views"]

VOLATILE = {"updated_at", "created_at"}


def final_views(a: Analysis, row_id: str) -> dict[str, dict[str, Any]]:
    """Each probe's last view of one row: its latest change event or refetched copy, by time."""
    seen: dict[str, tuple[int, dict[str, Any]]] = {}
    for r in a.records:
        if not isinstance(r, Change | Refetch):
            continue
        if isinstance(r, Change):
            rows = [r.record] if r.record and str(r.record.get("id")) == row_id else []
        else:
            rows = [x for x in r.rows if str(x.get("id")) == row_id]
        for row in rows:
            if r.probe not in seen or r.t >= seen[r.probe][0]:
                seen[r.probe] = (r.t, row)
    return {p: row for p, (_, row) in seen.items()}


def check_offline(a: Analysis, name: str = "offline_sync") -> Result:
    queued = [r for r in a.records if isinstance(r, Queued)]
    if not queued:
        return Result(name, None, summary="no offline queue in this run")
    verified = {r.key: r for r in a.records if isinstance(r, QueueVerified)}
    conflicts = [r for r in a.records if isinstance(r, Conflict)]
    unverified = [q.key for q in queued if q.key not in verified or verified[q.key].count < 0]
    lost = [q.key for q in queued if q.key in verified and verified[q.key].count == 0]
    twice = [q.key for q in queued if q.key in verified and verified[q.key].count > 1]
    keys = {(r.process, r.op_id): str(r.args["idem_key"]) for r in a.records
            if isinstance(r, Op) and r.type == "invoke" and r.args.get("idem_key")}
    flushed: dict[str, Op] = {}  # key -> the flush whose events the subscribers must get (its first send)
    for r in a.records:
        if isinstance(r, Op) and r.type == "ok" and (r.process, r.op_id) in keys and r.expect:
            flushed.setdefault(keys[(r.process, r.op_id)], r)
    missed: list[dict[str, Any]] = []
    never = [q.key for q in queued if q.key not in flushed]  # no flush recorded the events of this write
    for q in queued:
        op = flushed.get(q.key)
        for e in op.expect if op else ():
            for p in e.deliver_to:
                d = a.deliveries.get((e.eid, p))
                if d is not None and not d.seen and not recovered(a, d):
                    missed.append({"key": q.key, "probe": p, "eid": e.eid})
    diverged: list[dict[str, Any]] = []
    for c in conflicts:
        v = verified.get(c.key)
        if v is None or "id" not in v.state:
            continue
        truth = {k: str(x) for k, x in v.state.items() if k not in VOLATILE}
        for probe, view in final_views(a, str(v.state["id"])).items():
            differs = {k: (str(view.get(k)), want) for k, want in truth.items() if k in view and str(view.get(k)) != want}
            if differs:
                diverged.append({"key": c.key, "probe": probe, "differs": differs})
    bad = bool(lost or twice or missed or diverged or never)
    ok: bool | None = False if bad else (None if unverified else True)
    parts = [f"{len(queued)} queued writes: {len(queued) - len(lost) - len(twice) - len(unverified)} applied once, "
             f"{len(lost)} lost, {len(twice)} applied twice"
             + (f", {len(unverified)} not verified (the database was not asked, or did not answer)" if unverified
                else "")]
    if never:
        parts.append(f"{len(never)} never flushed")
    if missed:
        parts.append(f"{len(missed)} deliveries of the flush never reached their subscriber")
    if conflicts:
        parts.append(f"{len(conflicts)} conflict(s) resolved last-write-wins; "
                     + (f"{len(diverged)} view(s) did not end at the database's state" if diverged
                        else "every view ended at the database's state"))
    evidence = ([{"class": "lost", "key": k} for k in lost] + [{"class": "duplicated", "key": k} for k in twice]
                + [{"class": "never flushed", "key": k} for k in never]
                + [{"class": "unseen", **m} for m in missed[:10]] + [{"class": "diverged", **d} for d in diverged[:10]])
    return Result(name, ok, value=len(lost) + len(twice) + len(missed) + len(diverged), summary="; ".join(parts),
                  details={"queued": len(queued), "lost": lost, "duplicated": twice, "conflicts": len(conflicts),
                           "evidence": evidence})
