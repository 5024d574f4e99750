"""Criteria (``fixtures/criteria.toml``) and the verdict: checker results -> GO / NO-GO with reasons.

GO needs every criterion valid. An invalid one is NO-GO; an unknown one (no samples, a
checker that failed, an error bar across the threshold) is NO-GO too, named as unknown:
a release is not waved through on missing evidence.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.checks import Result, completeness, latency, ordering, run_checker
from harness.checks.latency import METRICS, STATISTICS

__all__ = ["DEFAULT_CRITERIA", "CriteriaError", "Criterion", "Verdict", "evaluate", "load_criteria"]

DEFAULT_CRITERIA = Path(__file__).resolve().parent.parent / "fixtures" / "criteria.toml"
KINDS = {"latency", "completeness", "leaks", "ordering"}
_KEYS = {
    "latency": {"title", "source", "kind", "events", "metric", "statistic", "max_ms"},
    "completeness": {"title", "source", "kind", "min_delivered_pct"},
    "leaks": {"title", "source", "kind", "max_unexpected"},
    "ordering": {"title", "source", "kind"},
}


class CriteriaError(ValueError):
    """A criteria file that cannot be used; the message is one line naming the file and the problem."""


@dataclass(frozen=True)
class Criterion:
    id: str
    title: str
    kind: str
    source: str = ""
    events: str = "*"
    metric: str = ""
    statistic: str = ""
    max_ms: float = 0.0
    min_delivered_pct: float = 100.0
    max_unexpected: int = 0


@dataclass
class Verdict:
    go: bool
    lines: list[tuple[Criterion, Result]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return "GO" if self.go else "NO-GO"

    def failing(self) -> list[tuple[Criterion, Result]]:
        return [(c, r) for c, r in self.lines if r.valid is not True]


def load_criteria(path: Path = DEFAULT_CRITERIA) -> list[Criterion]:
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError as e:
        raise CriteriaError(f"criteria file {path}: not found") from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise CriteriaError(f"criteria file {path}: not valid TOML ({e})") from e
    out: list[Criterion] = []
    for cid, spec in data.items():
        if not isinstance(spec, dict):
            raise CriteriaError(f"criteria file {path}: [{cid}] must be a table")
        kind = spec.get("kind")
        if kind not in KINDS:
            raise CriteriaError(f"criteria file {path}: [{cid}] kind must be one of {sorted(KINDS)}")
        unknown = set(spec) - _KEYS[kind]
        if unknown:
            raise CriteriaError(f"criteria file {path}: [{cid}] unknown key(s) {sorted(unknown)}")
        if not isinstance(spec.get("title", ""), str) or not spec.get("title"):
            raise CriteriaError(f"criteria file {path}: [{cid}] needs a title")
        if kind == "latency":
            if spec.get("metric") not in METRICS:
                raise CriteriaError(f"criteria file {path}: [{cid}] metric must be one of {list(METRICS)}")
            if spec.get("statistic") not in STATISTICS:
                raise CriteriaError(f"criteria file {path}: [{cid}] statistic must be one of {list(STATISTICS)}")
            mx = spec.get("max_ms")
            if not isinstance(mx, int | float) or isinstance(mx, bool) or mx <= 0:
                raise CriteriaError(f"criteria file {path}: [{cid}] max_ms must be a positive number")
        for k in ("min_delivered_pct", "max_unexpected"):
            v = spec.get(k)
            if v is not None and (not isinstance(v, int | float) or isinstance(v, bool) or v < 0):
                raise CriteriaError(f"criteria file {path}: [{cid}] {k} must be a non-negative number")
        out.append(Criterion(id=cid, **{k: v for k, v in spec.items()}))
    if not out:
        raise CriteriaError(f"criteria file {path}: no criteria")
    return out


def _deadlines(criteria: list[Criterion]) -> dict[str, float]:
    return {c.events: c.max_ms for c in criteria if c.kind == "latency" and c.events != "*"}


def judge(records: list[dict[str, Any]], c: Criterion, deadlines: dict[str, float]) -> Result:
    if c.kind == "latency":
        return latency(records, None if c.events == "*" else c.events, c.metric, c.statistic, c.max_ms, name=c.id)
    base = completeness(records, deadlines)
    if c.kind == "completeness":
        if base.valid is None:
            return Result(c.id, None, summary=base.summary, details=base.details)
        counts = base.details["counts"]
        ok = (base.value >= c.min_delivered_pct and counts["lost"] == 0 and counts["unseen"] == 0
              and counts["duplicated"] == 0)
        return Result(c.id, ok, value=base.value, summary=base.summary, details=base.details)
    if c.kind == "leaks":
        if base.valid is None:
            return Result(c.id, None, summary=base.summary)
        n = base.details["counts"]["unexpected"]
        leaks = [e for e in base.details["evidence"] if e["class"] == "unexpected"]
        return Result(c.id, n <= c.max_unexpected, value=n, summary=f"{n} unexpected deliveries (leaks)",
                      details={"evidence": leaks})
    r = ordering(records)
    return Result(c.id, r.valid, value=r.value, summary=r.summary, details=r.details)


def evaluate(records: list[dict[str, Any]], criteria: list[Criterion]) -> Verdict:
    deadlines = _deadlines(criteria)
    lines = [(c, run_checker(c.id, judge, records, c, deadlines)) for c in criteria]
    return Verdict(go=all(r.valid is True for _, r in lines), lines=lines)
