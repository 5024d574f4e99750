"""Ordering: each probe must see a row's changes in commit order (a status never goes backwards on screen)."""

from __future__ import annotations

import itertools
from collections import defaultdict

from harness.checks.analysis import Analysis
from harness.checks.result import Result
from harness.records import Change

__all__ = ["ordering"]


def ordering(a: Analysis, key_column: str = "id") -> Result:
    """For every (probe, table, row), arrival order must match ``commit_ns`` order."""
    seqs: dict[tuple[str, str, str], list[tuple[int, int]]] = defaultdict(list)
    for r in a.observations:
        if not isinstance(r, Change) or r.commit_ns is None:
            continue
        rec = r.record or r.old_record or {}
        if key_column not in rec:
            continue
        seqs[(r.probe, r.table, str(rec[key_column]))].append((r.t, r.commit_ns))
    if not seqs:
        return Result("ordering", None, summary="no changes with commit timestamps to order")
    violations = []
    for (probe, table, key), seq in seqs.items():
        commits = [c for _, c in sorted(seq)]
        for earlier, later in itertools.pairwise(commits):
            if later < earlier:
                violations.append({"probe": probe, "table": table, "key": key})
                break
    n = len(seqs)
    return Result("ordering", not violations, value=len(violations),
                  summary=f"{len(violations)} of {n} (probe, row) sequences arrived out of commit order",
                  details={"sequences": n, "evidence": violations[:20]})
