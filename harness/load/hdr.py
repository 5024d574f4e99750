"""Exact-enough latency in bounded memory: HdrHistogram per (event group, metric), mergeable across processes.

Each histogram tracks 1 µs to 1 h with 3 significant digits (values are recorded in µs): every recorded
value lands in a bucket no wider than 0.1 % of it, whatever the number of samples, in a fixed ~190 KB.
Locust's own stats round 100-999 ms to 10 ms; these do not. A worker sends what it recorded since its
last report (``take``: HdrHistogram's compressed encoding, then reset); the master adds the deltas
(``merge``), which is exact: the merged histogram is the histogram of the union of the samples.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from hdrh.histogram import HdrHistogram

__all__ = ["HIGHEST_US", "LOWEST_US", "SIGNIFICANT", "LatencyBook", "figures", "new_histogram"]

LOWEST_US = 1
HIGHEST_US = 3600 * 1_000_000
SIGNIFICANT = 3


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT)


def figures(h: HdrHistogram) -> dict[str, float]:
    """p50 / p95 / p99 / max / mean in ms (each a bucket's highest equivalent value, as HdrHistogram reports)."""
    if not h.get_total_count():
        return {s: math.nan for s in ("p50", "p95", "p99", "max", "mean")}
    return {"p50": h.get_value_at_percentile(50) / 1000, "p95": h.get_value_at_percentile(95) / 1000,
            "p99": h.get_value_at_percentile(99) / 1000, "max": h.get_max_value() / 1000,
            "mean": h.get_mean_value() / 1000}


def _key(group: str, metric: str) -> str:
    return f"{group}|{metric}"


class LatencyBook:
    """Histograms keyed by (event group, metric); ``metric`` is ``write_to_deliver`` or ``commit_to_deliver``
    (or any other name: ``reconnect`` durations, say)."""

    def __init__(self) -> None:
        self.hists: dict[str, HdrHistogram] = {}

    def record_ns(self, group: str, metric: str, ns: int) -> None:
        """One sample; a negative value (clocks of two machines) is recorded as the lowest, above 1 h as 1 h."""
        key = _key(group, metric)
        h = self.hists.get(key)
        if h is None:
            h = self.hists[key] = new_histogram()
        h.record_value(min(max(ns // 1000, LOWEST_US), HIGHEST_US))

    def get(self, group: str | None, metric: str) -> HdrHistogram:
        """The histogram of one group (None or "*": every group together, less the ``group~recovering`` ones:
        deliveries made while a subscriber was reconnecting) for one metric."""
        if group not in (None, "*"):
            return self.hists.get(_key(str(group), metric)) or new_histogram()
        out = new_histogram()
        for key, h in self.hists.items():
            if key.endswith(f"|{metric}") and "~" not in key:
                out.add(h)
        return out

    def groups(self, metric: str) -> list[str]:
        return sorted(k.rsplit("|", 1)[0] for k in self.hists if k.endswith(f"|{metric}"))

    def count(self) -> int:
        return sum(h.get_total_count() for h in self.hists.values())

    def take(self) -> dict[str, str]:
        """What was recorded since the last ``take``, encoded; the histograms start again from empty."""
        out: dict[str, str] = {}
        for key, h in self.hists.items():
            if h.get_total_count():
                out[key] = h.encode().decode("ascii")
                h.reset()
        return out

    def encoded(self) -> dict[str, str]:
        """Every histogram, encoded (for the run directory), left as it is."""
        return {k: h.encode().decode("ascii") for k, h in self.hists.items() if h.get_total_count()}

    def merge(self, encoded: Mapping[str, str]) -> None:
        for key, text in encoded.items():
            other = HdrHistogram.decode(text.encode("ascii"))
            h = self.hists.get(key)
            if h is None:
                h = self.hists[key] = new_histogram()
            h.add(other)

    @classmethod
    def of(cls, books: Iterable[LatencyBook]) -> LatencyBook:
        out = cls()
        for b in books:
            for key, h in b.hists.items():
                out.hists.setdefault(key, new_histogram()).add(h)
        return out
