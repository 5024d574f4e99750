"""The history: one append-only, crash-safe JSONL file per run, the spine every part writes to.

Writers append the typed records of ``harness/records.py`` (Jepsen's vocabulary, DESIGN.md): ops of
drivers, observations of probes, faults of the nemesis, facts about the run. ``append`` gives each
record its sequence number and, unless the writer stamped it already (a probe stamps arrival
time), the time on the run's monotonic clock (``clock.py``).

Each record is one ``write()`` of one whole line, flushed at once, so a crash loses at most the line
being written. ``read_history`` validates every line: a torn last line (no newline: the process died
mid-write) is expected after a crash and reported as such; any other unreadable line, an unknown
record kind or a mistyped field is a defect of the history, reported with its line number, so the
verdict can say that the history is not whole.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from harness.clock import Clock
from harness.records import Op, Record, RecordError, decode, encode

__all__ = ["History", "LineProblem", "Loaded", "read_history"]


class History:
    def __init__(self, path: Path, clock: Clock | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.clock = clock or Clock()
        self._lock = threading.Lock()
        self._seq = 0
        self._f: IO[str] | None = self.path.open("a", encoding="utf-8")
        self.counts: Counter[str] = Counter()  # by kind ("op:ok" for ops): for progress displays

    def append(self, rec: Any) -> int:
        """Write one record (a ``harness.records`` class); returns its sequence number."""
        with self._lock:
            if self._f is None:
                raise ValueError("history is closed")
            seq = self._seq
            self._seq += 1
            t = rec.t if rec.t >= 0 else self.clock.now()
            self.counts[f"op:{rec.type}" if isinstance(rec, Op) else rec.kind] += 1
            self._f.write(encode(rec, seq, t) + "\n")
            self._f.flush()
            return seq

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


@dataclass(frozen=True)
class LineProblem:
    line: int  # 1-based
    reason: str


@dataclass(frozen=True)
class Loaded:
    """A history read back: its records in file order, and every line that could not be read."""

    records: list[Record] = field(default_factory=list)
    problems: list[LineProblem] = field(default_factory=list)
    torn_tail: bool = False  # the last line has no newline and does not parse: a crash mid-write

    @property
    def malformed(self) -> list[LineProblem]:
        """Unreadable lines other than a torn last line: the history is not whole."""
        return self.problems[:-1] if self.torn_tail else list(self.problems)


def read_history(path: Path) -> Loaded:
    records: list[Record] = []
    problems: list[LineProblem] = []
    last_bad = False
    ends_with_newline = True
    with Path(path).open("rb") as f:
        for n, raw in enumerate(f, start=1):
            ends_with_newline = raw.endswith(b"\n")
            line = raw.strip()
            if not line:
                continue
            try:
                records.append(decode(line))
                last_bad = False
            except RecordError as e:
                problems.append(LineProblem(n, str(e)))
                last_bad = True
    return Loaded(records, problems, torn_tail=last_bad and not ends_with_newline)
