"""Completeness: did every event reach every subscriber entitled to it, once, and nobody else?

Over the analysis (``analysis.py``), each (expected event, entitled probe) pair lands in one of
Jepsen's queue classes: ``delivered`` (``late`` too when slower than its group's deadline),
``lost`` (never arrived, but a later event of the same writer reached that probe), ``unseen``
(never arrived, and nothing later did either), ``duplicated`` (arrived more than once). An expected
event seen by a probe *not* entitled to it is ``unexpected``: a leak.

Supabase Realtime replays nothing a disconnected client missed; apps refetch when they rejoin. So an
event that never arrived live is ``recovered`` when the probe's refetch after it rejoined read its row
(every matched column equal, or the same row with a later ``updated_at``: a state superseded while it was
away is caught up by the newer one). Live delivery (delivered / expected) is a figure; delivery after
recovery (delivered + recovered) is what the 100 % criterion judges.

Evidence is kept per class (up to ``EVIDENCE_PER_CLASS`` items each), so a failing line always
names examples of what failed it, whatever else went wrong in the same run.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from harness.apps import SPOOFING
from harness.checks.analysis import Analysis, Delivery
from harness.checks.result import Result
from harness.clock import parse_wall

__all__ = ["CLASSES", "EVIDENCE_PER_CLASS", "completeness"]

CLASSES = ("delivered", "late", "recovered", "lost", "unseen", "duplicated", "unexpected")
EVIDENCE_PER_CLASS = 10


def completeness(a: Analysis, deadlines_ms: dict[str, float] | None = None) -> Result:
    deadlines_ms = deadlines_ms or {}
    if not a.deliveries:
        return Result("completeness", None, summary="no expected deliveries in the history")
    counts = dict.fromkeys(CLASSES, 0)
    per_probe: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(CLASSES, 0))
    per_group: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(CLASSES, 0))
    evidence: dict[str, list[dict[str, Any]]] = {c: [] for c in CLASSES if c != "delivered"}
    latest_arrived: dict[tuple[str, str], int] = {}  # for "lost": the latest write of (writer, probe) that arrived
    for (_, probe), d in a.deliveries.items():
        if d.seen:
            key = (d.process, probe)
            latest_arrived[key] = max(latest_arrived.get(key, -1), d.t_write)

    def count(cls: str, probe: str, group: str, item: dict[str, Any]) -> None:
        counts[cls] += 1
        per_probe[probe][cls] += 1
        per_group[group][cls] += 1
        if cls in evidence and len(evidence[cls]) < EVIDENCE_PER_CLASS:
            evidence[cls].append({"class": cls, **item})

    for (eid, probe), d in a.deliveries.items():
        item = {"eid": eid, "probe": probe, "group": d.exp.group, "copies": len(d.seen)}
        if d.seen:
            count("delivered", probe, d.exp.group, item)
            lat = d.latency_ns()
            deadline = deadlines_ms.get(d.exp.group)
            if deadline is not None and lat is not None and lat / 1e6 > deadline and not a.degraded(d):
                count("late", probe, d.exp.group, {**item, "ms": round(lat / 1e6, 1), "deadline_ms": deadline})
            if len(d.seen) > 1:
                count("duplicated", probe, d.exp.group, item)
        elif recovered(a, d):
            count("recovered", probe, d.exp.group, item)
        elif latest_arrived.get((d.process, probe), -1) > d.t_write:
            count("lost", probe, d.exp.group, item)
        else:
            count("unseen", probe, d.exp.group, item)
    for leak in a.unexpected:
        if leak.exp.group == SPOOFING:  # judged by no_spoofing (checks/spoofing.py)
            continue
        count("unexpected", leak.probe, leak.exp.group, {"eid": leak.exp.eid, "probe": leak.probe,
                                                          "group": leak.exp.group,
                                                          "entitled": sorted(leak.exp.deliver_to)})
    expected = len(a.deliveries)
    pct = 100.0 * (counts["delivered"] + counts["recovered"]) / expected
    live = 100.0 * counts["delivered"] / expected
    bad = counts["lost"] + counts["unseen"] + counts["duplicated"] + counts["unexpected"]
    summary = (f"{counts['delivered'] + counts['recovered']}/{expected} delivered ({pct:.2f} %), lost {counts['lost']},"
               f" unseen {counts['unseen']}, duplicated {counts['duplicated']}, unexpected {counts['unexpected']}, "
               f"late {counts['late']}")
    if counts["recovered"]:
        summary += f"; live {counts['delivered']}/{expected} ({live:.2f} %), {counts['recovered']} recovered by refetch"
    return Result("completeness", bad == 0, value=pct, summary=summary,
                  details={"counts": counts, "expected": expected, "foreign": a.foreign, "live_pct": live,
                           "per_probe": {k: dict(v) for k, v in per_probe.items()},
                           "per_group": {k: dict(v) for k, v in per_group.items()},
                           "evidence": {k: v for k, v in evidence.items() if v}})


def recovered(a: Analysis, d: Delivery) -> bool:
    """Whether the probe's refetch after rejoining read the row of this missed change (or a newer state of it)."""
    if d.exp.source != "change":
        return False
    want = d.exp.match
    # both ways to be recovered need the row's id when the event names one: only those rows are looked at
    for t, row in a.refetched(d.probe, d.exp.subject, want.get("id")):
        if t < d.t_write:
            continue
        if all(str(row.get(k)) == v for k, v in want.items()):
            return True
        if "id" in want and str(row.get("id")) == want["id"] and "updated_at" in want and row.get("updated_at"):
            try:
                if parse_wall(str(row["updated_at"])) >= parse_wall(want["updated_at"]):
                    return True
            except ValueError:
                continue
    return False
