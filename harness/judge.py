"""From a stored history to its verdict: read, analyze once, judge. Pure: no target, no network.

The gate and the pytest plugin call it when their run ends; ``zora-harness analyze`` calls it on a
run directory, long after.
"""

from __future__ import annotations

import gc
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
    # Records hold no reference cycles: the cyclic collector has nothing to find while a history is read and
    # analysed, only a growing heap to walk again and again (a third of the time, for a million records).
    paused = gc.isenabled()
    gc.disable()
    try:
        loaded = read_history(history)
        a = analyze(loaded.records, [(p.line, p.reason) for p in loaded.malformed], loaded.torn_tail)
    finally:
        if paused:
            gc.enable()
    return Judged(a, verdict(a, criteria))
