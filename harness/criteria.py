"""Criteria (``fixtures/criteria.toml``) and the verdict: one analysis -> every line -> GO / NO-GO.

The verdict is built here and nowhere else. Its lines come in the order a reader needs them:

1. the run's own lines, cause first: ``preflight`` (the target is not set up as the apps need),
   ``run`` (it crashed, was interrupted, or never finished: no finish record), ``history`` (lines of
   the history could not be read), ``writes`` (an app's write failed: the flows did not do what they
   test; a write of unknown outcome makes it unknown), ``cleanup`` (rows of the run were left on the
   target);
2. one line per criterion of the file.

GO needs every line valid. An invalid line is NO-GO; an unknown one (no samples, a checker that
failed, an error bar across the threshold) is NO-GO too, named as unknown: a release is not waved
through on missing evidence. When the flows never ran, the criteria are "not judged" and the run
lines say why.

Pure: this module reads an ``Analysis`` (``harness.checks``) and needs nothing of the runtime.
"""

from __future__ import annotations

import hashlib
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeGuard

from harness.apps import EVENT_GROUPS
from harness.checks import METRICS, STATISTICS, Analysis, Result, completeness, latency, ordering, run_checker
from harness.checks.analysis import PROBE_SETS
from harness.checks.indicator import check_indicator
from harness.checks.offline import check_offline
from harness.checks.reconnection import MILESTONES, check_reconnection, check_reliability
from harness.checks.spoofing import check_spoofing

__all__ = ["DEFAULT_CRITERIA", "RESERVED", "CriteriaError", "CriteriaSet", "Criterion", "Evidence", "Line", "Verdict",
           "load_criteria", "parse_criteria", "verdict"]

DEFAULT_CRITERIA = Path(__file__).resolve().parent.parent / "fixtures" / "criteria.toml"
KINDS = {"latency", "completeness", "leaks", "ordering", "reconnection", "reliability", "offline_sync", "indicator",
         "spoofing"}
PHASE_OF_KIND = {"reconnection": "resilience", "reliability": "resilience", "offline_sync": "offline",
                 "indicator": "resilience"}
REGIME_NAMES = ("reset", "blackhole", "*")
RESERVED = frozenset({"preflight", "run", "history", "writes", "cleanup"})  # the verdict's own run lines
_KEYS = {
    "latency": {"title", "source", "kind", "events", "metric", "statistic", "max_ms", "probes"},
    "completeness": {"title", "source", "kind", "min_delivered_pct"},
    "leaks": {"title", "source", "kind", "max_unexpected"},
    "ordering": {"title", "source", "kind"},
    "reconnection": {"title", "source", "kind", "regime", "milestone", "statistic", "max_ms"},
    "reliability": {"title", "source", "kind", "min_pct"},
    "offline_sync": {"title", "source", "kind"},
    "indicator": {"title", "source", "kind", "regime", "max_ms"},
    "spoofing": {"title", "source", "kind"},
}
NOT_JUDGED = "not judged: the flows did not run"


class CriteriaError(ValueError):
    """A criteria file that cannot be used; the message is one line naming the file and the problem."""


@dataclass(frozen=True)
class Criterion:
    id: str
    title: str
    kind: str
    source: str = ""
    events: str = "*"  # the event group judged ("*": all)
    metric: str = ""
    statistic: str = ""
    max_ms: float = 0.0
    min_delivered_pct: float = 100.0
    max_unexpected: int = 0
    regime: str = "*"  # reconnection: reset | blackhole | *
    milestone: str = "rejoined"  # reconnection: socket | rejoined | first_event | converged
    min_pct: float = 0.0  # reliability
    probes: str = "protocol"  # latency: protocol (ours and supabase-js under Node) | browser | all

    @property
    def phase(self) -> str:
        """The phase of a run that produces this criterion's evidence (``RunPlan``)."""
        return PHASE_OF_KIND.get(self.kind, "flows")

    @property
    def needs(self) -> tuple[str, ...]:
        """Every phase of the plan its evidence needs: its phase, and ``browser`` (the run had browser probes) for
        a criterion over what the browser probes saw."""
        browser = self.kind == "indicator" or (self.kind == "latency" and self.probes == "browser")
        return (self.phase, "browser") if browser else (self.phase,)


@dataclass(frozen=True)
class CriteriaSet:
    """The criteria a run is judged by, with the exact text they came from (stored in the run directory,
    so a run can be judged again after the file changed)."""

    criteria: tuple[Criterion, ...]
    text: str
    source: str = ""

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def __iter__(self) -> Any:
        return iter(self.criteria)

    def settle_floor_s(self) -> float:
        """The longest latency deadline of any event group: a settle window shorter than this counts events
        that are still due as unseen."""
        return max((c.max_ms / 1000 for c in self.criteria if c.kind == "latency" and c.events != "*"),
                   default=0.0)


