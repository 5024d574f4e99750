"""From a load run's histograms and counts to the criteria's results: the adapter ``criteria.verdict`` takes as
its ``Evidence`` (the verdict's rules stay in ``harness/criteria.py``).

Completeness, as the gate counts it, without a record per delivery: for every subscriber and every
publisher stream, the subscriber's ``SeqSet`` against the stream's writes.

* who is entitled is ``Declaration.accepts`` (``harness/apps.py``): the subscriber's app, screens and
  viewer against the stream's table, type and facts;
* which writes a subscriber owes: those sent from ``guard`` after it went live (its clock started only
  after the server's postgres_changes ``system`` ok, and the guard covers two machines' clocks) up to
  ``settle`` before it stopped listening (publishers stop first at the end of a run; subscribers listen on
  for the settle window); writes that failed or whose outcome is unknown are owed by nobody, and writes
  sent during a fault window (plus a margin) are not judged for live delivery;
* delivered, lost (missing while a later write of the same publisher arrived), unseen (missing and
  nothing later came), duplicated, unexpected (seen by a subscriber not entitled to the stream: a leak);
  late counts deliveries past their group's deadline. Expected (writes x entitled subscribers) is
  reported against delivered.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from harness.apps import APPS, ChangeEvent, Declaration, ProbeSpec, Viewer
from harness.checks import CLASSES, Result
from harness.checks.latency import judge_latency
from harness.checks.reconnection import Reliability, check_reliability
from harness.criteria import Criterion
from harness.load.hdr import figures
from harness.load.seqset import SeqSet
from harness.load.tally import Merged, Stream, Watch

__all__ = ["LoadEvidence", "count_deliveries"]

LOAD_DECLARATION = Declaration(apps=dict(APPS), probes=())
HOW = " (HdrHistogram, 3 significant digits)"


def _viewer(w: Watch) -> Viewer:
    v = w.viewer
    return Viewer(uid=str(v["uid"]), role=v["role"], vendor_id=v.get("vendor_id"))


def _event(s: Stream) -> ChangeEvent:
    return ChangeEvent(s.table, s.type, {}, s.facts, s.group)  # type: ignore[arg-type]


def _excluded(sent: Any, a: int, b: int, windows: list[tuple[int, int]]) -> SeqSet:
    """The seqs of [a, b] sent inside a fault window."""
    out = SeqSet()
    for lo, hi in windows:
        i, j = bisect.bisect_left(sent, lo) + 1, bisect.bisect_right(sent, hi)
        for n in range(max(a, i), min(b, j) + 1):
            out.add(n)
    return out


def _owed(stream: Stream, a: int, b: int, skip: SeqSet) -> tuple[int, SeqSet]:
    """How many of [a, b] are owed (sent ok, outside fault windows), and the set of those that are not."""
    out = SeqSet.of(n for lo, hi in stream.bad.ranges for n in range(max(lo, a), min(hi, b) + 1))
    for lo, hi in skip.ranges:
        for n in range(lo, hi + 1):
            out.add(n)
    return (b - a + 1) - len(out), out


def count_deliveries(m: Merged, settle_ns: int, guard_ns: int = 1_000_000_000,
                     faults: list[tuple[int, int]] | None = None,
                     declaration: Declaration = LOAD_DECLARATION) -> dict[str, Any]:
    """Every class of the gate's completeness, per event group and per app, without a record per delivery."""
    counts = dict.fromkeys(CLASSES, 0)
    per_group: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(CLASSES, 0))
    per_app: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(CLASSES, 0))
    evidence: dict[str, list[dict[str, Any]]] = {c: [] for c in CLASSES if c != "delivered"}
    expected = out_of_order = foreign = 0
    windows = faults or []
    pairs = 0

    def add(cls: str, n: int, s: Stream, w: Watch) -> None:
        if n <= 0:
            return
        counts[cls] += n
        per_group[s.group][cls] += n
        per_app[w.app][cls] += n
        if cls in evidence and len(evidence[cls]) < 10:
            evidence[cls].append({"class": cls, "subscriber": w.sid, "app": w.app, "publisher": s.pub,
                                  "group": s.group, "n": n})

    for w in m.watches.values():
        foreign += w.foreign
        for g, n in w.late.items():
            counts["late"] += n
            per_group[g]["late"] += n
            per_app[w.app]["late"] += n
        if not w.live_ns:
            continue
        spec = ProbeSpec(w.sid, w.app, w.user, w.screens, twin=False)
        viewer = _viewer(w)
        end = w.end_ns or m.last_report_ns.get(m.source_of.get(w.sid, ""), 0)
        for s in m.streams.values():
            seen = w.seen.get(s.pub)
            if not declaration.accepts(spec, _event(s), viewer):
                if seen is not None:
                    add("unexpected", len(seen), s, w)
                continue
            a = bisect.bisect_left(s.sent, w.live_ns + guard_ns) + 1
            b = bisect.bisect_right(s.sent, end - settle_ns)
            if a > b:
                continue
            pairs += 1
            owed, not_owed = _owed(s, a, b, _excluded(s.sent, a, b, windows))
            seen = seen or SeqSet()
            got = seen.count(a, b) - sum(1 for lo, hi in not_owed.ranges for n in range(lo, hi + 1) if n in seen)
            expected += owed
            per_group[s.group]["expected"] = per_group[s.group].get("expected", 0) + owed
            add("delivered", got, s, w)
            missing = owed - got
            top = min(b, seen.highest)
            lost = 0
            if missing and top >= a:
                owed_top = (top - a + 1) - not_owed.count(a, top)
                got_top = seen.count(a, top) - sum(1 for lo, hi in not_owed.ranges
                                                   for n in range(lo, min(hi, top) + 1) if n in seen)
                lost = owed_top - got_top
            add("lost", lost, s, w)
            add("unseen", missing - lost, s, w)
            add("duplicated", seen.duplicates, s, w)
            out_of_order += seen.out_of_order
    return {"counts": counts, "expected": expected, "per_group": {k: dict(v) for k, v in per_group.items()},
            "per_app": {k: dict(v) for k, v in per_app.items()}, "evidence": {k: v for k, v in evidence.items() if v},
            "out_of_order": out_of_order, "foreign": foreign, "pairs": pairs}


