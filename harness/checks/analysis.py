"""One pass over a history, shared by every checker, the verdict and the report.

``analyze`` pairs what drivers expected with what probes saw, once:

* every (expected event, entitled probe) pair becomes a ``Delivery`` with the observations that
  match it (``Expectation.matches``); an observation of an expected event at a probe *not* entitled
  to it is a ``Leak``; an observation matching no expectation is "foreign" (someone else's row, or
  an event nobody recorded an expectation for) and is counted, not judged;
* the clock facts (``ClockFacts``, the latest refining earlier ones) place commit timestamps on the
  run's timeline;
* the run's own facts (started, preflight, stages, errors, interruption, cleanup, finished) and the
  history file's unreadable lines are gathered for the verdict's run lines.

Latency samples are computed on demand and cached, per event group and metric.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from harness.checks.reconnection import Recovery, Reliability, recoveries, reliability
from harness.checks.stats import stats
from harness.records import (
    Broadcast,
    BrowserTab,
    Change,
    Cleanup,
    ClockFacts,
    Created,
    Expectation,
    Fault,
    Interrupted,
    JsProbesStarted,
    LoopError,
    Observation,
    Op,
    PreflightDone,
    Presence,
    ProbeInfo,
    ProbeSet,
    Record,
    Refetch,
    RunError,
    RunFinished,
    RunPlan,
    RunStarted,
    Stage,
)

__all__ = ["METRICS", "PROBE_SETS", "Analysis", "Delivery", "Leak", "RunFacts", "analyze"]

METRICS = ("write_to_deliver", "commit_to_deliver", "write_to_screen")
# which probes a latency criterion judges: the protocol probes (ours and supabase-js under Node) or the browser
# probes (supabase-js in Chromium, judged by what a person sees: write -> screen)
PROBE_SETS = {"protocol": ("ours", "supabase-js"), "browser": ("browser",), "all": ("ours", "supabase-js", "browser")}


@dataclass(slots=True)
class Delivery:
    exp: Expectation
    probe: str
    process: str  # the driver that wrote it
    t_write: int  # the driver's invoke time: write->deliver starts here
    seen: list[Observation] = field(default_factory=list)

    def latency_ns(self) -> int | None:
        return self.seen[0].t - self.t_write if self.seen else None


@dataclass(frozen=True)
class Leak:
    exp: Expectation
    probe: str
    obs: Observation


@dataclass
class RunFacts:
    """What the history says about the run itself, for the verdict's run lines."""

    started: RunStarted | None = None
    plan: RunPlan | None = None
    preflight: list[PreflightDone] = field(default_factory=list)
    stages: list[Stage] = field(default_factory=list)
    errors: list[RunError] = field(default_factory=list)
    interrupted: Interrupted | None = None
    loop_errors: list[LoopError] = field(default_factory=list)
    cleanups: list[Cleanup] = field(default_factory=list)
    created: list[Created] = field(default_factory=list)
    finished: RunFinished | None = None
    js: JsProbesStarted | None = None
    faults: list[Fault] = field(default_factory=list)
    ops: int = 0
    failed: list[Op] = field(default_factory=list)  # writes that definitely did not happen
    uncertain: list[Op] = field(default_factory=list)  # writes whose outcome is unknown (info)
    unreadable: list[tuple[int, str]] = field(default_factory=list)  # (line, reason), not counting a torn tail
    torn_tail: bool = False

    @property
    def flows_ran(self) -> bool:
        return self.ops > 0


