"""Faults and what they did to each client: reconnection in two regimes, reliability, connection-state truth.

From the records alone (DESIGN.md, "Reconnection"):

* ``spans``: each fault's start and end (``Fault`` records paired by ``fault_id``) and its **regime**:
  ``reset`` (connections closed: the client notices at once; a realtime restart is one too) or
  ``blackhole`` (nothing passes: only a heartbeat notices); other faults keep their own name.
* ``recoveries``: for each fault and each probe it reached (the probe's socket goes through the faulted
  proxy, or the fault is the stack's own), on the run's clock:
  detection (fault start -> the client noticed: its socket closed or a heartbeat went unanswered), then from
  the fault's **end** to (a) the socket open again, (b) every channel rejoined and live again (the server's
  postgres_changes ``system`` ok; a join reply for the others), (c) the first live event, (d) the app's
  view converged (its refetch over REST done). A probe whose connection survived (a black hole shorter
  than its heartbeat) is marked ``disconnected=False``: it needed no reconnection.
* ``reliability``: the share of join attempts that succeeded and stayed joined until a fault reached the
  probe or the run ended.
* ``state truth``: how long each probe's connection state said "live" while its network was down.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from harness.checks.result import Result
from harness.checks.stats import STATISTICS, stat
from harness.records import (
    Broadcast,
    Change,
    ChannelClosed,
    ConnState,
    Fault,
    JoinAttempt,
    Presence,
    ProbeInfo,
    Record,
    Refetch,
    RunFinished,
    System,
)

__all__ = ["MILESTONES", "REGIMES", "FaultSpan", "Recovery", "Reliability", "check_reconnection", "check_reliability",
           "recoveries", "reliability", "spans"]

REGIMES = {"reset": "reset", "restart_realtime": "reset", "blackhole": "blackhole"}
MILESTONES = ("socket", "rejoined", "first_event", "converged")
LOST = ("closed", "heartbeat_timeout")  # socket states that mean the client saw its connection go
# a join whose postgres_changes bindings are not live this long after its reply has failed, fault or not: the
# clients' push timeout (supabase-js and ours, 10 s). A fault sooner than that leaves the attempt unjudged.
LIVE_WITHIN_NS = 10_000_000_000
# a socket loss this soon after a fault that reached the probe ended is that fault's (the client reads the close late)
LOSS_GRACE_NS = 2_000_000_000
STOPPING = "stopping"  # a probe's own end: what its socket does afterwards is not the target's doing


@dataclass(frozen=True)
class FaultSpan:
    fault_id: str
    name: str
    target: str
    start: int
    end: int | None  # None: never ended (the run stopped during it)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def regime(self) -> str:
        return REGIMES.get(self.name, self.name)

    def reaches(self, probe: ProbeInfo) -> bool:
        """A proxy's fault reaches the probes whose socket goes through it; the stack's own reach everyone."""
        return self.target == probe.via or (self.target == "embedded" and self.name.startswith(("restart", "pause")))


def spans(records: Iterable[Record]) -> list[FaultSpan]:
    starts: dict[str, Fault] = {}
    ends: dict[str, int] = {}
    for r in records:
        if isinstance(r, Fault):
            if r.phase == "start":
                starts.setdefault(r.fault_id, r)
            else:
                ends.setdefault(r.fault_id, r.t)
    return sorted((FaultSpan(f.fault_id, f.name, f.target, f.t, ends.get(fid), dict(f.params))
                   for fid, f in starts.items()), key=lambda s: s.start)


@dataclass(frozen=True)
class Recovery:
    probe: str
    fault_id: str
    regime: str
    fault_start: int
    fault_end: int
    disconnected: bool
    noticed_t: int | None = None
    socket_t: int | None = None
    rejoined_t: int | None = None
    first_event_t: int | None = None
    converged_t: int | None = None
    interrupted: bool = False  # the next fault came before it rejoined
    horizon_t: int | None = None  # when its window closed: the next fault that reached it, its stop, the run's end

    @property
    def back_t(self) -> int:
        """When it was back to normal (converged, else rejoined, else the fault's end): the end of its outage."""
        return self.converged_t or self.rejoined_t or self.fault_end

    @property
    def detection_ms(self) -> float | None:
        return None if self.noticed_t is None else (self.noticed_t - self.fault_start) / 1e6

    def ms(self, milestone: str) -> float | None:
        """Milliseconds from the fault's end to the milestone (0 for a connection that survived, for socket and
        rejoined); None if it never came."""
        if milestone not in MILESTONES:
            raise ValueError(f"unknown milestone {milestone!r}")
        if not self.disconnected and milestone in ("socket", "rejoined"):
            return 0.0
        t = getattr(self, f"{milestone}_t")
        return None if t is None else max(0.0, (t - self.fault_end) / 1e6)


@dataclass
class _Timeline:
    stopped: int | None = None
    socket: list[tuple[int, str]] = field(default_factory=list)
    ready: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))  # topic -> times it became ready
    events: list[int] = field(default_factory=list)
    refetches: list[int] = field(default_factory=list)


