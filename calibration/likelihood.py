"""Anomaly likelihood: how unusual a key's recent scores are against its own longer history.

After Numenta's anomaly likelihood (Ahmad et al., 2017, the post-processing of HTM's NAB
detector). Per key, each score is averaged with the key's ``smooth - 1`` previous scores; that
moving average is compared with a normal distribution fitted (mean, standard deviation) on the
key's last ``window`` moving averages, every score's, flagged or not. A window is flagged when
the average's tail probability falls below ``target_rate``; its surprise is that probability in
decades, ``-log10 Q(z)``.

Why every score enters the history, unlike the windowed methods (``calibration.window``): a
lasting change of regime (a level shift that stays, a new daily pattern) fills the history and
stops alarming by itself, after a bounded time (well before ``window`` scores: the fit's spread
grows with the first of them); a short anomaly is a few of ``window`` values and hardly moves
it. What it gives up: a long anomaly is flagged at its onset, not for as long as it lasts
(docs/calibration.md compares the two on NAB and SKAB).

Batching: the fit is recomputed every ``refresh`` scores of a key, and each moving average sums
the same scores in the same order, so flags, thresholds and surprise are bit for bit the same
however the stream is cut into ``update`` calls. A key is judged by its own history only (a
prior's moving averages start it), never by other keys', so fetch order across keys changes
nothing either.
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
from calibration.base import Flags
from calibration.errors import CalibrationError, SnapshotError
from calibration.surprise import MAX_DECADES

MIN_FIT = 2
"""Moving averages a fit needs at least (a standard deviation of one value is undefined)."""
MIN_SPREAD = 1e-12
"""The least standard deviation a fit takes, so a constant history still yields a finite z."""


@dataclass
class _Key:
    """One key's state: ``recent`` (≤ smooth,) its latest scores, oldest first; ``history``
    (≤ window,) its latest moving averages, oldest first; ``seen`` scores in all; the fitted
    ``mean`` and ``spread`` (NaN before the first fit)."""

    recent: NDArray[np.float64]
    history: NDArray[np.float64]
    seen: int = 0
    mean: float = math.nan
    spread: float = math.nan


class Likelihood:
    """Per-key anomaly likelihood over moving averages of ``smooth`` scores (module docstring).

    ``window``: moving averages the fit is taken over; ``warmup``: moving averages a key needs
    before its first fit when no prior started it; ``refresh``: scores a key sees between fits;
    ``per_key`` false pools every key into one state.
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
        self._keys: OrderedDict[str, _Key] = OrderedDict()
        self._prior: _Key | None = None

    def params(self) -> dict[str, Any]:
        """What the fits depend on; a snapshot under others is refitted on restore."""
        return {"window": self.window, "warmup": self.warmup, "smooth": self.smooth}

    @property
    def started(self) -> bool:
        """Whether a prior starts every key (``start_from``)."""
        return self._prior is not None

    @property
    def keys(self) -> list[str]:
        return list(self._keys)

    def start_from(self, prior: ArrayLike) -> None:
        """Start every key from (m,) ``prior`` scores, oldest first (a model's held-out
        scores): their moving averages seed its history, their last scores its average, and a
        key is judged from its first score. Before any ``update``; fewer than ``MIN_FIT``
        scores are not used."""
        if self._keys:
            raise CalibrationError("a prior must be given before the first update")
        values = np.asarray(prior, dtype=np.float64).ravel() + 0.0
        if not np.isfinite(values).all():
            raise CalibrationError("prior scores must be finite")
        if len(values) < MIN_FIT:
            return
        seed = _Key(np.empty(0), np.empty(0))
        seed.history = self._averages(seed, values).values[-self.window :]
        seed.recent = values[-self.smooth :]
        _fit(seed)
        self._prior = seed

    def update(self, keys: ArrayLike, scores: ArrayLike) -> Flags:
        """Flag (n,) ``scores`` of entities ``keys`` (n,) in stream order, then learn them."""
        values = np.asarray(scores, dtype=np.float64).ravel() + 0.0
        names = np.asarray(keys).astype(str).ravel()
        if names.shape != values.shape:
            raise CalibrationError(f"{len(names)} keys for {len(values)} scores")
        if np.isnan(values).any():
            raise CalibrationError("scores must not be NaN")
        thresholds, surprise = np.full(len(values), np.nan), np.full(len(values), np.nan)
        if len(values):
            if not self.per_key:
                names = np.full(len(values), state.GLOBAL)
            unique, inverse = np.unique(names, return_inverse=True)
            self._make_room(unique.tolist())
            for index, name in enumerate(unique.tolist()):
                at = np.flatnonzero(inverse == index)
                thresholds[at], surprise[at] = self._advance(self._state(name), values[at])
        return Flags(thresholds, values > thresholds, surprise)

    def threshold(self, key: str | None = None) -> float:
        """The score above which ``key``'s next window would be flagged (a key never seen, or
        None: a new key's, from the prior); NaN without a fit."""
        entity = self._keys.get(state.GLOBAL if not self.per_key else (key or ""), self._prior)
        if entity is None or math.isnan(entity.mean):
            return math.nan
        limit = entity.mean + self.z_limit * entity.spread
        earlier = entity.recent[max(0, len(entity.recent) - (self.smooth - 1)) :]
        count = len(earlier) + 1
        return float(count * limit - earlier.sum())

    def snapshot(self, keys: ArrayLike | None = None) -> bytes:
        """The states of ``keys`` (all when None) as bytes, and the pooled one (``per_key``
        false), as a windowed calibrator's snapshot always holds its global state."""
        wanted = None if keys is None else {str(k) for k in np.asarray(keys).ravel()}
        wanted = wanted if wanted is None else wanted | {state.GLOBAL}
        chosen = {n: k for n, k in self._keys.items() if wanted is None or n in wanted}
        return state.pack(self.method, self.params(), {n: _fields(k) for n, k in chosen.items()})

    def restore(self, data: bytes, with_global: bool = True) -> None:
        """Replace the states of the keys in the snapshot (the pooled state, without
        ``per_key``, only when ``with_global``). A snapshot taken under other parameters is
        refitted at once."""
        saved_params, states = state.unpack(data, self.method)
        loaded = {name: _load(name, fields) for name, fields in states.items()}
        if not with_global:
            loaded.pop(state.GLOBAL, None)
        changed = saved_params != self.params()
        for name, entity in loaded.items():
            entity.recent = entity.recent[-self.smooth :]
            entity.history = entity.history[-self.window :]
            if changed:
                _fit(entity, self.warmup if not self._prior else MIN_FIT)
            self._keys[name] = entity
            self._keys.move_to_end(name)

    def _state(self, name: str) -> _Key:
        entity = self._keys.get(name)
        if entity is None:
            prior = self._prior
            entity = _Key(np.empty(0), np.empty(0))
            if prior is not None:
                entity = _Key(
                    prior.recent.copy(), prior.history.copy(), 0, prior.mean, prior.spread
                )
            self._keys[name] = entity
        self._keys.move_to_end(name)
        return entity

    def _make_room(self, names: list[str]) -> None:
        """Drop the least recently seen keys other than ``names`` so that at most ``max_keys``
        remain (0: no cap)."""
        if not self.max_keys:
            return
        wanted = set(names)
        excess = len(self._keys) + sum(n not in self._keys for n in names) - self.max_keys
        for name in list(self._keys):
            if excess <= 0:
                break
            if name not in wanted:
                del self._keys[name]
                self.evicted += 1
                excess -= 1

    def _averages(self, entity: _Key, block: NDArray[np.float64]) -> Averages:
        """The moving averages (k,) of a key's next scores ``block`` (k,), and the sums (k,) of
        the scores before each in its average, and how many scores each average holds (k,):
        at most ``smooth``, fewer before a key has that many. Each sum adds the same slots in
        the same order whatever the batching (zeros stand for scores a key does not have yet,
        and add nothing exactly)."""
        earlier = entity.recent[len(entity.recent) - min(len(entity.recent), self.smooth - 1) :]
        padding = np.zeros(self.smooth - 1 - len(earlier))
        series = np.concatenate([padding, earlier, block])
        k = len(block)
        before = np.zeros(k)
        for offset in range(self.smooth - 1):
            before += series[offset : offset + k]
        counts = np.minimum(len(earlier) + 1 + np.arange(k), self.smooth).astype(np.float64)
        return Averages((before + block) / counts, before, counts)

    def _advance(self, entity: _Key, values: NDArray[np.float64]) -> Judged:
        """Thresholds and surprise (k,) of one key's scores (k,), in order, learning them. The
        fit changes only at the key's refresh boundaries, so a block between two is judged at
        once."""
        thresholds, surprise = np.full(len(values), np.nan), np.full(len(values), np.nan)
        start = 0
        while start < len(values):
            stop = min(len(values), start + self.refresh - entity.seen % self.refresh)
            block = values[start:stop]
            averages = self._averages(entity, block)
            if not math.isnan(entity.mean):
                limit = entity.mean + self.z_limit * entity.spread
                thresholds[start:stop] = averages.counts * limit - averages.before
                z = (averages.values - entity.mean) / entity.spread
                surprise[start:stop] = np.minimum(-log_ndtr(-z) / math.log(10), MAX_DECADES)
            entity.recent = np.concatenate([entity.recent, block])[-self.smooth :]
            entity.history = np.concatenate([entity.history, averages.values])[-self.window :]
            entity.seen += len(block)
            if entity.seen % self.refresh == 0:
                _fit(entity, MIN_FIT if self._prior or not math.isnan(entity.mean) else self.warmup)
            start = stop
        return thresholds, surprise


