"""The sequence numbers one subscriber saw from one publisher: sorted, disjoint ranges, not one entry each.

A healthy stream arrives in order, so the set stays one range (two integers) however long the run;
every gap adds one range. ``add`` tells a new number from a duplicate and notes one that came after a
higher one (out of order). The wire form is a flat list ``[lo1, hi1, lo2, hi2, ...]``.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

__all__ = ["SeqSet"]


class SeqSet:
    __slots__ = ("duplicates", "highest", "out_of_order", "ranges")

    def __init__(self) -> None:
        self.ranges: list[list[int]] = []  # [lo, hi] inclusive, sorted, disjoint, never adjacent
        self.duplicates = 0
        self.out_of_order = 0
        self.highest = 0

    def add(self, n: int) -> bool:
        """Note ``n``; False if it was already there (a duplicate)."""
        r = self.ranges
        if n < self.highest:
            self.out_of_order += 1
        if r and r[-1][1] + 1 == n:  # the usual case: the next one
            r[-1][1] = n
            self.highest = n
            return True
        if not r or n > r[-1][1]:
            r.append([n, n])
            self.highest = max(self.highest, n)
            return True
        i = bisect.bisect_right(r, [n, float("inf")]) - 1  # the last range starting at or before n
        if i >= 0 and r[i][0] <= n <= r[i][1]:
            self.duplicates += 1
            return False
        joins_left = i >= 0 and r[i][1] + 1 == n
        joins_right = i + 1 < len(r) and r[i + 1][0] - 1 == n
        if joins_left and joins_right:
            r[i][1] = r[i + 1][1]
            del r[i + 1]
        elif joins_left:
            r[i][1] = n
        elif joins_right:
            r[i + 1][0] = n
        else:
            r.insert(i + 1, [n, n])
        return True

    def __contains__(self, n: int) -> bool:
        i = bisect.bisect_right(self.ranges, [n, float("inf")]) - 1
        return i >= 0 and self.ranges[i][0] <= n <= self.ranges[i][1]

    def __len__(self) -> int:
        return sum(hi - lo + 1 for lo, hi in self.ranges)

    def count(self, lo: int, hi: int) -> int:
        """How many numbers of [lo, hi] are in the set."""
        return sum(max(0, min(hi, b) - max(lo, a) + 1) for a, b in self.ranges) if lo <= hi else 0

    def to_wire(self) -> list[int]:
        return [x for lo_hi in self.ranges for x in lo_hi] + [self.duplicates, self.out_of_order]

    @classmethod
    def from_wire(cls, flat: list[int]) -> SeqSet:
        s = cls()
        *pairs, s.duplicates, s.out_of_order = flat
        s.ranges = [[pairs[i], pairs[i + 1]] for i in range(0, len(pairs), 2)]
        s.highest = s.ranges[-1][1] if s.ranges else 0
        return s

    @classmethod
    def of(cls, numbers: Iterable[int]) -> SeqSet:
        s = cls()
        for n in numbers:
            s.add(n)
        return s
