"""The machinery every windowed calibrator shares: per-entity windows of accepted scores, refresh
blocks, per-key routing with a global fallback, and snapshots. A method only says how a threshold
follows from an entity's window (``WindowCalibrator.threshold_from``).

Flagged scores never enter a window, so an anomaly burst cannot raise its own threshold.
Thresholds are recomputed every ``refresh`` scores an entity has seen, not at batch boundaries,
so the flags do not depend on how the stream is cut into ``update`` calls: a backtest reading the
same scores in the same order, in any batches, flags exactly what the daemon flagged.

With ``per_key``, an entity whose own state has no threshold yet is judged by the global
threshold in force for that score. The global state sees every score and learns from those it
does not flag itself; each entity learns from its scores that were not flagged in the end.

All entities live in the rows of a few 2-D arrays (row 0 is the global state), so a batch is
processed with array operations over all its keys at once; only entities completing a refresh
block recompute a threshold.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from calibration import state
from calibration.base import Flags
from calibration.errors import CalibrationError, SnapshotError

GLOBAL_ROW = 0


class WindowCalibrator:
    """A calibrator over the last ``window`` accepted scores of each entity (see module docstring).

    ``refresh`` is how many scores an entity sees between threshold recomputations (1 recomputes
    after every score); it may not exceed ``window``. No threshold until ``warmup`` scores have
    been accepted.
    """

    method = "window"
    needs_order = False
    """Whether ``threshold_from`` needs the window oldest first (a quantile does not)."""

    def __init__(self, window: int, warmup: int, refresh: int, per_key: bool) -> None:
        if not 1 <= warmup <= window:
            raise CalibrationError(f"warmup ({warmup}) must be between 1 and window ({window})")
        if not 1 <= refresh <= window:
            raise CalibrationError(f"refresh ({refresh}) must be between 1 and window ({window})")
        self.window, self.warmup = window, warmup
        self.refresh, self.per_key = refresh, per_key
        self._rows: dict[str, int] = {}
        self._allocate(1)

    def params(self) -> dict[str, Any]:
        """What the thresholds depend on; a snapshot under other params is re-thresholded."""
        return {"window": self.window, "warmup": self.warmup}

    def threshold_from(self, window: NDArray[np.float64], seen: int, current: float) -> float:
        """The new threshold of an entity from its accepted scores (k,) (oldest first when
        ``needs_order``, else in any order; do not modify them), given that
        it saw ``seen`` scores since the oldest of them arrived (``seen - k`` were flagged) and
        its ``current`` threshold (NaN if none)."""
        raise NotImplementedError

    @property
    def keys(self) -> list[str]:
        return list(self._rows)

    def threshold(self, key: str | None = None) -> float:
        """The threshold in force now for ``key`` (the global one when None, unknown or warming)."""
        row = self._rows.get(key, GLOBAL_ROW) if key is not None else GLOBAL_ROW
        own = float(self._threshold[row])
        return own if not np.isnan(own) else float(self._threshold[GLOBAL_ROW])

    def update(self, keys: ArrayLike, scores: ArrayLike) -> Flags:
        """Flag (n,) ``scores`` of entities ``keys`` (n,) in stream order, then learn from them."""
        values = np.asarray(scores, dtype=np.float64).ravel()
        names = np.asarray(keys).astype(str).ravel()
        if names.shape != values.shape:
            raise CalibrationError(f"{len(names)} keys for {len(values)} scores")
        if np.isnan(values).any():
            raise CalibrationError("scores must not be NaN")
        if len(values) == 0:
            return Flags(np.empty(0), np.empty(0, dtype=bool))
        everyone = np.full(len(values), GLOBAL_ROW)
        global_thresholds = self._advance(everyone, values, None)
        if not self.per_key:
            return Flags(global_thresholds, values > global_thresholds)
        thresholds = self._advance(self._rows_of(names), values, global_thresholds)
        return Flags(thresholds, values > thresholds)

    def snapshot(self, keys: ArrayLike | None = None) -> bytes:
        """The global state and those of ``keys`` (all when None) as bytes."""
        wanted = None if keys is None else {str(k) for k in np.asarray(keys).ravel()}
        chosen = {n: r for n, r in self._rows.items() if wanted is None or n in wanted}
        rows = {state.GLOBAL: GLOBAL_ROW, **chosen}
        return state.pack(self.method, self.params(), {n: self._fields(r) for n, r in rows.items()})

    def restore(self, data: bytes, with_global: bool = True) -> None:
        """Replace the states of the keys in the snapshot, and the global state unless
        ``with_global`` is false (a daemon taking over a partition keeps its own global state).

        A snapshot taken under other parameters (say, another quantile) is restored with this
        calibrator's parameters, and its thresholds are recomputed at once.
        """
        saved_params, states = state.unpack(data, self.method)
        for name, fields in states.items():
            _check_fields(name, fields)
        changed = saved_params != self.params()
        if not with_global:
            states.pop(state.GLOBAL, None)
        for name, fields in states.items():
            row = GLOBAL_ROW if name == state.GLOBAL else self._rows_of(np.array([name]))[0]
            self._load(row, fields)
            if changed:
                self._recompute(row, int(self._seen[row]))

    def _allocate(self, rows: int) -> None:
        """Grow the per-entity arrays to hold ``rows`` rows (new rows start empty)."""
        old = getattr(self, "_seen", np.empty(0)).shape[0]
        if rows <= old:
            return
        capacity = max(rows, 2 * old)

        def grown(array: NDArray[Any] | None, shape: tuple[int, ...], fill: float) -> NDArray[Any]:
            fresh = np.full(shape, fill)
            if array is not None:
                fresh[:old] = array
            return fresh

        self._values = grown(getattr(self, "_values", None), (capacity, self.window), 0.0)
        self._arrived = grown(getattr(self, "_arrived", None), (capacity, self.window), 0.0)
        self._filled = grown(getattr(self, "_filled", None), (capacity,), 0).astype(np.int64)
        self._next = grown(getattr(self, "_next", None), (capacity,), 0).astype(np.int64)
        self._accepted = grown(getattr(self, "_accepted", None), (capacity,), 0).astype(np.int64)
        self._seen = grown(getattr(self, "_seen", None), (capacity,), 0).astype(np.int64)
        self._threshold = grown(getattr(self, "_threshold", None), (capacity,), np.nan)

    def _rows_of(self, names: NDArray[np.str_]) -> NDArray[np.int64]:
        unique, inverse = np.unique(names, return_inverse=True)
        rows = np.empty(len(unique), dtype=np.int64)
        for i, name in enumerate(unique.tolist()):
            row = self._rows.get(name)
            if row is None:
                row = self._rows[name] = len(self._rows) + 1
            rows[i] = row
        self._allocate(len(self._rows) + 1)
        return rows[inverse]

    def _advance(
        self,
        rows: NDArray[np.int64],
        values: NDArray[np.float64],
        fallback: NDArray[np.float64] | None,
    ) -> NDArray[np.float64]:
        """Thresholds in force for scores (n,) of entity ``rows`` (n,), learning as it goes.

        Phase ``b`` holds every entity's ``b``-th refresh block within this batch; between phases
        the entities that completed a block recompute their thresholds.
        """
        n = len(values)
        order, sorted_rows, firsts, counts, sorted_rank = _runs(rows)
        if len(firsts) == 1:
            return self._advance_one(int(rows[0]), values, fallback)
        rank = np.empty(n, dtype=np.int64)
        rank[order] = sorted_rank
        seen_before = self._seen[rows]
        phase = (seen_before % self.refresh + rank) // self.refresh
        by_phase = np.argsort(phase, kind="stable")  # stream order kept within a phase
        bounds = np.searchsorted(phase[by_phase], np.arange(int(phase.max()) + 2))
        thresholds = np.empty(n)
        for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            members = by_phase[lo:hi]
            member_rows = rows[members]
            in_force = self._threshold[member_rows]
            if fallback is not None:
                in_force = np.where(np.isnan(in_force), fallback[members], in_force)
            thresholds[members] = in_force
            kept = members[~(values[members] > in_force)]
            self._learn(rows[kept], values[kept], (seen_before + rank)[kept])
            seen_after = seen_before[members] + rank[members] + 1
            ends = np.flatnonzero(seen_after % self.refresh == 0)
            for row, seen in zip(
                member_rows[ends].tolist(), seen_after[ends].tolist(), strict=True
            ):
                self._recompute(row, seen)
        self._seen[sorted_rows[firsts]] += counts
        return thresholds

    def _advance_one(
        self, row: int, values: NDArray[np.float64], fallback: NDArray[np.float64] | None
    ) -> NDArray[np.float64]:
        """``_advance`` for scores of a single entity: its refresh blocks are contiguous slices."""
        thresholds = np.empty(len(values))
        start = 0
        while start < len(values):
            seen = int(self._seen[row])
            stop = min(len(values), start + self.refresh - seen % self.refresh)
            own = self._threshold[row]
            if np.isnan(own) and fallback is not None:
                thresholds[start:stop] = fallback[start:stop]
            else:
                thresholds[start:stop] = own
            kept = np.flatnonzero(~(values[start:stop] > thresholds[start:stop]))
            self._learn_one(row, values[start:stop][kept], seen + kept)
            self._seen[row] = seen = seen + stop - start
            if seen % self.refresh == 0:
                self._recompute(row, seen)
            start = stop
        return thresholds

    def _learn_one(
        self, row: int, values: NDArray[np.float64], arrivals: NDArray[np.int64]
    ) -> None:
        k = len(values)
        if k == 0:
            return
        slots = (self._next[row] + np.arange(k)) % self.window
        self._values[row, slots], self._arrived[row, slots] = values, arrivals
        self._next[row] = (self._next[row] + k) % self.window
        self._filled[row] = min(self._filled[row] + k, self.window)
        self._accepted[row] += k

    def _learn(
        self, rows: NDArray[np.int64], values: NDArray[np.float64], arrivals: NDArray[np.int64]
    ) -> None:
        """Append accepted scores (k,) to their entities' rings, in stream order."""
        if len(values) == 0:
            return
        order, sorted_rows, firsts, counts, rank = _runs(rows)
        slots = (self._next[sorted_rows] + rank) % self.window
        self._values[sorted_rows, slots] = values[order]
        self._arrived[sorted_rows, slots] = arrivals[order]
        touched = sorted_rows[firsts]
        self._next[touched] = (self._next[touched] + counts) % self.window
        self._filled[touched] = np.minimum(self._filled[touched] + counts, self.window)
        self._accepted[touched] += counts

    def _recompute(self, row: int, seen: int) -> None:
        """Ask the method for a new threshold for one entity, given its seen count by now."""
        filled = int(self._filled[row])
        if self._accepted[row] < self.warmup or filled == 0:
            # Below the warm-up (a snapshot restored under a longer one): no threshold yet.
            self._threshold[row] = np.nan
            return
        oldest = int(self._next[row]) if filled == self.window else 0
        span = int(seen - self._arrived[row, oldest])
        window = self._values[row, :filled]
        if self.needs_order and oldest:
            window = np.roll(window, -oldest)
        self._threshold[row] = self.threshold_from(
            window, max(span, filled), float(self._threshold[row])
        )

    def _fields(self, row: int) -> state.StateFields:
        filled, start = int(self._filled[row]), int(self._next[row])
        full = filled == self.window
        order = np.roll(np.arange(self.window), -start) if full else np.arange(filled)
        counts = [self._accepted[row], self._seen[row], self._threshold[row]]
        return {
            "window": self._values[row, order],
            "seen_at": self._arrived[row, order],
            "counts": np.array(counts, dtype=np.float64),
        }

    def _load(self, row: int, fields: state.StateFields) -> None:
        values, arrived = fields["window"][-self.window :], fields["seen_at"][-self.window :]
        k = len(values)
        self._values[row, :k], self._arrived[row, :k] = values, arrived
        self._filled[row], self._next[row] = k, k % self.window
        accepted, seen, threshold = fields["counts"]
        self._accepted[row], self._seen[row] = int(accepted), int(seen)
        self._threshold[row] = threshold


def _check_fields(name: str, fields: state.StateFields) -> None:
    """Refuse an entity's snapshot state that ``_load`` could not read whole, before any entity
    is loaded: a damaged snapshot must leave the calibrator as it was."""
    missing = sorted({"window", "seen_at", "counts"} - set(fields))
    if missing:
        raise SnapshotError(f"snapshot state of {name!r} lacks {', '.join(missing)}")
    if len(fields["window"]) != len(fields["seen_at"]) or len(fields["counts"]) != 3:
        raise SnapshotError(f"snapshot state of {name!r} has fields of inconsistent lengths")


def _runs(
    rows: NDArray[np.int64],
) -> tuple[
    NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]
]:
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
