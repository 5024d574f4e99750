"""Checkers: pure functions of a history. Each returns a ``Result`` whose ``valid`` is True, False
or None (unknown); ``run_checker`` turns a checker that raises into an unknown result, never a lost run."""

from __future__ import annotations

from harness.checks.completeness import Delivery, completeness, expectations
from harness.checks.latency import latency, percentile
from harness.checks.ordering import ordering
from harness.checks.result import Result, combine, run_checker

__all__ = ["Delivery", "Result", "combine", "completeness", "expectations", "latency", "ordering", "percentile",
           "run_checker"]