@dataclass
class Analysis:
    deliveries: dict[tuple[str, str], Delivery]
    unexpected: list[Leak]
    foreign: int
    probes: dict[str, ProbeInfo]
    run: RunFacts
    observations: list[Observation] = field(default_factory=list)
    refetches: dict[str, list[Refetch]] = field(default_factory=dict)  # probe -> what it read back after rejoining
    records: list[Record] = field(default_factory=list)
    wall_origin: int | None = None
    offset_ns: int = 0
    error_ns: int = 0
    _samples: dict[tuple[str | None, str, str], list[float]] = field(default_factory=dict)
    _recoveries: list[Recovery] | None = None
    _refetched: dict[tuple[str, str], dict[str | None, list[tuple[int, dict[str, Any]]]]] | None = None
    _degraded: set[tuple[str, str]] | None = None

    def flavour(self, probe: str) -> str:
        info = self.probes.get(probe)
        return info.flavour if info is not None else ("supabase-js" if probe.endswith("@js") else "ours")

    def judged_by(self, d: Delivery, probes: str) -> bool:
        """Whether a latency criterion over ``probes`` (``PROBE_SETS``) judges this delivery."""
        return self.flavour(d.probe) in PROBE_SETS[probes]

    def samples(self, group: str | None, metric: str, probes: str = "protocol") -> list[float]:
        """Latencies in ms of first deliveries in an event group (None or "*": all groups), on a healthy network
        (``degraded`` deliveries left out), at the probes of ``probes`` (``PROBE_SETS``)."""
        if metric not in METRICS:
            raise ValueError(f"unknown latency metric {metric!r}")
        if probes not in PROBE_SETS:
            raise ValueError(f"unknown probe set {probes!r}")
        key = (None if group in (None, "*") else group, metric, probes)
        cached = self._samples.get(key)
        if cached is not None:
            return cached
        out: list[float] = []
        for d in self.deliveries.values():
            if not d.seen or (key[0] is not None and d.exp.group != key[0]) or self.degraded(d) \
                    or not self.judged_by(d, probes):
                continue
            first = d.seen[0]
            if metric == "write_to_deliver":
                out.append((first.t - d.t_write) / 1e6)
            elif metric == "write_to_screen":
                if isinstance(first, Change) and first.screen_t is not None:
                    out.append((first.screen_t - d.t_write) / 1e6)
            elif isinstance(first, Change) and first.commit_ns is not None and self.wall_origin is not None:
                receipt_wall = self.wall_origin + first.t
                out.append((receipt_wall - (first.commit_ns - self.offset_ns)) / 1e6)
        self._samples[key] = out
        return out

    def recoveries(self) -> list[Recovery]:
        """How each client came back from each fault that reached it (``reconnection.recoveries``), once."""
        if self._recoveries is None:
            self._recoveries = recoveries(self.records, self.probes)
        return self._recoveries

    def refetched(self, probe: str, table: str, row_id: str | None = None) -> list[tuple[int, dict[str, Any]]]:
        """(time, row) of every row the probe's refetches of ``table`` read (those that did not fail), in file
        order; with ``row_id``, only the rows whose ``id`` is it (indexed once: a missed event is looked up, not
        searched for among every row read back)."""
        if self._refetched is None:
            self._refetched = defaultdict(lambda: defaultdict(list))
            for p, fetches in self.refetches.items():
                for f in fetches:
                    if f.error:
                        continue
                    by_id = self._refetched[(p, f.table)]
                    for row in f.rows:
                        by_id[None].append((f.t, row))
                        if "id" in row:
                            by_id[str(row["id"])].append((f.t, row))
        rows = self._refetched.get((probe, table))
        if rows is None:
            return []
        return rows.get(row_id, [])

    def reliability(self) -> Reliability:
        return reliability(self.records, self.probes)

    def degraded(self, d: Delivery) -> bool:
        """Written or received while a fault had cut its probe off (from the fault's start until the probe was
        back: converged, or a second after the end for a connection that survived): judged by completeness
        and reconnection, not by the latency criteria, which are about a healthy network. Decided once for every
        delivery of the analysis (the checkers and the report ask about each of them, many times)."""
        if self._degraded is None:
            windows: dict[str, list[tuple[int, int]]] = defaultdict(list)
            for r in self.recoveries():
                end = max(r.back_t, r.fault_end) if r.disconnected else r.fault_end + 1_000_000_000
                windows[r.probe].append((r.fault_start, end))
            self._degraded = set()
            for key, dd in self.deliveries.items():
                mine = windows.get(dd.probe)
                if not mine:
                    continue
                got = dd.seen[0].t if dd.seen else None
                if any(s <= dd.t_write <= e or (got is not None and s <= got <= e) for s, e in mine):
                    self._degraded.add(key)
        return (d.exp.eid, d.probe) in self._degraded

    @property
    def error_ms(self) -> float:
        return self.error_ns / 1e6

    def flavours(self) -> dict[str, Any]:
        """write->deliver per probe flavour (ours; supabase-js twins), and for each event both flavours
        received, how much later the twin stamped it than its original (the client's own cost)."""
        groups: dict[str, list[float]] = {"ours": [], "supabase-js": [], "browser": []}
        expected = {"ours": 0, "supabase-js": 0, "browser": 0}
        delivered = {"ours": 0, "supabase-js": 0, "browser": 0}
        behind = self.behind_tabs()
        screen: dict[str, list[float]] = {"front": [], "behind": []}  # a browser tab's deliver -> DOM mutation
        frame: dict[str, list[float]] = {"front": [], "behind": []}  # deliver -> the next frame painted
        to_screen: dict[str, list[float]] = {"front": [], "behind": []}  # write -> DOM mutation
        for (_, probe), d in self.deliveries.items():
            f = self.flavour(probe)
            expected[f] += 1
            if d.seen:
                delivered[f] += 1
                if not self.degraded(d):
                    groups[f].append((d.seen[0].t - d.t_write) / 1e6)
                    first = d.seen[0]
                    if f == "browser" and isinstance(first, Change) and first.screen_t is not None:
                        where = "behind" if probe in behind else "front"
                        screen[where].append((first.screen_t - first.t) / 1e6)
                        to_screen[where].append((first.screen_t - d.t_write) / 1e6)
                        if first.frame_t is not None:
                            frame[where].append((first.frame_t - first.t) / 1e6)
        originals = {n: p.original for n, p in self.probes.items() if p.original and p.flavour == "supabase-js"}
        gaps = []
        for (eid, probe), d in self.deliveries.items():
            original = originals.get(probe)
            o = self.deliveries.get((eid, original)) if original else None
            if d.seen and o is not None and o.seen and not self.degraded(d) and not self.degraded(o):
                gaps.append((d.seen[0].t - o.seen[0].t) / 1e6)
        out: dict[str, Any] = {}
        for name, vals in groups.items():
            if expected[name]:
                out[name] = {"expected": expected[name], "delivered": delivered[name],
                             **(stats(vals, ("p50", "p95", "p99", "max")) if vals else {})}
        if gaps:
            out["twin_minus_original_ms"] = {"n": len(gaps), **stats(gaps, ("p50", "p95", "p99", "max"))}
        if "browser" in out:
            tabs = self.browser_tabs()
            errors = [t.clock_error_ns / 1e6 for t in tabs if t.phase == "start"]
            drifts = [abs(t.drift_ns) / 1e6 for t in tabs if t.phase == "end"]
            out["browser"]["clock_error_ms"] = max(errors, default=None)
            out["browser"]["clock_drift_ms"] = max(drifts, default=None)
            out["browser"]["hidden_tabs"] = sum(1 for t in tabs if t.phase == "start" and t.visibility == "hidden")
            for where in ("front", "behind"):
                part: dict[str, Any] = {name: stats(v, ("p50", "p95", "p99", "max")) for name, v in (
                    ("write_to_screen", to_screen[where]), ("deliver_to_screen", screen[where]),
                    ("deliver_to_frame", frame[where])) if v}
                if part:
                    part["n"] = len(to_screen[where])
                    part["unpainted"] = len(to_screen[where]) - len(frame[where])
                    out["browser"][where] = part
        return out

    def browser_tabs(self) -> list[BrowserTab]:
        return [r for r in self.records if isinstance(r, BrowserTab)]

    def behind_tabs(self) -> set[str]:
        """Browser probes whose tab was opened behind another one."""
        return {t.probe for t in self.browser_tabs() if t.phase == "start" and not t.front}


