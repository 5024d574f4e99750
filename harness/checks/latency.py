"""Latency per event group, exact, from the analysis: write->deliver and commit->deliver.

* write->deliver: the driver's invoke time to the probe's receipt, one process, one clock;
* commit->deliver: the row's commit timestamp (server wall clock, in the payload) to the receipt,
  placed on the run's timeline with the clock facts the run recorded (``ClockFacts``: wall origin,
  server offset +/- error).

Statistics are exact (``stats.py``: nearest rank over every sample), never bucketed. An error bar
that straddles the limit makes the result unknown, never a coin toss.
"""

from __future__ import annotations

import heapq
from typing import Any

from harness.checks.analysis import METRICS, Analysis
from harness.checks.result import Result
from harness.checks.stats import STATISTICS, stats

__all__ = ["METRICS", "STATISTICS", "judge_latency", "latency"]


def latency(a: Analysis, group: str | None, metric: str, statistic: str, max_ms: float,
            name: str | None = None, probes: str = "protocol") -> Result:
    if statistic not in STATISTICS:
        raise ValueError(f"unknown statistic {statistic!r}")
    values = a.samples(group, metric, probes)
    error_ms = a.error_ms if metric == "commit_to_deliver" else 0.0
    label = name or f"{group or 'all'}:{metric}"
    if not values:
        return Result(label, None, summary=f"no {metric} samples for {group or 'any event group'}"
                                           + (f" at the {probes} probes" if probes != "protocol" else ""))
    worst = heapq.nlargest(5, (((d.latency_ns() or 0) / 1e6, eid, p) for (eid, p), d in a.deliveries.items()
                               if d.seen and (group in (None, "*") or d.exp.group == group) and not a.degraded(d)
                               and a.judged_by(d, probes)))
    return judge_latency(label, stats(values), len(values), metric, statistic, max_ms, error_ms,
                         [{"eid": e, "probe": p, "write_to_deliver_ms": round(ms, 1)} for ms, e, p in worst])


def judge_latency(label: str, figures: dict[str, float], n: int, metric: str, statistic: str, max_ms: float,
                  error_ms: float = 0.0, evidence: list[dict[str, Any]] | None = None, how: str = "") -> Result:
    """The latency decision, wherever the figures come from (exact samples here; HdrHistograms under load):
    the statistic against the limit, unknown when the clock's error bar straddles it."""
    if not n:
        return Result(label, None, summary=f"no {metric} samples")
    value = figures[statistic]
    if error_ms and value - error_ms <= max_ms < value + error_ms:
        valid: bool | None = None
    else:
        valid = value <= max_ms
    summary = (f"{statistic} {value:.1f} ms (limit {max_ms:g} ms) over {n} deliveries{how}; "
               f"p50 {figures['p50']:.1f} / p95 {figures['p95']:.1f} / p99 {figures['p99']:.1f} / "
               f"max {figures['max']:.1f} ms" + (f"; clock error +/- {error_ms:.1f} ms" if error_ms else ""))
    return Result(label, valid, value=value, summary=summary,
                  details={"n": n, "figures": figures, "error_ms": error_ms, "metric": metric,
                           "statistic": statistic, "max_ms": max_ms, "evidence": evidence or []})
