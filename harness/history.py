"""The history: one append-only, crash-safe JSONL file per run, the spine every part writes to.

Record kinds (Jepsen's vocabulary, DESIGN.md):

* ``op``: something a driver or the nemesis did, ``type`` invoke -> ok | fail | info
  (info = outcome unknown, e.g. a timeout; never counted as a failure);
* ``obs``: something a probe saw (a change, a broadcast, a connection state, a join);
* ``fault``: a fault's ``start`` and ``end``;
* ``meta``: facts about the run (target, subscriptions and what they are entitled to).

Every record gets ``t`` (ns on the run's monotonic clock, see ``clock.py``) and a
sequence number. Each record is one ``write()`` of one whole line, flushed at once,
so a crash loses at most the line being written; ``read_history`` skips a torn
last line and reports it.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from pathlib import Path
from typing import IO, Any

from harness.clock import Clock

__all__ = ["History", "read_history"]


class History:
    def __init__(self, path: Path, clock: Clock | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.clock = clock or Clock()
        self._lock = threading.Lock()
        self._seq = 0
        self._f: IO[str] | None = self.path.open("a", encoding="utf-8")
        self.counts: Counter[tuple[str, str]] = Counter()  # (kind, op type or obs event): for progress displays

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        with self._lock:
            if self._f is None:
                raise ValueError("history is closed")
            rec = {"seq": self._seq, "t": fields.pop("t", None) or self.clock.now(), "kind": kind, **fields}
            self._seq += 1
            self.counts[(kind, str(rec.get("type") if kind == "op" else rec.get("event", "")))] += 1
            self._f.write(json.dumps(rec, separators=(",", ":"), default=str) + "\n")
            self._f.flush()
            return rec

    def op(self, process: str, type_: str, f: str, **fields: Any) -> dict[str, Any]:
        return self.append("op", process=process, type=type_, f=f, **fields)

    def obs(self, probe: str, event: str, **fields: Any) -> dict[str, Any]:
        return self.append("obs", probe=probe, event=event, **fields)

    def fault(self, name: str, phase: str, **fields: Any) -> dict[str, Any]:
        return self.append("fault", fault=name, phase=phase, **fields)

    def meta(self, **fields: Any) -> dict[str, Any]:
        return self.append("meta", **fields)

    @property
    def closed(self) -> bool:
        return self._f is None

    def close(self) -> None:
        with self._lock:
            if self._f is not None:
                self._f.flush()
                os.fsync(self._f.fileno())
                self._f.close()
                self._f = None

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_history(path: Path) -> tuple[list[dict[str, Any]], int]:
    """All whole records, and how many unreadable lines were skipped (a torn last line after a crash)."""
    records: list[dict[str, Any]] = []
    skipped = 0
    with Path(path).open(encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                skipped += 1
                continue
            if isinstance(rec, dict):
                records.append(rec)
            else:
                skipped += 1
    return records, skipped