def _key(e: Expectation) -> tuple[str, str, str]:
    return (e.source, e.subject, e.type)


def _obs_key(o: Observation) -> tuple[str, str, str]:
    if isinstance(o, Change):
        return ("change", o.table, o.type.upper())
    if isinstance(o, Broadcast):
        return ("broadcast", o.event, "")
    return ("presence", o.event, "")


def _row(o: Observation) -> dict[str, Any]:
    """What ``Expectation.matches`` compares an observation's ``match`` columns against."""
    if isinstance(o, Change):
        return o.record or o.old_record or {}
    if isinstance(o, Broadcast):
        return o.payload
    return {**o.meta, "key": o.key}


class _Expected:
    """The expectations of one (source, subject, type), indexed by the values of the columns they match on: an
    observation finds its candidates by lookup, then ``Expectation.matches`` decides (exactly as a scan of every
    expectation would, without the scan: a run of a million records has tens of thousands of expectations)."""

    def __init__(self) -> None:
        self.by_columns: dict[tuple[str, ...], dict[tuple[str, ...], list[Expectation]]] = {}

    def add(self, e: Expectation) -> None:
        cols = tuple(sorted(e.match))
        self.by_columns.setdefault(cols, {}).setdefault(tuple(e.match[c] for c in cols), []).append(e)

    def hits(self, o: Observation) -> list[Expectation]:
        row = _row(o)
        out: list[Expectation] = []
        for cols, by_values in self.by_columns.items():
            got = by_values.get(tuple(str(row.get(c)) for c in cols))
            if got:
                out += [e for e in got if e.matches(o)]
        return out


