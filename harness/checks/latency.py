"""Latency per criterion, exact, from the history: write->deliver and commit->deliver.

* write->deliver: the driver's invoke time to the probe's receipt, one process, one clock;
* commit->deliver: the row's commit timestamp (server wall clock, in the payload) to the
  receipt, placed on the run's timeline with the clock facts the run recorded in a
  ``meta`` record (``clock``: ``wall_origin`` and the server ``offset_ns`` +/- ``error_ns``).

Statistics are exact (nearest-rank over every sample), never bucketed.
"""

from __future__ import annotations

import math
from typing import Any

from harness.checks.completeness import classify
from harness.checks.result import Result

__all__ = ["METRICS", "STATISTICS", "by_flavour", "latency", "percentile", "samples"]

METRICS = ("write_to_deliver", "commit_to_deliver")
STATISTICS = ("p50", "p95", "p99", "max", "mean")


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile: the smallest value with at least p % of the samples at or below it."""
    if not values:
        return math.nan
    s = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(s)))
    return s[min(rank, len(s)) - 1]


def stat(values: list[float], name: str) -> float:
    if name == "max":
        return max(values) if values else math.nan
    if name == "mean":
        return sum(values) / len(values) if values else math.nan
    return percentile(values, float(name.removeprefix("p")))


def _clock(records: list[dict[str, Any]]) -> dict[str, int]:
    """The run's clock facts; a later ``clock`` record (the server offset, once estimated) refines earlier ones."""
    out: dict[str, int] = {}
    for r in records:
        if r.get("kind") == "meta" and isinstance(r.get("clock"), dict):
            out.update({k: int(v) for k, v in r["clock"].items() if isinstance(v, int | float)
                        and not isinstance(v, bool)})
    return out


def samples(records: list[dict[str, Any]], criterion: str | None, metric: str) -> tuple[list[float], float]:
    """Latencies in ms of first deliveries for a criterion (None = all), and the error bar in ms."""
    if metric not in METRICS:
        raise ValueError(f"unknown latency metric {metric!r}")
    deliveries, _, _ = classify(records)
    clock = _clock(records)
    error_ms = clock.get("error_ns", 0) / 1e6
    out: list[float] = []
    for d in deliveries.values():
        if not d.seen or (criterion not in (None, "*") and d.exp.criterion != criterion):
            continue
        first = d.seen[0]
        if metric == "write_to_deliver":
            out.append((first["t"] - d.exp.t_write) / 1e6)
        else:
            commit = first.get("commit_ns")
            if commit is None or "wall_origin" not in clock:
                continue
            receipt_wall = clock["wall_origin"] + first["t"]
            out.append((receipt_wall - (int(commit) - clock.get("offset_ns", 0))) / 1e6)
    return out, error_ms


def latency(records: list[dict[str, Any]], criterion: str | None, metric: str, statistic: str,
            max_ms: float, name: str | None = None) -> Result:
    if statistic not in STATISTICS:
        raise ValueError(f"unknown statistic {statistic!r}")
    values, error_ms = samples(records, criterion, metric)
    label = name or f"{criterion or 'all'}:{metric}"
    if not values:
        return Result(label, None, summary=f"no {metric} samples for {criterion or 'any criterion'}")
    figures = {s: stat(values, s) for s in STATISTICS}
    value = figures[statistic]
    # an error bar that straddles the threshold makes the verdict unknown, not a coin toss
    if error_ms and value - error_ms <= max_ms < value + error_ms:
        valid: bool | None = None
    else:
        valid = value <= max_ms
    summary = (f"{statistic} {value:.1f} ms (limit {max_ms:g} ms) over {len(values)} deliveries; "
               f"p50 {figures['p50']:.1f} / p95 {figures['p95']:.1f} / p99 {figures['p99']:.1f} / "
               f"max {figures['max']:.1f} ms" + (f"; clock error +/- {error_ms:.1f} ms" if error_ms else ""))
    return Result(label, valid, value=value, summary=summary,
                  details={"n": len(values), "figures": figures, "error_ms": error_ms, "metric": metric,
                           "statistic": statistic, "max_ms": max_ms})


def by_flavour(records: list[dict[str, Any]]) -> dict[str, Any]:
    """write->deliver per probe flavour (ours; supabase-js twins, named ``<probe>@js``), and for each event
    both flavours received, how much later the twin stamped it than its original (the client's own cost)."""
    deliveries, _, _ = classify(records)
    groups: dict[str, list[float]] = {"ours": [], "supabase-js": []}
    expected = {"ours": 0, "supabase-js": 0}
    for (_, probe), d in deliveries.items():
        flavour = "supabase-js" if probe.endswith("@js") else "ours"
        expected[flavour] += 1
        if d.seen:
            groups[flavour].append((d.seen[0]["t"] - d.exp.t_write) / 1e6)
    gaps = []
    for (eid, probe), d in deliveries.items():
        twin = deliveries.get((eid, f"{probe}@js"))
        if d.seen and twin is not None and twin.seen:
            gaps.append((twin.seen[0]["t"] - d.seen[0]["t"]) / 1e6)
    out: dict[str, Any] = {}
    for name, vals in groups.items():
        if expected[name]:
            out[name] = {"expected": expected[name], "delivered": len(vals),
                         **({s: stat(vals, s) for s in ("p50", "p95", "p99", "max")} if vals else {})}
    if gaps:
        out["twin_minus_original_ms"] = {"n": len(gaps), **{s: stat(gaps, s) for s in ("p50", "p95", "p99", "max")}}
    return out
