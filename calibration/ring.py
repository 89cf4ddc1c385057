"""Fixed-capacity rings of (value, arrival) pairs, one ring per entity row, kept in 2-D arrays so
a batch appends to many entities with a few array operations.

A calibrator keeps two or three: the window of accepted scores, the censoring points of flagged
scores (the threshold each one exceeded; see ``calibration.evt``), and, when it adapts to new
regimes, the recent flagged scores themselves (see ``calibration.window``).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

Runs = tuple[
    NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]
]


class Ring:
    """Per-row rings of ``capacity`` (value, arrival) pairs; arrivals are the row's seen count
    when the value came (float64, to share the snapshot format). Capacity 0 keeps nothing."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.values = np.zeros((0, capacity))
        self.arrived = np.zeros((0, capacity))
        self.next = np.zeros(0, dtype=np.int64)
        self.filled = np.zeros(0, dtype=np.int64)

    def grow(self, rows: int) -> None:
        """Hold ``rows`` rows; new rows start empty."""
        old = len(self.next)
        if rows <= old:
            return
        self.values = np.concatenate([self.values, np.zeros((rows - old, self.capacity))])
        self.arrived = np.concatenate([self.arrived, np.zeros((rows - old, self.capacity))])
        self.next = np.concatenate([self.next, np.zeros(rows - old, dtype=np.int64)])
        self.filled = np.concatenate([self.filled, np.zeros(rows - old, dtype=np.int64)])

    def append(
        self, rows: NDArray[np.int64], values: NDArray[np.float64], arrivals: NDArray[np.int64]
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Append (k,) values and arrivals to their rows' rings, in stream order; return the
        touched rows and how many each received (a ring keeps the last ``capacity`` of them)."""
        if len(values) == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        order, sorted_rows, firsts, counts, rank = runs(rows)
        touched = sorted_rows[firsts]
        if self.capacity == 0:
            return touched, counts
        if counts.max() > self.capacity:  # only the last ``capacity`` of a run may land
            keep = rank >= np.repeat(counts, counts) - self.capacity
            order, sorted_rows, rank = order[keep], sorted_rows[keep], rank[keep]
        slots = (self.next[sorted_rows] + rank) % self.capacity
        self.values[sorted_rows, slots] = values[order]
        self.arrived[sorted_rows, slots] = arrivals[order]
        self.next[touched] = (self.next[touched] + counts) % self.capacity
        self.filled[touched] = np.minimum(self.filled[touched] + counts, self.capacity)
        return touched, counts

    def append_one(
        self, row: int, values: NDArray[np.float64], arrivals: NDArray[np.int64]
    ) -> None:
        """``append`` for values (k,) of one row, written as at most two slices (a refresh
        block's flagged scores are a few, and fancy indexing cost more than the copy)."""
        k, capacity = len(values), self.capacity
        if k == 0 or capacity == 0:
            return
        last = min(k, capacity)
        start = (int(self.next[row]) + k - last) % capacity
        head = min(last, capacity - start)
        self.values[row, start : start + head] = values[k - last : k - last + head]
        self.arrived[row, start : start + head] = arrivals[k - last : k - last + head]
        if head < last:
            self.values[row, : last - head] = values[k - last + head :]
            self.arrived[row, : last - head] = arrivals[k - last + head :]
        self.next[row] = (start + last) % capacity
        self.filled[row] = min(int(self.filled[row]) + k, capacity)

    def oldest(self, row: int) -> int:
        """The slot of a row's oldest pair (0 until the ring has wrapped)."""
        return int(self.next[row]) if self.filled[row] == self.capacity else 0

    def ordered(self, row: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """A row's values and arrivals (m,), oldest first."""
        filled, start = int(self.filled[row]), self.oldest(row)
        values, arrived = self.values[row, :filled], self.arrived[row, :filled]
        if start:
            values = np.concatenate([values[start:], values[:start]])
            arrived = np.concatenate([arrived[start:], arrived[:start]])
        return values, arrived

    def since(self, row: int, first: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """A row's values and arrivals (m,) that arrived at ``first`` or later, in any order."""
        filled = int(self.filled[row])
        arrived = self.arrived[row, :filled]
        recent = arrived >= first
        return self.values[row, :filled][recent], arrived[recent]

    def count_since(self, row: int, first: float) -> int:
        """How many of a row's pairs arrived at ``first`` or later."""
        filled = int(self.filled[row])
        return int(np.count_nonzero(self.arrived[row, :filled] >= first))

    def clear(self, row: int) -> None:
        """Empty a row's ring."""
        self.filled[row] = self.next[row] = 0

    def load(self, row: int, values: NDArray[np.float64], arrivals: NDArray[np.float64]) -> None:
        """Replace a row's ring with the last ``capacity`` of (m,) pairs, oldest first."""
        kept = min(len(values), self.capacity)
        start = len(values) - kept
        self.values[row, :kept], self.arrived[row, :kept] = values[start:], arrivals[start:]
        self.filled[row] = kept
        self.next[row] = kept % self.capacity if self.capacity else 0


def runs(rows: NDArray[np.int64]) -> Runs:
    """Group (n,) entity rows, keeping stream order within each entity.

    Returns the stable sort order, the sorted rows, the start of each entity's run in them, the
    run lengths, and each sorted item's rank within its run. One entity (the global pass) needs
    no sort at all.
    """
    n = len(rows)
    if n and rows[0] == rows[-1] and (rows == rows[0]).all():
        order = np.arange(n)
        return order, rows, np.zeros(1, dtype=np.int64), np.array([n]), order
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    change = np.empty(n, dtype=bool)
    change[0] = True
    np.not_equal(sorted_rows[1:], sorted_rows[:-1], out=change[1:])
    firsts = np.flatnonzero(change)
    counts = np.diff(np.append(firsts, n))
    return order, sorted_rows, firsts, counts, np.arange(n) - np.repeat(firsts, counts)
