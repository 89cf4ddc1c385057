"""Anomaly likelihood: how unusual a key's recent scores are against its own longer history.

After Numenta's anomaly likelihood (Ahmad et al., 2017, the post-processing of HTM's NAB
detector). Per key, each score is averaged with the key's ``smooth - 1`` previous scores; that
moving average is compared with a normal distribution fitted (mean, standard deviation) on the
key's last ``window`` moving averages, every score's, flagged or not, up to the one before it.
A window is flagged when the average's tail probability falls below ``target_rate``; its
surprise is that probability in decades, ``-log10 Q(z)``.

Why every score enters the history, unlike the windowed methods (``calibration.window``): a
lasting change of regime (a level shift that stays, a new daily pattern) fills the history and
stops alarming by itself, after a bounded time (well before ``window`` scores: the fit's spread
grows with the first of them); a short anomaly is a few of ``window`` values and hardly moves
it. What it gives up: a long anomaly is flagged at its onset, not for as long as it lasts
(docs/calibration.md compares the two on NAB and SKAB).

The fit follows every score: a key keeps running sums of its averages' deviations from a
centre (and of their squares), each average added and the one it pushes out of the history
taken away, and every ``refresh`` scores the fit is recomputed exactly from the history oldest
first, which resets the sums' rounding (docs/calibration.md: what a fit held for ``refresh``
scores cost).

Batching: each moving average adds the same scores in the same order, a key's running sums
add the same steps in the same order (a sequential cumulative sum, carried across batches),
and the exact refits come at the same scores of the key, so flags, thresholds and surprise
are bit for bit the same however the stream is cut into ``update`` calls. A key is judged by
its own history only (a prior's moving averages start it), never by other keys', so fetch
order across keys changes nothing either.

Keys live in the rows of a few 2-D arrays, so a batch is judged with array operations over all
its keys at once, a refresh phase at a time (as in ``calibration.window``).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import log_ndtr, ndtri

from calibration import state
from calibration.base import Flags, checked_batch
from calibration.errors import CalibrationError, SnapshotError
from calibration.ring import runs
from calibration.surprise import MAX_DECADES

MIN_FIT = 2
"""Moving averages a fit needs at least (a standard deviation of one value is undefined)."""
MIN_SPREAD = 1e-12
"""The least standard deviation a fit takes, so a constant history still yields a finite z."""


@dataclass(frozen=True)
class Averages:
    """A batch's n scores over its g keys: each score's ``rank`` (n,) among its key's in the
    batch, their moving ``values`` (n,), the sums of the scores ``before`` each in its average
    (n,), how many scores each average holds, ``counts`` (n,); and per key, its ``rows`` (g,)
    and ``latest`` (g, smooth) scores after the batch, oldest first (zeros where a key has none
    yet), with ``added`` (g,) scores of it in the batch."""

    rank: NDArray[np.int64]
    values: NDArray[np.float64]
    before: NDArray[np.float64]
    counts: NDArray[np.float64]
    rows: NDArray[np.int64]
    latest: NDArray[np.float64]
    added: NDArray[np.int64]


class Likelihood:
    """Per-key anomaly likelihood over moving averages of ``smooth`` scores (module docstring).

    ``window``: moving averages the fit is taken over; ``warmup``: moving averages a key needs
    before its first fit when no prior started it; ``refresh``: scores a key sees between fits;
    ``per_key`` false pools every key into one state.

    Per row (row 0: the prior, which new keys copy): ``_recent`` (smooth,) the latest scores,
    right-aligned, ``_held`` of them real (zeros before, where a key has none yet);
    ``_history`` (window,) a ring of moving averages, ``_filled`` of them, the next written at
    ``_next``; ``_seen`` scores in all; the fit: the history's sums of deviations ``_sum1``
    and squared deviations ``_sum2`` from ``_centre`` (NaN before a first fit), whose mean and
    spread (``_fit_of``) judge the key's next average.
    """

    method = "likelihood"

    def __init__(
        self,
        target_rate: float,
        window: int,
        warmup: int,
        refresh: int,
        smooth: int,
        per_key: bool = True,
    ) -> None:
        if not 0.0 < target_rate < 1.0:
            raise CalibrationError(f"target_rate ({target_rate}) must be in (0, 1)")
        if not MIN_FIT <= warmup <= window:
            raise CalibrationError(f"warmup ({warmup}) must be between {MIN_FIT} and window")
        if not 1 <= refresh <= window:
            raise CalibrationError(f"refresh ({refresh}) must be between 1 and window ({window})")
        if smooth < 1:
            raise CalibrationError(f"smooth ({smooth}) must be at least 1")
        self.target_rate, self.window, self.warmup = target_rate, window, warmup
        self.refresh, self.smooth, self.per_key = refresh, smooth, per_key
        self.z_limit = float(-ndtri(target_rate))
        """The z above which a moving average is flagged: Q(z_limit) = target_rate."""
        self.max_keys = 0
        self.evicted = 0
        self._rows: OrderedDict[str, int] = OrderedDict()
        self._free: list[int] = []
        self._recent = np.zeros((0, smooth))
        self._history = np.zeros((0, window))
        self._held = np.zeros(0, dtype=np.int64)
        self._filled = np.zeros(0, dtype=np.int64)
        self._next = np.zeros(0, dtype=np.int64)
        self._seen = np.zeros(0, dtype=np.int64)
        self._used = 0
        self._started = False
        self._centre = np.zeros(0)
        self._sum1 = np.zeros(0)
        self._sum2 = np.zeros(0)
        self._prior_row = self._allocate()

    def params(self) -> dict[str, Any]:
        """What the fits depend on; a snapshot under others is refitted on restore."""
        return {"window": self.window, "warmup": self.warmup, "smooth": self.smooth}

    @property
    def started(self) -> bool:
        """Whether a prior starts every key (``start_from``)."""
        return self._started

    @property
    def keys(self) -> list[str]:
        return list(self._rows)

    def start_from(self, prior: ArrayLike) -> None:
        """Start every key from (m,) ``prior`` scores, oldest first (a model's held-out
        scores): their moving averages seed its history, their last scores its average, and a
        key is judged from its first score. Before any ``update``; fewer than ``MIN_FIT``
        scores are not used."""
        if self._rows:
            raise CalibrationError("a prior must be given before the first update")
        values = np.asarray(prior, dtype=np.float64).ravel() + 0.0
        if not np.isfinite(values).all():
            raise CalibrationError("prior scores must be finite")
        if len(values) < MIN_FIT:
            return
        averages = self._moving(np.full(len(values), self._prior_row), values).values
        self._load(self._prior_row, values[-self.smooth :], averages, 0)
        self._fit(self._prior_row, MIN_FIT)
        self._started = True

    def update(self, keys: ArrayLike, scores: ArrayLike) -> Flags:
        """Flag (n,) ``scores`` of entities ``keys`` (n,) in stream order, then learn them."""
        names, values = checked_batch(keys, scores)
        if len(values) == 0:
            return Flags(np.empty(0), np.empty(0, dtype=bool), np.empty(0))
        if not self.per_key:
            names = np.full(len(values), state.GLOBAL)
        rows = self._rows_of(names)
        averages = self._moving(rows, values)
        thresholds, surprise = self._judge_and_learn(rows, averages)
        self._recent[averages.rows] = averages.latest
        self._held[averages.rows] = np.minimum(
            self._held[averages.rows] + averages.added, self.smooth
        )
        return Flags(thresholds, values > thresholds, surprise)

    def threshold(self, key: str | None = None) -> float:
        """The score above which ``key``'s next window would be flagged (a key never seen, or
        None: a new key's, from the prior); NaN without a fit."""
        name = state.GLOBAL if not self.per_key else (key or "")
        row = self._rows.get(name, self._prior_row)
        if math.isnan(self._centre[row]):
            return math.nan
        at = slice(row, row + 1)
        filled = self._filled[at].astype(np.float64)
        mean, spread = self._fit_of(self._centre[at], self._sum1[at], self._sum2[at], filled)
        limit = float(mean[0] + self.z_limit * spread[0])
        earlier = self._recent[row, 1:]
        count = min(int(self._held[row]), self.smooth - 1) + 1
        return float(count * limit - earlier.sum())

    def snapshot(self, keys: ArrayLike | None = None) -> bytes:
        """The states of ``keys`` (all when None) as bytes, and the pooled one (``per_key``
        false), as a windowed calibrator's snapshot always holds its global state."""
        wanted = None if keys is None else {str(k) for k in np.asarray(keys).ravel()}
        wanted = wanted if wanted is None else wanted | {state.GLOBAL}
        chosen = {n: r for n, r in self._rows.items() if wanted is None or n in wanted}
        return state.pack(
            self.method, self.params(), {n: self._fields(r) for n, r in chosen.items()}
        )

    def restore(self, data: bytes, with_global: bool = True) -> None:
        """Replace the states of the keys in the snapshot (the pooled state, without
        ``per_key``, only when ``with_global``). A snapshot taken under other parameters is
        refitted at once."""
        saved_params, states = state.unpack(data, self.method)
        for name, fields in states.items():
            if {"recent", "history", "counts"} - set(fields) or len(fields["counts"]) not in (3, 4):
                raise SnapshotError(f"snapshot state of {name!r} lacks fields or has bad ones")
        if not with_global:
            states.pop(state.GLOBAL, None)
        changed = saved_params != self.params()
        rows = self._rows_of(np.array(list(states))) if states else np.empty(0, dtype=np.int64)
        for row, fields in zip(rows.tolist(), states.values(), strict=True):
            seen, centre, *sums = fields["counts"].tolist()
            self._load(row, fields["recent"], fields["history"], int(seen))
            self._centre[row] = centre
            if changed or len(sums) != 2:  # other parameters, or a fit saved without its sums
                self._fit(row, self._least(row))
            else:
                self._sum1[row], self._sum2[row] = sums

    # Rows ---------------------------------------------------------------------------------

    def _allocate(self) -> int:
        """A fresh row (reused when one was freed), empty."""
        if self._free:
            row = self._free.pop()
        else:
            row = self._used
            self._used += 1
            if row == len(self._recent):
                self._grow(max(2 * row, 4))
        self._recent[row] = 0.0
        self._held[row] = self._filled[row] = self._next[row] = self._seen[row] = 0
        self._centre[row] = np.nan
        self._sum1[row] = self._sum2[row] = 0.0
        return row

    def _grow(self, capacity: int) -> None:
        def grown(array: NDArray[Any]) -> NDArray[Any]:
            fresh = np.zeros((capacity, *array.shape[1:]), dtype=array.dtype)
            fresh[: len(array)] = array
            return fresh

        self._recent, self._history = grown(self._recent), grown(self._history)
        self._held, self._filled = grown(self._held), grown(self._filled)
        self._next, self._seen = grown(self._next), grown(self._seen)
        self._centre, self._sum1 = grown(self._centre), grown(self._sum1)
        self._sum2 = grown(self._sum2)

    def _rows_of(self, names: NDArray[np.str_]) -> NDArray[np.int64]:
        """Each name's row (n,), new keys started from the prior; the batch's keys become the
        most recently seen."""
        unique, inverse = np.unique(names, return_inverse=True)
        listed = unique.tolist()
        self._make_room(listed)
        rows = np.empty(len(listed), dtype=np.int64)
        for i, name in enumerate(listed):
            row = self._rows.get(name)
            if row is None:
                row = self._rows[name] = self._allocate()
                if self._started:
                    self._copy(self._prior_row, row)
            self._rows.move_to_end(name)
            rows[i] = row
        return rows[inverse]

    def _make_room(self, names: list[str]) -> None:
        """Drop the least recently seen keys other than ``names`` so that at most ``max_keys``
        remain (0: no cap); their rows are reused."""
        if not self.max_keys:
            return
        wanted = set(names)
        excess = len(self._rows) + sum(n not in self._rows for n in names) - self.max_keys
        for name in list(self._rows):
            if excess <= 0:
                break
            if name not in wanted:
                self._free.append(self._rows.pop(name))
                self.evicted += 1
                excess -= 1

    # One batch ----------------------------------------------------------------------------

    def _moving(self, rows: NDArray[np.int64], values: NDArray[np.float64]) -> Averages:
        """The ``Averages`` of scores (n,) of ``rows`` (n,), in stream order. Per key, the
        batch's scores follow its ``smooth - 1`` latest in one flat array, so each average is a
        sum over the same slots, added oldest first whatever the batching (zeros, for scores a
        key does not have yet, add nothing exactly)."""
        span = self.smooth - 1
        order, sorted_rows, starts, sizes, sorted_rank = runs(rows)
        rank = np.empty(len(rows), dtype=np.int64)
        rank[order] = sorted_rank
        offsets = np.cumsum(np.r_[0, sizes[:-1] + span])  # each group: span earlier, then scores
        extended = np.empty(len(rows) + span * len(starts))
        if span:
            earlier_at = offsets[:, None] + np.arange(span)
            extended[earlier_at] = self._recent[sorted_rows[starts]][:, 1:]
        group_of = np.repeat(np.arange(len(starts)), sizes)
        position = np.empty(len(rows), dtype=np.int64)
        position[order] = offsets[group_of] + span + sorted_rank
        extended[position] = values
        before = np.zeros(len(rows))
        for offset in range(span):
            before += extended[position - span + offset]
        had = np.minimum(self._held[rows], span)
        counts = np.minimum(had + rank + 1, self.smooth).astype(np.float64)
        ends = offsets + sizes + span
        latest = extended[ends[:, None] - self.smooth + np.arange(self.smooth)]
        return Averages(
            rank, (before + values) / counts, before, counts, sorted_rows[starts], latest, sizes
        )

    def _judge_and_learn(
        self, rows: NDArray[np.int64], averages: Averages
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Thresholds and surprise (n,), a refresh phase at a time: phase ``b`` holds every
        row's ``b``-th refresh block within this batch, each average judged by the fit after
        the ones before it (``_running``), then appended to the history; rows that completed a
        block refit exactly before the next phase."""
        n = len(rows)
        thresholds, surprise = np.full(n, np.nan), np.full(n, np.nan)
        seen, rank = self._seen[rows], averages.rank
        phase = (seen % self.refresh + rank) // self.refresh
        by_phase = np.lexsort((rank, rows, phase))
        bounds = np.searchsorted(phase[by_phase], np.arange(int(phase.max()) + 2))
        for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            members = by_phase[lo:hi]
            member_rows = rows[members]
            starts = np.flatnonzero(np.r_[True, member_rows[1:] != member_rows[:-1]])
            added = np.diff(np.r_[starts, len(members)])
            within = np.arange(len(members)) - np.repeat(starts, added)
            slots = (self._next[member_rows] + within) % self.window
            values = averages.values[members]
            mean, spread = self._running(member_rows, starts, added, within, slots, values)
            fitted = ~np.isnan(mean)
            at = members[fitted]
            limit = mean[fitted] + self.z_limit * spread[fitted]
            thresholds[at] = averages.counts[at] * limit - averages.before[at]
            z = (averages.values[at] - mean[fitted]) / spread[fitted]
            surprise[at] = np.minimum(-log_ndtr(-z) / math.log(10), MAX_DECADES)
            self._history[member_rows, slots] = values
            touched = member_rows[starts]
            self._next[touched] = (self._next[touched] + added) % self.window
            self._filled[touched] = np.minimum(self._filled[touched] + added, self.window)
            self._seen[touched] += added
            for row in touched[self._seen[touched] % self.refresh == 0].tolist():
                self._fit(row, self._least(row))
        return thresholds, surprise

    def _running(
        self,
        member_rows: NDArray[np.int64],
        starts: NDArray[np.int64],
        sizes: NDArray[np.int64],
        within: NDArray[np.int64],
        slots: NDArray[np.int64],
        values: NDArray[np.float64],
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """The mean and spread (k,) that judge each of a phase's k moving averages ``values``
        (grouped by row from ``starts``, ``sizes`` long, ``within`` its group, written to
        ``slots``): each row's history after
        the group's earlier averages, from its running sums. Each average adds its deviation
        from the row's centre and takes away that of the one it overwrites; a row's steps are
        summed in order after its carried sums (one sequential cumulative sum per row), which
        are then carried on. NaN for rows without a fit."""
        centre = self._centre[member_rows]
        filled = self._filled[member_rows]
        outgoing = np.where(
            filled + within >= self.window, self._history[member_rows, slots], centre
        )
        new, old = values - centre, outgoing - centre
        groups = np.repeat(np.arange(len(starts)), sizes)
        touched = member_rows[starts]
        steps = np.zeros((2, len(starts), int(within.max()) + 2))
        steps[:, :, 0] = self._sum1[touched], self._sum2[touched]
        steps[0, groups, within + 1] = new - old
        steps[1, groups, within + 1] = new * new - old * old
        sums = np.cumsum(steps, axis=2)
        self._sum1[touched], self._sum2[touched] = sums[:, np.arange(len(starts)), sizes]
        count = np.minimum(filled + within, self.window).astype(np.float64)
        return self._fit_of(centre, sums[0, groups, within], sums[1, groups, within], count)

    @staticmethod
    def _fit_of(
        centre: NDArray[np.float64],
        sum1: NDArray[np.float64],
        sum2: NDArray[np.float64],
        count: NDArray[np.float64],
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Mean and spread (sample standard deviation, at least ``MIN_SPREAD``) of ``count``
        values whose deviations from ``centre`` sum to ``sum1`` and their squares to ``sum2``."""
        count = np.maximum(count, 1.0)  # a row without history has no fit: its centre is NaN
        variance = np.maximum(sum2 - sum1 * sum1 / count, 0.0) / np.maximum(count - 1.0, 1.0)
        return centre + sum1 / count, np.maximum(np.sqrt(variance), MIN_SPREAD)

    # State --------------------------------------------------------------------------------

    def _fit(self, row: int, least: int) -> None:
        """Refit a row exactly on its history, oldest first, when it holds ``least`` moving
        averages (else it has no fit): its mean becomes the centre of fresh running sums."""
        history = self._ordered(row)
        if len(history) < least:
            self._centre[row] = np.nan
            return
        centre = float(np.mean(history))
        deviations = history - centre
        self._centre[row] = centre
        self._sum1[row] = float(np.sum(deviations))
        self._sum2[row] = float(np.sum(deviations * deviations))

    def _least(self, row: int) -> int:
        """Moving averages a row's next fit needs: ``warmup`` for its first without a prior."""
        return MIN_FIT if self._started or not math.isnan(self._centre[row]) else self.warmup

    def _copy(self, source: int, target: int) -> None:
        """Start row ``target`` as row ``source`` is (a new key from the prior)."""
        for array in (self._recent, self._history, self._held, self._filled, self._next):
            array[target] = array[source]
        for fit in (self._centre, self._sum1, self._sum2):
            fit[target] = fit[source]
        self._seen[target] = 0

    def _ordered(self, row: int) -> NDArray[np.float64]:
        filled = int(self._filled[row])
        start = int(self._next[row]) - filled
        return np.asarray(self._history[row, (start + np.arange(filled)) % self.window])

    def _load(
        self, row: int, recent: NDArray[np.float64], history: NDArray[np.float64], seen: int
    ) -> None:
        recent, history = recent[-self.smooth :], history[-self.window :]
        self._recent[row] = 0.0
        if len(recent):
            self._recent[row, -len(recent) :] = recent
        self._held[row] = len(recent)
        self._history[row, : len(history)] = history
        self._filled[row] = len(history)
        self._next[row] = len(history) % self.window
        self._seen[row] = seen

    def _fields(self, row: int) -> state.StateFields:
        held = int(self._held[row])
        counts = [self._seen[row], self._centre[row], self._sum1[row], self._sum2[row]]
        return {
            "recent": self._recent[row, self.smooth - held :].copy(),
            "history": self._ordered(row),
            "counts": np.array(counts, dtype=np.float64),
        }