def _timelines(records: Iterable[Record], probes: dict[str, ProbeInfo]) -> dict[str, _Timeline]:
    out: dict[str, _Timeline] = defaultdict(_Timeline)
    pg = {name: set(info.topics_joined()[: len(info.subs)]) for name, info in probes.items()}
    for r in records:
        if isinstance(r, ConnState) and r.channel is None:
            if r.state == STOPPING:
                out[r.probe].stopped = r.t
            elif out[r.probe].stopped is None:
                out[r.probe].socket.append((r.t, r.state))
        elif isinstance(r, System | JoinAttempt) and _ready(r, pg):
            out[r.probe].ready[r.channel].append(r.t)
        elif isinstance(r, Change | Broadcast | Presence):
            out[r.probe].events.append(r.t)
        elif isinstance(r, Refetch):
            out[r.probe].refetches.append(r.t)
    return out


def _ready(r: System | JoinAttempt, pg: dict[str, set[str]]) -> bool:
    """A channel became ready: postgres_changes went live (system ok), or another channel's join was ok."""
    if isinstance(r, System):
        return r.extension == "postgres_changes" and r.status == "ok"
    return isinstance(r, JoinAttempt) and r.outcome == "ok" and r.channel not in pg.get(r.probe, set())


def _first(ts: Iterable[int], after: int, before: int | None = None) -> int | None:
    got = [t for t in ts if t >= after and (before is None or t < before)]
    return min(got) if got else None


def recoveries(records: list[Record], probes: dict[str, ProbeInfo]) -> list[Recovery]:
    all_spans = spans(records)
    end_of_run = max((r.t for r in records if isinstance(r, RunFinished)), default=None)
    lines = _timelines(records, probes)
    out: list[Recovery] = []
    for name, info in sorted(probes.items()):
        mine = [s for s in all_spans if s.reaches(info)]
        tl = lines.get(name, _Timeline())
        for i, f in enumerate(mine):
            if f.end is None:
                continue
            before = [st for t, st in tl.socket if t < f.start]
            if before and before[-1] != "open":
                continue  # it was already down when this fault came: nothing of this fault's doing to time
            ends = [t for t in (mine[i + 1].start if i + 1 < len(mine) else None, tl.stopped, end_of_run)
                    if t is not None]
            horizon = min(ends) if ends else None
            noticed = _first((t for t, st in tl.socket if st in LOST), f.start, horizon)
            socket_t = rejoined = None
            if noticed is not None:
                socket_t = _first((t for t, st in tl.socket if st == "open"), noticed, horizon)
                if socket_t is not None:
                    ready = [_first(tl.ready.get(topic, ()), socket_t, horizon) for topic in info.topics_joined()]
                    rejoined = None if any(t is None for t in ready) else max(t for t in ready if t is not None)
            first_event = _first(tl.events, max(f.end, rejoined or f.end), horizon)
            converged = None
            if rejoined is not None:
                after = [t for t in tl.refetches if t >= rejoined and (horizon is None or t < horizon)]
                converged = max(after) if after else None
            nxt = mine[i + 1].start if i + 1 < len(mine) else None
            cut_short = nxt is not None and (tl.stopped is None or nxt < tl.stopped) and (
                (noticed is not None and rejoined is None)  # the next fault came before it rejoined
                or (noticed is None and nxt - f.end < 1_000_000_000))  # or before it could even notice
            out.append(Recovery(name, f.fault_id, f.regime, f.start, f.end, noticed is not None, noticed, socket_t,
                                rejoined, first_event, converged, interrupted=cut_short, horizon_t=horizon))
    return out