@dataclass(frozen=True)
class Line:
    criterion: Criterion
    result: Result


@dataclass(frozen=True)
class Verdict:
    go: bool
    lines: tuple[Line, ...]
    target: dict[str, Any] = field(default_factory=dict)  # the public view of the target it ran against
    flavours: dict[str, Any] = field(default_factory=dict)  # write->deliver per probe flavour
    criteria_sha256: str = ""
    skipped: tuple[str, ...] = ()  # criteria of phases the run's plan left out (e.g. --no-faults): not judged
    seed: int | None = None  # the seed the run's random faults came from

    @property
    def label(self) -> str:
        return "GO" if self.go else "NO-GO"

    @property
    def judged(self) -> bool:
        return not any(ln.result.summary == NOT_JUDGED for ln in self.lines)

    def failing(self) -> list[Line]:
        return [ln for ln in self.lines if ln.result.valid is not True]

    def line(self, cid: str) -> Line:
        return next(ln for ln in self.lines if ln.criterion.id == cid)


def _num(v: Any) -> TypeGuard[int | float]:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def parse_criteria(text: str, source: str = "criteria") -> CriteriaSet:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise CriteriaError(f"criteria file {source}: not valid TOML ({e})") from e
    out: list[Criterion] = []
    for cid, spec in data.items():
        where = f"criteria file {source}: [{cid}]"
        if cid in RESERVED:
            raise CriteriaError(f"{where}: the id is reserved for the verdict's own lines ({', '.join(sorted(RESERVED))})")
        if not isinstance(spec, dict):
            raise CriteriaError(f"{where} must be a table")
        kind = spec.get("kind")
        if kind not in KINDS:
            raise CriteriaError(f"{where} kind must be one of {sorted(KINDS)}")
        unknown = set(spec) - _KEYS[kind]
        if unknown:
            raise CriteriaError(f"{where} unknown key(s) {sorted(unknown)}")
        if not isinstance(spec.get("title", ""), str) or not spec.get("title"):
            raise CriteriaError(f"{where} needs a title")
        if not isinstance(spec.get("source", ""), str):
            raise CriteriaError(f"{where} source must be a string")
        if kind == "reconnection":
            if spec.get("regime", "*") not in REGIME_NAMES:
                raise CriteriaError(f"{where} regime must be one of {list(REGIME_NAMES)}")
            if spec.get("milestone", "rejoined") not in MILESTONES:
                raise CriteriaError(f"{where} milestone must be one of {list(MILESTONES)}")
            if spec.get("statistic") not in STATISTICS:
                raise CriteriaError(f"{where} statistic must be one of {list(STATISTICS)}")
            mx = spec.get("max_ms")
            if not (_num(mx) and mx > 0):
                raise CriteriaError(f"{where} max_ms must be a positive finite number")
        if kind == "indicator":
            if spec.get("regime", "*") not in REGIME_NAMES:
                raise CriteriaError(f"{where} regime must be one of {list(REGIME_NAMES)}")
            mx = spec.get("max_ms")
            if not (_num(mx) and mx > 0):
                raise CriteriaError(f"{where} max_ms must be a positive finite number")
        if kind == "reliability":
            mp = spec.get("min_pct")
            if not (_num(mp) and 0 <= mp <= 100):
                raise CriteriaError(f"{where} min_pct must be a number from 0 to 100")
        if kind == "latency":
            events = spec.get("events", "*")
            if not isinstance(events, str):
                raise CriteriaError(f"{where} events must be a string: an event group or \"*\"")
            if events != "*" and events not in EVENT_GROUPS:
                raise CriteriaError(f"{where} events {events!r}: no flow produces that event group "
                                    f"(known: {', '.join(sorted(EVENT_GROUPS))})")
            if spec.get("metric") not in METRICS:
                raise CriteriaError(f"{where} metric must be one of {list(METRICS)}")
            if spec.get("statistic") not in STATISTICS:
                raise CriteriaError(f"{where} statistic must be one of {list(STATISTICS)}")
            mx = spec.get("max_ms")
            if not (_num(mx) and mx > 0):
                raise CriteriaError(f"{where} max_ms must be a positive finite number")
            if spec.get("probes", "protocol") not in PROBE_SETS:
                raise CriteriaError(f"{where} probes must be one of {list(PROBE_SETS)}")
            if spec.get("metric") == "write_to_screen" and spec.get("probes") != "browser":
                raise CriteriaError(f"{where} metric write_to_screen needs probes = \"browser\" (only a page has a screen)")
        pct = spec.get("min_delivered_pct")
        if pct is not None and (not _num(pct) or not 0 <= pct <= 100):
            raise CriteriaError(f"{where} min_delivered_pct must be a number from 0 to 100")
        mu = spec.get("max_unexpected")
        if mu is not None and (not isinstance(mu, int) or isinstance(mu, bool) or mu < 0):
            raise CriteriaError(f"{where} max_unexpected must be a non-negative whole number")
        out.append(Criterion(id=cid, **spec))
    if not out:
        raise CriteriaError(f"criteria file {source}: no criteria")
    return CriteriaSet(tuple(out), text, source)


