"""Per-entity threshold states behind one calibrator: routing, refresh blocks, warm-up fallback.

Every entity's state (and the global state, which sees every score) keeps a threshold that is
recomputed every ``refresh`` scores it has seen, from what it has accepted so far. A score is
flagged when it exceeds the threshold in force; only unflagged scores are learned. Because
thresholds change at fixed counts of seen scores, not at batch boundaries, the flags do not depend
on how the stream is cut into ``update`` calls: a backtest that reads the same scores in the same
order, in any batches, flags exactly what the daemon flagged.

With ``per_key``, an entity whose own state has no threshold yet (still warming up) is judged by
the global threshold in force for that score. The global state learns from the scores it does not
flag itself; each entity's state learns from the scores that were not flagged in the end.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray

from calibration import state
from calibration.base import Flags
from calibration.errors import CalibrationError


class ThresholdState(ABC):
    """One entity's learned state; ``threshold`` is NaN until it has one."""

    seen: int
    threshold: float

    @abstractmethod
    def learn(self, accepted: NDArray[np.float64], arrivals: NDArray[np.float64]) -> None:
        """Take in accepted scores (k,), oldest first, with the count of scores this state had
        seen when each arrived (k,)."""

    @abstractmethod
    def refresh(self) -> None:
        """Recompute ``threshold`` from what has been learned."""

    @abstractmethod
    def to_fields(self) -> state.StateFields: ...

    @classmethod
    @abstractmethod
    def from_fields(cls, fields: state.StateFields, params: dict[str, Any]) -> Self: ...


class KeyedCalibrator:
    """A calibrator made of ``ThresholdState``s: a global one and, with ``per_key``, one per key."""

    method = "keyed"

    def __init__(self, refresh: int, per_key: bool) -> None:
        if refresh < 1:
            raise CalibrationError(f"refresh must be at least 1, not {refresh}")
        self.refresh = refresh
        self.per_key = per_key
        self._global = self.new_state()
        self._states: dict[str, ThresholdState] = {}

    def new_state(self) -> ThresholdState:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        raise NotImplementedError

    def state_class(self) -> type[ThresholdState]:
        raise NotImplementedError

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
        global_thresholds, global_flags = self._advance(self._global, values, None)
        if not self.per_key:
            return Flags(global_thresholds, global_flags)
        thresholds = np.empty_like(values)
        flags = np.empty(len(values), dtype=bool)
        order = np.argsort(names, kind="stable")
        unique, starts = np.unique(names[order], return_index=True)
        for name, rows in zip(unique, np.split(order, starts[1:]), strict=True):
            entity = self._states.get(str(name))
            if entity is None:
                entity = self._states[str(name)] = self.new_state()
            thresholds[rows], flags[rows] = self._advance(
                entity, values[rows], global_thresholds[rows]
            )
        return Flags(thresholds, flags)

    def threshold(self, key: str | None = None) -> float:
        """The threshold in force now for ``key`` (the global one when None or unknown)."""
        entity = self._states.get(key) if key is not None else None
        if entity is not None and not np.isnan(entity.threshold):
            return entity.threshold
        return self._global.threshold

    @property
    def keys(self) -> list[str]:
        return list(self._states)

    def snapshot(self, keys: ArrayLike | None = None) -> bytes:
        """The global state and those of ``keys`` (all when None) as bytes."""
        chosen = self._states if keys is None else self._chosen(keys)
        states = {state.GLOBAL: self._global.to_fields()}
        states.update({name: entity.to_fields() for name, entity in chosen.items()})
        return state.pack(self.method, self.params(), states)

    def restore(self, data: bytes) -> None:
        """Replace the global state and the states of the keys in the snapshot.

        A snapshot taken under other parameters (say, another quantile) is restored with this
        calibrator's parameters, and its thresholds are recomputed at once.
        """
        saved_params, states = state.unpack(data, self.method)
        changed = saved_params != self.params()
        for name, fields in states.items():
            entity = self.state_class().from_fields(fields, self.params())
            if changed:
                entity.refresh()
            if name == state.GLOBAL:
                self._global = entity
            else:
                self._states[name] = entity

    def _chosen(self, keys: ArrayLike) -> dict[str, ThresholdState]:
        wanted = {str(key) for key in np.asarray(keys).ravel()}
        return {name: entity for name, entity in self._states.items() if name in wanted}

    def _advance(
        self,
        entity: ThresholdState,
        values: NDArray[np.float64],
        fallback: NDArray[np.float64] | None,
    ) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        """Run one entity's scores (k,) through its refresh blocks; thresholds and flags (k,)."""
        thresholds = np.empty_like(values)
        start = 0
        while start < len(values):
            stop = min(len(values), start + self.refresh - entity.seen % self.refresh)
            own = entity.threshold
            if np.isnan(own) and fallback is not None:
                thresholds[start:stop] = fallback[start:stop]
            else:
                thresholds[start:stop] = own
            block = values[start:stop]
            flagged = block > thresholds[start:stop]
            kept = np.flatnonzero(~flagged)
            entity.learn(block[kept], (entity.seen + kept).astype(np.float64))
            entity.seen += stop - start
            if entity.seen % self.refresh == 0:
                entity.refresh()
            start = stop
        flags = values > thresholds
        return thresholds, flags