@dataclass(frozen=True)
class Reliability:
    attempts: int
    held: int  # succeeded and stayed joined until a fault reached the probe, or the run ended
    failures: tuple[dict[str, Any], ...] = ()

    @property
    def pct(self) -> float | None:
        return None if not self.attempts else 100.0 * self.held / self.attempts


def reliability(records: list[Record], probes: dict[str, ProbeInfo]) -> Reliability:
    """Join attempts (JoinAttempt) per probe and channel; one counts as held if it was ok, its channel then
    went live (postgres_changes: system ok before anything else happened to it), and it was not dropped
    (socket lost, channel closed) before a fault reached the probe or the run ended. An attempt a fault cut
    before it could succeed counts neither way: a join lost in the fault, or joined with its bindings not yet
    live when a fault came sooner than ``LIVE_WITHIN_NS`` after the reply (seen on a loaded machine: churn's
    next reset 0.3 ms after a join's reply). Not live by then, or by the run's end, is a failure."""
    all_spans = spans(records)
    attempts = 0
    held = 0
    failures: list[dict[str, Any]] = []
    by_probe: dict[str, list[Record]] = defaultdict(list)
    stopped: set[str] = set()
    for r in records:
        if isinstance(r, ConnState) and r.channel is None and r.state == STOPPING:
            stopped.add(r.probe)
        elif isinstance(r, JoinAttempt | System | ChannelClosed | ConnState) and r.probe not in stopped:
            by_probe[r.probe].append(r)
    for name, recs in by_probe.items():
        info = probes.get(name)
        mine = [s for s in all_spans if info is not None and s.reaches(info)]
        fault_starts = sorted(s.start for s in mine)
        pg = set(info.topics_joined()[: len(info.subs)]) if info is not None else set()
        for i, r in enumerate(recs):
            if not isinstance(r, JoinAttempt):
                continue
            if r.outcome == "lost" and any(s.start <= r.t <= (s.end or r.t) + LIVE_WITHIN_NS for s in mine):
                continue  # cut by a fault before it could succeed: no evidence either way
            attempts += 1
            ok = r.outcome == "ok"
            why = None if ok else f"join {r.outcome}: {r.detail or ''}".strip()
            live = r.channel not in pg
            next_fault = next((t for t in fault_starts if t > r.t), None)
            cut_t = None  # when a fault ended this attempt's watch
            for later in recs[i + 1:]:
                if not ok:
                    break
                if next_fault is not None and later.t >= next_fault:
                    cut_t = next_fault
                    break
                if isinstance(later, JoinAttempt) and later.channel == r.channel:
                    break  # the next attempt on this channel: this one's life ended without a fault... see below
                if isinstance(later, System) and later.channel == r.channel and later.extension == "postgres_changes":
                    if later.status == "ok":
                        live = True
                    else:
                        ok, why = False, f"postgres_changes refused: {later.message}"
                elif isinstance(later, ChannelClosed) and later.channel in (r.channel, None):
                    ok, why = False, f"channel closed: {later.reason}"
                elif isinstance(later, ConnState) and later.channel is None and later.state in LOST:
                    if any(sp.start <= later.t <= (later.t if sp.end is None else sp.end) + LOSS_GRACE_NS
                           for sp in mine):
                        cut_t = later.t  # joined while a fault was on (a reconnect in a reset): its loss is the fault's
                        break
                    ok, why = False, f"socket {later.state} with no fault active"
            if ok and not live:
                if cut_t is not None and cut_t - r.t < LIVE_WITHIN_NS:
                    attempts -= 1  # the fault came before its bindings could be live: no evidence either way
                    continue
                ok, why = False, "joined, but postgres_changes never went live"
            if ok:
                held += 1
            elif len(failures) < 20:
                failures.append({"probe": name, "channel": r.channel, "t_ms": round(r.t / 1e6, 1), "why": why})
    return Reliability(attempts, held, tuple(failures))


