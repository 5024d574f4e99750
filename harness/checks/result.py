"""The tri-state result every checker returns, and the worst-wins combination (Jepsen's)."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LABELS", "Result", "combine", "run_checker"]

# One text label per tri-state, wherever a result is shown (terminal, Markdown, JUnit, HTML).
LABELS: dict[bool | None, str] = {True: "pass", False: "FAIL", None: "unknown"}


@dataclass(frozen=True)
class Result:
    name: str
    valid: bool | None  # True = holds, False = violated, None = unknown (no data, or the checker failed)
    value: Any = None  # the measured figure the verdict line quotes
    summary: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return LABELS[self.valid]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "valid": self.valid, "value": self.value, "summary": self.summary,
                "details": self.details}


def run_checker(name: str, fn: Callable[..., Result], *args: Any, **kwargs: Any) -> Result:
    """A checker that raises gives "unknown" with the error, never a lost run."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:
        return Result(name, None, summary=f"checker failed: {type(e).__name__}: {e}",
                      details={"traceback": traceback.format_exc(limit=5)})


def combine(results: Iterable[Result]) -> bool | None:
    """False if any is invalid, else None if any is unknown, else True (an empty set is unknown)."""
    vals = [r.valid for r in results]
    if not vals:
        return None
    if any(v is False for v in vals):
        return False
    if any(v is None for v in vals):
        return None
    return True
