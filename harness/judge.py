"""From a stored history to its verdict: read, analyze once, judge. Pure: no target, no network.

The gate and the pytest plugin call it when their run ends; ``zora-harness analyze`` calls it on a
run directory, long after.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.checks import Analysis, analyze
from harness.criteria import CriteriaSet, Criterion, Verdict, verdict
from harness.history import read_history

__all__ = ["Judged", "judge"]


@dataclass(frozen=True)
class Judged:
    analysis: Analysis
    verdict: Verdict


def judge(history: Path, criteria: CriteriaSet | list[Criterion] | tuple[Criterion, ...]) -> Judged:
    loaded = read_history(history)
    a = analyze(loaded.records, [(p.line, p.reason) for p in loaded.malformed], loaded.torn_tail)
    return Judged(a, verdict(a, criteria))