def check_reconnection(recs: list[Recovery], regime: str, milestone: str, statistic: str, max_ms: float,
                       name: str = "reconnection", flavour_of: dict[str, str] | None = None) -> Result:
    """Time from each fault's end to ``milestone``, over every probe the faults of ``regime`` disconnected. A
    probe that never got there fails the line; detection delay (fault start -> noticed) is reported beside."""
    if statistic not in STATISTICS:
        raise ValueError(f"unknown statistic {statistic!r}")
    mine = [r for r in recs if regime in ("*", r.regime)]
    if not mine:
        return Result(name, None, summary=f"no {regime} fault reached a probe in this run")
    # cut short by the next fault *before the limit had passed*: no evidence either way. A client still not back
    # when the limit had passed failed, whatever came next.
    limit_ns = max_ms * 1e6
    interrupted = [r for r in mine if r.interrupted and (r.horizon_t or r.fault_end) - r.fault_end <= limit_ns]
    mine = [r for r in mine if r not in interrupted]
    cut = [r for r in mine if r.disconnected]
    survived = len(mine) - len(cut)
    never = [r for r in cut if r.ms(milestone) is None]
    values = [v for r in cut if (v := r.ms(milestone)) is not None]
    detect = [d for r in cut if (d := r.detection_ms) is not None]
    flavours: dict[str, list[float]] = defaultdict(list)
    for r in cut:
        v = r.ms(milestone)
        if v is not None:
            flavours[(flavour_of or {}).get(r.probe, "ours")].append(v)
    figures = {s: stat(values, s) for s in STATISTICS} if values else {}
    def lateness(r: Recovery) -> float:
        v = r.ms(milestone)
        return float("inf") if v is None else v

    worst = sorted(cut, key=lateness, reverse=True)[:5]
    evidence = [{"probe": r.probe, "fault": r.fault_id, "regime": r.regime, f"{milestone}_ms": r.ms(milestone),
                 "detection_ms": r.detection_ms, "socket_ms": r.ms("socket"), "rejoined_ms": r.ms("rejoined"),
                 "first_event_ms": r.ms("first_event"), "converged_ms": r.ms("converged")} for r in worst]
    details: dict[str, Any] = {"regime": regime, "milestone": milestone, "statistic": statistic, "max_ms": max_ms,
                               "disconnected": len(cut), "survived": survived, "never": len(never),
                               "interrupted": len(interrupted),
                               "figures": figures, "evidence": evidence,
                               "detection_ms": {s: stat(detect, s) for s in ("p50", "max")} if detect else {},
                               "per_flavour": {f: {s: stat(v, s) for s in ("p50", "max")} for f, v in flavours.items()}}
    if not cut and not survived:
        return Result(name, None, details=details,
                      summary=f"no evidence: all {len(interrupted)} {regime} reconnections were cut short by the next "
                              f"fault before {max_ms / 1000:g} s")
    if not cut:
        return Result(name, True, value=0.0, details=details,
                      summary=f"no probe lost its connection in {survived} {regime} fault exposures (none to reconnect)")
    value = float("inf") if never else figures[statistic]
    det = f"; noticed after p50 {details['detection_ms']['p50'] / 1000:.1f} s" if detect else ""
    summary = (f"{statistic} {value / 1000:.2f} s from the fault's end to {milestone} (limit {max_ms / 1000:g} s) over "
               f"{len(cut)} reconnections" + (f", {len(never)} never {milestone}" if never else "") + det
               + (f"; {survived} connections survived" if survived else "")
               + (f"; {len(interrupted)} cut short by the next fault" if interrupted else ""))
    return Result(name, not never and value <= max_ms, value=value, summary=summary, details=details)


def check_reliability(rel: Reliability, min_pct: float, name: str = "connection_reliability") -> Result:
    if not rel.attempts:
        return Result(name, None, summary="no join attempts in the history")
    pct = rel.pct or 0.0
    needed = 1 if min_pct >= 100 else round(1 / (1 - min_pct / 100))
    weak = "" if rel.attempts >= needed else (f"; weak evidence: one failure in fewer than {needed} attempts would "
                                              f"already be below {min_pct:g} %")
    return Result(name, pct >= min_pct, value=pct, details={"attempts": rel.attempts, "held": rel.held,
                                                             "evidence": list(rel.failures)},
                  summary=f"{pct:.3f} % of {rel.attempts} join attempts held (limit {min_pct:g} %), "
                          f"{rel.attempts - rel.held} failed{weak}")
