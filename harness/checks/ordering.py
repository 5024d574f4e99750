"""Ordering: each probe must see a row's changes in commit order (a status never goes backwards on screen)."""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any

from harness.checks.result import Result

__all__ = ["ordering"]


def ordering(records: list[dict[str, Any]], key_column: str = "id") -> Result:
    """For every (probe, table, row), arrival order must match ``commit_ns`` order."""
    seqs: dict[tuple[str, str, str], list[tuple[int, int]]] = defaultdict(list)
    for r in records:
        if r.get("kind") != "obs" or r.get("event") != "change" or r.get("commit_ns") is None:
            continue
        rec = r.get("record") or r.get("old_record") or {}
        if key_column not in rec:
            continue
        seqs[(str(r.get("probe")), str(r.get("table")), str(rec[key_column]))].append((r["t"], int(r["commit_ns"])))
    if not seqs:
        return Result("ordering", None, summary="no changes with commit timestamps to order")
    violations = []
    for (probe, table, key), seq in seqs.items():
        commits = [c for _, c in sorted(seq)]
        for a, b in itertools.pairwise(commits):
            if b < a:
                violations.append({"probe": probe, "table": table, "key": key})
                break
    n = len(seqs)
    return Result("ordering", not violations, value=len(violations),
                  summary=f"{len(violations)} of {n} (probe, row) sequences arrived out of commit order",
                  details={"sequences": n, "violations": violations[:20]})
