"""Checkers: pure functions of a history's analysis. Each returns a ``Result`` whose ``valid`` is True,
False or None (unknown); ``run_checker`` turns a checker that raises into an unknown result, never a lost
run. ``analyze`` makes the analysis once; every checker, the verdict and the report share it."""

from __future__ import annotations

from harness.checks.analysis import METRICS, Analysis, Delivery, Leak, RunFacts, analyze
from harness.checks.completeness import CLASSES, completeness
from harness.checks.latency import latency
from harness.checks.ordering import ordering
from harness.checks.result import LABELS, Result, combine, run_checker
from harness.checks.stats import STATISTICS, percentile, stat

__all__ = ["CLASSES", "LABELS", "METRICS", "STATISTICS", "Analysis", "Delivery", "Leak", "Result", "RunFacts",
           "analyze", "combine", "completeness", "latency", "ordering", "percentile", "run_checker", "stat"]