def analyze(records: list[Record], unreadable: list[tuple[int, str]] | None = None,
            torn_tail: bool = False) -> Analysis:
    run = RunFacts(unreadable=list(unreadable or ()), torn_tail=torn_tail)
    invoked: dict[tuple[str, int], int] = {}
    by_key: dict[tuple[str, str, str], _Expected] = defaultdict(_Expected)
    deliveries: dict[tuple[str, str], Delivery] = {}
    probes: dict[str, ProbeInfo] = {}
    observations: list[Observation] = []
    refetches: dict[str, list[Refetch]] = defaultdict(list)
    clock: ClockFacts | None = None
    for r in records:
        if isinstance(r, Op):
            run.ops += 1
            if r.type == "fail":
                run.failed.append(r)
            elif r.type == "info":
                run.uncertain.append(r)
            if r.type == "invoke":
                invoked[(r.process, r.op_id)] = r.t
            elif r.type == "ok":
                t_write = invoked.get((r.process, r.op_id), r.t)
                for e in r.expect:
                    by_key[_key(e)].add(e)
                    for p in e.deliver_to:
                        deliveries[(e.eid, p)] = Delivery(e, p, r.process, t_write)
        elif isinstance(r, Change | Broadcast | Presence):
            observations.append(r)
        elif isinstance(r, Refetch):
            refetches[r.probe].append(r)
        elif isinstance(r, ClockFacts):
            clock = r
        elif isinstance(r, ProbeSet):
            probes.update({p.name: p for p in r.probes})
        elif isinstance(r, RunStarted):
            run.started = r
        elif isinstance(r, RunPlan):
            run.plan = r
        elif isinstance(r, PreflightDone):
            run.preflight.append(r)
        elif isinstance(r, Stage):
            run.stages.append(r)
        elif isinstance(r, RunError):
            run.errors.append(r)
        elif isinstance(r, Interrupted):
            run.interrupted = run.interrupted or r
        elif isinstance(r, LoopError):
            run.loop_errors.append(r)
        elif isinstance(r, Cleanup):
            run.cleanups.append(r)
        elif isinstance(r, Created):
            run.created.append(r)
        elif isinstance(r, RunFinished):
            run.finished = r
        elif isinstance(r, JsProbesStarted):
            run.js = r
        elif isinstance(r, Fault):
            run.faults.append(r)
    unexpected: list[Leak] = []
    foreign = 0
    for o in observations:
        expected = by_key.get(_obs_key(o))
        hits = expected.hits(o) if expected is not None else []
        if not hits:
            foreign += 1
        for e in hits:
            d = deliveries.get((e.eid, o.probe))
            if d is None:
                unexpected.append(Leak(e, o.probe, o))
            else:
                d.seen.append(o)
    wall = clock.wall_origin if clock else (run.started.wall_origin if run.started else None)
    return Analysis(deliveries, unexpected, foreign, probes, run, observations, dict(refetches), records, wall_origin=wall,
                    offset_ns=clock.offset_ns if clock else 0, error_ns=clock.error_ns if clock else 0)