@dataclass
class LoadEvidence:
    """``criteria.Evidence`` for a load run."""

    merged: Merged
    settle_ns: int
    guard_ns: int = 1_000_000_000
    error_ms: float = 0.0  # the clock offset's error bar (commit->deliver on a remote target)
    faults: list[tuple[int, int]] = field(default_factory=list)
    regimes: frozenset[str] = frozenset()  # the faults the run injected (reset, blackhole, ...)
    tally: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tally = count_deliveries(self.merged, self.settle_ns, self.guard_ns, self.faults)

    @property
    def ran(self) -> bool:
        return any(len(s.sent) for s in self.merged.streams.values())

    @property
    def completeness(self) -> Result:
        t = self.tally
        counts, expected = t["counts"], t["expected"]
        if not expected:
            return Result("completeness", None, summary="no deliveries owed: no subscriber was live while a "
                                                        "publisher it is entitled to wrote")
        pct = 100.0 * counts["delivered"] / expected
        bad = counts["lost"] + counts["unseen"] + counts["duplicated"] + counts["unexpected"]
        summary = (f"{counts['delivered']}/{expected} delivered ({pct:.2f} %; expected = writes x entitled "
                   f"subscribers, {t['pairs']} pairs), lost {counts['lost']}, unseen {counts['unseen']}, duplicated "
                   f"{counts['duplicated']}, unexpected {counts['unexpected']}, late {counts['late']}")
        return Result("completeness", bad == 0, value=pct, summary=summary,
                      details={"counts": counts, "expected": expected, "foreign": t["foreign"], "live_pct": pct,
                               "per_group": t["per_group"], "per_app": t["per_app"], "evidence": t["evidence"]})

    @property
    def flavours(self) -> dict[str, Any]:
        h = self.merged.book.get(None, "write_to_deliver")
        c = self.tally["counts"]
        f = {k: v for k, v in figures(h).items() if not math.isnan(v)}
        return {"ours": {"expected": self.tally["expected"], "delivered": c["delivered"], **f}} if h.get_total_count() \
            else {}

    def covers(self, c: Criterion) -> bool:
        """Latency criteria of event groups some publisher writes (or of every group), and the rest of the flow
        criteria; not the kinds a load run cannot judge (reconnection timed from a fault's end, the offline queue)."""
        if c.kind == "latency":
            return c.events == "*" or any(s.group == c.events for s in self.merged.streams.values())
        if c.kind == "reconnection":  # a reset is over the moment it starts: from the drop is from its end
            return c.milestone == "rejoined" and c.regime in self.regimes & {"reset"} | ({"*"} if self.regimes
                                                                                       == {"reset"} else set())
        return c.kind in ("completeness", "leaks", "ordering", "reliability")

    def judge(self, c: Criterion) -> Result:
        if c.kind == "latency":
            h = self.merged.book.get(None if c.events == "*" else c.events, c.metric)
            return judge_latency(c.id, figures(h), h.get_total_count(), c.metric, c.statistic, c.max_ms,
                                 self.error_ms if c.metric == "commit_to_deliver" else 0.0, how=HOW)
        if c.kind == "ordering":
            n = self.tally["out_of_order"]
            return Result(c.id, n == 0, value=n, summary=f"{n} deliveries came after a later write of the same "
                                                         "publisher (each publisher writes one at a time)")
        if c.kind == "reliability":
            return check_reliability(self.joins(), c.min_pct, name=c.id)
        if c.kind == "reconnection":
            h = self.merged.book.get("*", "reconnect")
            never = [w.sid for w in self.merged.watches.values() if w.live_ns and w.end_ns and w.held < w.channels]
            f = figures(h)
            if not h.get_total_count():
                return Result(c.id, None, summary="no subscriber lost its connection to the fault")
            value = f.get(c.statistic, math.nan)
            return Result(c.id, value <= c.max_ms and not never, value=value, details={"figures": f, "n":
                          h.get_total_count(), "evidence": never[:10]},
                          summary=f"{c.statistic} {value / 1000:.2f} s from the drop to every channel live again "
                                  f"(limit {c.max_ms / 1000:g} s) over {h.get_total_count()} reconnections{HOW}")
        return Result(c.id, None, summary=f"a load run does not judge {c.kind}")

    def joins(self) -> Reliability:
        ws = self.merged.watches.values()
        return Reliability(attempts=sum(w.joins for w in ws), held=sum(w.joined for w in ws))

    def reliability_figures(self) -> dict[str, Any]:
        """Joins attempted, joined, still joined at the end; reconnects and their durations: beside the latency."""
        ws = list(self.merged.watches.values())
        rec = self.merged.book.get("*", "reconnect")
        apps: dict[str, int] = {}
        for w in ws:
            apps[w.app] = apps.get(w.app, 0) + 1
        return {"subscribers": len(ws), "by_app": apps, "live": sum(1 for w in ws if w.live_ns),
                "joins_attempted": sum(w.joins for w in ws),
                "joined": sum(w.joined for w in ws), "still_joined_at_end": sum(w.held for w in ws),
                "reconnects": sum(w.reconnects for w in ws), "reconnect_ms": figures(rec) if rec.get_total_count() else {},
                "errors": [f"{w.sid}: {w.error}" for w in ws if w.error][:10]}
