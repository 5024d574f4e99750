"""The one percentile definition, for checkers and benchmarks alike: exact, over every sample.

Nearest rank (the smallest value with at least p % of the samples at or below it), never
interpolated or bucketed, so a figure can be traced to a real sample in the history.
"""

from __future__ import annotations

import math

__all__ = ["STATISTICS", "percentile", "stat", "stats"]

STATISTICS = ("p50", "p95", "p99", "max", "mean")


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile; nan for no values."""
    if not values:
        return math.nan
    s = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(s)))
    return s[min(rank, len(s)) - 1]


def stats(values: list[float], names: tuple[str, ...] = STATISTICS) -> dict[str, float]:
    """Several of ``STATISTICS`` at once, each exactly as ``stat`` gives it, the values sorted once (a latency
    criterion over a million deliveries asks for five)."""
    for name in names:
        if name not in STATISTICS:
            raise ValueError(f"unknown statistic {name!r}")
    if not values:
        return dict.fromkeys(names, math.nan)
    s = sorted(values)
    out: dict[str, float] = {}
    for name in names:
        if name == "max":
            out[name] = s[-1]
        elif name == "mean":
            out[name] = sum(values) / len(values)
        else:
            rank = max(1, math.ceil(float(name.removeprefix("p")) / 100 * len(s)))
            out[name] = s[min(rank, len(s)) - 1]
    return out


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
