"""One timeline per run.

Every timestamp in a history is nanoseconds on the run's monotonic clock
(``perf_counter_ns`` since the run started); the wall clock is read once, at the
start, so a wall time (a row's ``commit_timestamp``) can be placed on the same
line. Nobody subtracts ``time.time()`` values by hand: ``measure()`` times an
action, ``wall_to_run()`` converts a wall time.

For a remote server the wall clocks of the two machines differ; ``estimate_offset``
makes an NTP-style estimate (offset +/- RTT/2) that commit->deliver figures carry
as an error bar.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

__all__ = ["Clock", "Offset", "Span", "estimate_offset", "parse_wall"]


@dataclass
class Span:
    start: int
    end: int = 0

    @property
    def ns(self) -> int:
        return self.end - self.start

    @property
    def ms(self) -> float:
        return self.ns / 1e6


@dataclass(frozen=True)
class Offset:
    """server wall clock - our wall clock, in ns, known to within +/- ``error_ns``."""

    offset_ns: int = 0
    error_ns: int = 0


class Clock:
    def __init__(self) -> None:
        self.mono_origin = time.perf_counter_ns()
        self.wall_origin = time.time_ns()

    def now(self) -> int:
        """Nanoseconds since the run started, monotonic."""
        return time.perf_counter_ns() - self.mono_origin

    def wall_to_run(self, wall_ns: int, offset: Offset | None = None) -> int:
        """A wall time (ns since the epoch, the server's clock if ``offset`` is given) on the run's timeline."""
        ours = wall_ns - (offset.offset_ns if offset else 0)
        return ours - self.wall_origin

    @contextmanager
    def measure(self) -> Iterator[Span]:
        span = Span(self.now())
        try:
            yield span
        finally:
            span.end = self.now()


def parse_wall(ts: str) -> int:
    """An ISO-8601 timestamp (``2026-11-24T21:50:03.655679Z``, ``...+00:00``) -> ns since the epoch, exact."""
    s = ts.strip().replace("Z", "+00:00")
    frac_ns = 0
    if "." in s:
        head, rest = s.split(".", 1)
        digits = ""
        for ch in rest:
            if ch.isdigit():
                digits += ch
            else:
                break
        tz = rest[len(digits):]
        frac_ns = int((digits + "000000000")[:9])
        s = head + tz
    dt = datetime.fromisoformat(s)
    return int(dt.timestamp()) * 1_000_000_000 + frac_ns


def estimate_offset(server_wall_ns: Callable[[], int], samples: int = 8) -> Offset:
    """NTP-style: ask the server for its time ``samples`` times; keep the sample with the smallest RTT.

    offset = server_time - (t_send + t_recv) / 2, error = RTT / 2.
    """
    best: tuple[int, int] | None = None
    for _ in range(max(1, min(samples, 64))):
        t0 = time.time_ns()
        server = server_wall_ns()
        t1 = time.time_ns()
        rtt = t1 - t0
        if best is None or rtt < best[1]:
            best = (server - (t0 + t1) // 2, rtt)
    assert best is not None
    return Offset(offset_ns=best[0], error_ns=best[1] // 2)
