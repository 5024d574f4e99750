"""The one percentile definition, for checkers and benchmarks alike: exact, over every sample.

Nearest rank (the smallest value with at least p % of the samples at or below it), never
interpolated or bucketed, so a figure can be traced to a real sample in the history.
"""

from __future__ import annotations

import math

__all__ = ["STATISTICS", "percentile", "stat"]

STATISTICS = ("p50", "p95", "p99", "max", "mean")


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile; nan for no values."""
    if not values:
        return math.nan
    s = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(s)))
    return s[min(rank, len(s)) - 1]


def stat(values: list[float], name: str) -> float:
    """One of ``STATISTICS`` over the values (nan for none)."""
    if not values:
        return math.nan
    if name == "max":
        return max(values)
    if name == "mean":
        return sum(values) / len(values)
    if name not in STATISTICS:
        raise ValueError(f"unknown statistic {name!r}")
    return percentile(values, float(name.removeprefix("p")))
