"""Completeness: did every event reach every subscriber entitled to it, once, and nobody else?

Drivers record what they expect: an ``op`` record of type ``ok`` carrying ``expect``, a
list of events, each ``{"eid", "table", "type", "match": {column: value}, "deliver_to":
[probe ids], "criterion"}``. Probes record what they saw: ``obs`` records with
``event == "change"`` and ``table``, ``type``, ``record`` (the row as delivered).

Each (expected event, entitled probe) pair lands in one of Jepsen's queue classes:
``delivered`` (``late`` too when slower than its criterion's deadline), ``lost`` (never
arrived, but a later event of the same writer reached that probe), ``unseen`` (never
arrived, and nothing later did either), ``duplicated`` (arrived more than once). An
expected event seen by a probe *not* entitled to it is ``unexpected``: a leak.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from harness.checks.result import Result

__all__ = ["Delivery", "Expectation", "completeness", "expectations"]

CLASSES = ("delivered", "late", "lost", "unseen", "duplicated", "unexpected")
MAX_EVIDENCE = 20


@dataclass(frozen=True)
class Expectation:
    eid: str
    table: str
    type: str
    match: tuple[tuple[str, str], ...]
    deliver_to: frozenset[str]
    criterion: str
    process: str
    t_write: int  # the driver's invoke time: write->deliver starts here

    def matches(self, obs: dict[str, Any]) -> bool:
        if obs.get("table") != self.table or str(obs.get("type", "")).upper() != self.type:
            return False
        rec = obs.get("record") or obs.get("old_record") or {}
        return all(str(rec.get(k)) == v for k, v in self.match)


@dataclass
class Delivery:
    exp: Expectation
    probe: str
    seen: list[dict[str, Any]] = field(default_factory=list)

    def latency_ns(self) -> int | None:
        return self.seen[0]["t"] - self.exp.t_write if self.seen else None


def expectations(records: list[dict[str, Any]]) -> list[Expectation]:
    """What drivers expected. A ``meta`` record ``twins: {probe: original}`` (the same subscriptions
    through another client) makes each twin entitled to exactly what its original is."""
    invoked: dict[Any, int] = {}
    out: list[Expectation] = []
    twins: dict[str, list[str]] = defaultdict(list)
    for r in records:
        if r.get("kind") == "meta" and isinstance(r.get("twins"), dict):
            for twin, original in r["twins"].items():
                twins[str(original)].append(str(twin))
        if r.get("kind") != "op":
            continue
        if r.get("type") == "invoke":
            invoked[(r.get("process"), r.get("op_id"))] = int(r["t"])
        elif r.get("type") == "ok" and r.get("expect"):
            t_write = invoked.get((r.get("process"), r.get("op_id")), int(r["t"]))
            for e in r["expect"]:
                out.append(Expectation(
                    eid=str(e["eid"]), table=str(e["table"]), type=str(e["type"]).upper(),
                    match=tuple(sorted((str(k), str(v)) for k, v in (e.get("match") or {}).items())),
                    deliver_to=frozenset(p for o in e.get("deliver_to") or () for p in (o, *twins.get(o, ()))),
                    criterion=str(e.get("criterion", "")),
                    process=str(r.get("process")), t_write=t_write))
    return out


def classify(records: list[dict[str, Any]], deadlines_ms: dict[str, float] | None = None
             ) -> tuple[dict[tuple[str, str], Delivery], list[tuple[Expectation, str, dict[str, Any]]], int]:
    """Deliveries per (eid, probe), unexpected sightings, and the count of changes matching no expectation."""
    exps = expectations(records)
    by_kind: dict[tuple[str, str], list[Expectation]] = defaultdict(list)
    for e in exps:
        by_kind[(e.table, e.type)].append(e)
    deliveries = {(e.eid, p): Delivery(e, p) for e in exps for p in sorted(e.deliver_to)}
    unexpected: list[tuple[Expectation, str, dict[str, Any]]] = []
    foreign = 0
    for r in records:
        if r.get("kind") != "obs" or r.get("event") != "change":
            continue
        hits = [e for e in by_kind.get((r.get("table", ""), str(r.get("type", "")).upper()), ()) if e.matches(r)]
        if not hits:
            foreign += 1
        for e in hits:
            d = deliveries.get((e.eid, str(r.get("probe"))))
            if d is None:
                unexpected.append((e, str(r.get("probe")), r))
            else:
                d.seen.append(r)
    return deliveries, unexpected, foreign


def completeness(records: list[dict[str, Any]], deadlines_ms: dict[str, float] | None = None) -> Result:
    deadlines_ms = deadlines_ms or {}
    deliveries, unexpected, foreign = classify(records, deadlines_ms)
    if not deliveries:
        return Result("completeness", None, summary="no expected deliveries in the history")
    counts = dict.fromkeys(CLASSES, 0)
    per_probe: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(CLASSES, 0))
    per_criterion: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(CLASSES, 0))
    evidence: list[dict[str, Any]] = []
    # for "lost": the latest write time of each (process, probe) that did arrive
    latest_arrived: dict[tuple[str, str], int] = {}
    for (_, probe), d in deliveries.items():
        if d.seen:
            key = (d.exp.process, probe)
            latest_arrived[key] = max(latest_arrived.get(key, -1), d.exp.t_write)
    for (eid, probe), d in deliveries.items():
        cls: list[str] = []
        if d.seen:
            cls.append("delivered")
            lat = d.latency_ns()
            deadline = deadlines_ms.get(d.exp.criterion)
            if deadline is not None and lat is not None and lat / 1e6 > deadline:
                cls.append("late")
            if len(d.seen) > 1:
                cls.append("duplicated")
        elif latest_arrived.get((d.exp.process, probe), -1) > d.exp.t_write:
            cls.append("lost")
        else:
            cls.append("unseen")
        for c in cls:
            counts[c] += 1
            per_probe[probe][c] += 1
            per_criterion[d.exp.criterion][c] += 1
            if c != "delivered" and len(evidence) < MAX_EVIDENCE:
                evidence.append({"class": c, "eid": eid, "probe": probe, "criterion": d.exp.criterion,
                                 "copies": len(d.seen)})
    for e, probe, _r in unexpected:
        counts["unexpected"] += 1
        per_probe[probe]["unexpected"] += 1
        per_criterion[e.criterion]["unexpected"] += 1
        if len(evidence) < MAX_EVIDENCE:
            evidence.append({"class": "unexpected", "eid": e.eid, "probe": probe, "criterion": e.criterion,
                             "entitled": sorted(e.deliver_to)})
    expected = len(deliveries)
    pct = 100.0 * counts["delivered"] / expected
    bad = counts["lost"] + counts["unseen"] + counts["duplicated"] + counts["unexpected"]
    summary = (f"{counts['delivered']}/{expected} delivered ({pct:.2f} %), lost {counts['lost']}, unseen "
               f"{counts['unseen']}, duplicated {counts['duplicated']}, unexpected {counts['unexpected']}, "
               f"late {counts['late']}")
    return Result("completeness", bad == 0, value=pct, summary=summary,
                  details={"counts": counts, "expected": expected, "foreign": foreign,
                           "per_probe": {k: dict(v) for k, v in per_probe.items()},
                           "per_criterion": {k: dict(v) for k, v in per_criterion.items()},
                           "evidence": evidence})