Judged = tuple[NDArray[np.float64], NDArray[np.float64]]
"""Thresholds (k,) and surprise (k,) of k scores."""


@dataclass(frozen=True)
class Averages:
    """For k scores: their moving ``values`` (k,), the sums of the scores ``before`` each in
    its average (k,), and the ``counts`` (k,) of scores each average holds."""

    values: NDArray[np.float64]
    before: NDArray[np.float64]
    counts: NDArray[np.float64]


def _fit(entity: _Key, least: int = MIN_FIT) -> None:
    """Refit ``entity``'s mean and spread on its history, when it holds ``least`` values."""
    if len(entity.history) < least:
        return
    entity.mean = float(np.mean(entity.history))
    entity.spread = max(float(np.std(entity.history, ddof=1)), MIN_SPREAD)


def _fields(entity: _Key) -> state.StateFields:
    counts = [entity.seen, entity.mean, entity.spread]
    return {"recent": entity.recent, "history": entity.history, "counts": np.array(counts)}


def _load(name: str, fields: state.StateFields) -> _Key:
    if {"recent", "history", "counts"} - set(fields) or len(fields["counts"]) != 3:
        raise SnapshotError(f"snapshot state of {name!r} lacks fields or has inconsistent ones")
    seen, mean, spread = fields["counts"].tolist()
    return _Key(fields["recent"].copy(), fields["history"].copy(), int(seen), mean, spread)