def load_criteria(path: Path = DEFAULT_CRITERIA) -> CriteriaSet:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise CriteriaError(f"criteria file {path}: not found") from e
    except IsADirectoryError as e:
        raise CriteriaError(f"criteria file {path}: is a directory, not a file") from e
    except UnicodeDecodeError as e:
        raise CriteriaError(f"criteria file {path}: not UTF-8 text") from e
    except OSError as e:
        raise CriteriaError(f"criteria file {path}: {e.strerror or e}") from e
    return parse_criteria(text, str(path))


# -- the verdict -----------------------------------------------------------------------------------

def _run_criterion(cid: str, title: str) -> Criterion:
    return Criterion(id=cid, title=title, kind="run")


def _run_lines(a: Analysis, clean_hint: str) -> list[Line]:
    run = a.run
    lines: list[Line] = []
    for p in run.preflight:
        if p.problems:
            lines.append(Line(_run_criterion("preflight", "The target is set up as the apps need it"),
                              Result("preflight", False, value=len(p.problems), summary="; ".join(p.problems),
                                     details={"evidence": list(p.problems), "checked": list(p.checked)})))
    why: list[str] = []
    if run.started is None:
        why.append("history incomplete: it has no run_started record")
    if run.interrupted is not None:
        where = f" during {run.interrupted.stage}" if run.interrupted.stage else ""
        why.append(f"interrupted by {run.interrupted.signal}{where}")
    why += [f"{e.error}" + (f" (during {e.stage})" if e.stage else "") for e in run.errors]
    if run.finished is None:
        why.append("the run did not finish: its history has no finish record (the harness was killed, or the "
                   "history was cut short)")
    if why:
        lines.append(Line(_run_criterion("run", "The run completed"),
                          Result("run", False, summary="; ".join(why), details={"evidence": why})))
    if run.unreadable:
        first = run.unreadable[0]
        lines.append(Line(_run_criterion("history", "The history is whole"),
                          Result("history", False, value=len(run.unreadable),
                                 summary=f"{len(run.unreadable)} unreadable line(s) in the history; first: line "
                                         f"{first[0]}: {first[1]}",
                                 details={"evidence": [{"line": n, "reason": r} for n, r in run.unreadable[:20]]})))
    if run.failed or run.uncertain:
        op = (run.failed or run.uncertain)[0]
        ev = [{"type": o.type, "process": o.process, "f": o.f, "error": o.error} for o in
              [*run.failed, *run.uncertain][:20]]
        lines.append(Line(_run_criterion("writes", "Every write of the flows happened"),
                          Result("writes", False if run.failed else None, value=len(run.failed) + len(run.uncertain),
                                 summary=f"{len(run.failed)} write(s) failed, {len(run.uncertain)} of unknown outcome; "
                                         f"first: {op.f} by {op.process}: {op.error}",
                                 details={"evidence": ev})))
    if run.created or run.cleanups:
        last = run.cleanups[-1] if run.cleanups else None
        c = _run_criterion("cleanup", "The run removed every row it created")
        if last is None:
            res = Result("cleanup", False, summary=f"no cleanup recorded: rows of this run may be left on the target; "
                                                   f"remove them with {clean_hint}")
        elif last.left:
            left = ", ".join(f"{n} {t}" for t, n in sorted(last.left.items()))
            res = Result("cleanup", False, value=sum(last.left.values()),
                         summary=f"left on the target: {left}; remove them with {clean_hint}",
                         details={"left": dict(last.left), "evidence": list(last.problems)})
        elif not last.verified:
            res = Result("cleanup", None, summary="cleanup could not be verified by the run's tag"
                                                  + (f" ({'; '.join(last.problems)[:200]})" if last.problems else ""),
                         details={"evidence": list(last.problems)})
        else:
            res = Result("cleanup", True, value=0, summary="nothing of this run left on the target"
                                                           + (f" ({len(last.problems)} retried problems)"
                                                              if last.problems else ""),
                         details={"evidence": list(last.problems)})
        lines.append(Line(c, res))
    return lines


class Evidence(Protocol):
    """Evidence that is not a history of deliveries: a load run's histograms and counts
    (``harness/load/judging.py``). The verdict's rules stay here: completeness and leaks judge
    ``completeness`` (a result shaped as ``checks.completeness`` returns it: value = delivered %, details'
    counts per class); every other kind asks ``judge``. The run lines come from the history as for a gate run."""

    @property
    def ran(self) -> bool: ...

    @property
    def completeness(self) -> Result: ...

    @property
    def flavours(self) -> dict[str, Any]: ...

    def judge(self, c: Criterion) -> Result: ...

    def covers(self, c: Criterion) -> bool:
        """Whether the run produced evidence for this criterion at all (an event group no load user writes is
        not tested, and the verdict lists it, as it lists a phase the plan left out)."""
        ...


def _judge(a: Analysis, c: Criterion, base: Result, evidence: Evidence | None = None) -> Result:
    if evidence is not None and c.kind not in ("completeness", "leaks"):
        return evidence.judge(c)
    if c.kind == "reconnection":
        return check_reconnection(a.recoveries(), c.regime, c.milestone, c.statistic, c.max_ms, name=c.id,
                                  flavour_of={p: a.flavour(p) for p in a.probes})
    if c.kind == "indicator":
        return check_indicator(a.records, a.probes, c.regime, c.max_ms, name=c.id)
    if c.kind == "reliability":
        return check_reliability(a.reliability(), c.min_pct, name=c.id)
    if c.kind == "offline_sync":
        return check_offline(a, name=c.id)
    if c.kind == "spoofing":
        return check_spoofing(a, name=c.id)
    if c.kind == "latency":
        return latency(a, None if c.events == "*" else c.events, c.metric, c.statistic, c.max_ms, name=c.id,
                       probes=c.probes)
    if c.kind == "ordering":
        r = ordering(a)
        return Result(c.id, r.valid, value=r.value, summary=r.summary, details=r.details)
    if base.valid is None:
        return Result(c.id, None, summary=base.summary, details=base.details)
    counts = base.details["counts"]
    if c.kind == "completeness":
        ok = (base.value >= c.min_delivered_pct and counts["lost"] == 0 and counts["unseen"] == 0
              and counts["duplicated"] == 0)
        return Result(c.id, ok, value=base.value, summary=base.summary, details=base.details)
    n = counts["unexpected"]
    return Result(c.id, n <= c.max_unexpected, value=n, summary=f"{n} unexpected deliveries (leaks)",
                  details={"evidence": base.details["evidence"].get("unexpected", [])})


def verdict(a: Analysis, criteria: CriteriaSet | list[Criterion] | tuple[Criterion, ...],
            evidence: Evidence | None = None) -> Verdict:
    """Every line of the verdict, from one analysis (and, for a load run, its histograms and counts)."""
    crit = tuple(criteria)
    target = dict(a.run.started.target) if a.run.started else {}
    run_id = a.run.started.run_id if a.run.started else "<run id>"
    kind = str(target.get("kind", "url"))
    hint = f"`zora-harness clean --run-id {run_id} --target {kind if kind != 'embedded' else 'url'} ...`"
    lines = _run_lines(a, hint)
    # an event's deadline is its protocol criterion's (a browser criterion judges the screen, not the delivery)
    deadlines = {c.events: c.max_ms for c in crit if c.kind == "latency" and c.events != "*" and c.probes == "protocol"}
    base = evidence.completeness if evidence is not None else run_checker("completeness", completeness, a, deadlines)
    ran = evidence.ran if evidence is not None else a.run.flows_ran
    plan = a.run.plan
    skipped = tuple(c.id for c in crit if (plan is not None and not set(c.needs) <= set(plan.phases))
                    or (evidence is not None and not evidence.covers(c)))
    for c in crit:
        if c.id in skipped:
            continue
        if not ran:
            lines.append(Line(c, Result(c.id, None, summary=NOT_JUDGED)))
        else:
            lines.append(Line(c, run_checker(c.id, _judge, a, c, base, evidence)))
    return Verdict(go=all(ln.result.valid is True for ln in lines), lines=tuple(lines), target=target,
                   flavours=evidence.flavours if evidence is not None else a.flavours(),
                   criteria_sha256=criteria.sha256 if isinstance(criteria, CriteriaSet) else "",
                   skipped=skipped, seed=plan.seed if plan else None)
