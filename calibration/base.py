"""The calibrator protocol and what ``update`` returns.

A calibrator turns a stream of scores (higher = more anomalous) into a threshold in force for each
score, a flag (score above threshold) and a surprise (the score's tail probability under its
entity's fitted distribution, in decades: comparable across keys). It learns only from scores it
did not flag, so a burst of anomalies cannot raise its own threshold. Its state survives
restarts through ``snapshot`` / ``restore`` (bytes, versioned, no pickles).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from calibration.errors import CalibrationError


def _unknown() -> NDArray[np.float64]:
    return np.empty(0)


@dataclass(frozen=True)
class Flags:
    """For n scores: ``thresholds`` (n,) float64, the threshold in force for each (NaN while
    warming up: no flag is possible then), ``flags`` (n,) bool, score > threshold, and
    ``surprise`` (n,) float64, ``-log10 P(score >= s)`` under the tail fitted for the entity
    whose threshold judged it (0 in the body, higher = rarer; NaN while warming up, and NaN for
    all n when not given, so ``Flags(thresholds, flags)`` still builds)."""

    thresholds: NDArray[np.float64]
    flags: NDArray[np.bool_]
    surprise: NDArray[np.float64] = field(default_factory=_unknown)

    def __post_init__(self) -> None:
        if len(self.surprise) == 0 and len(self.flags) != 0:
            object.__setattr__(self, "surprise", np.full(len(self.flags), np.nan))

    def __len__(self) -> int:
        return int(self.flags.shape[0])


class Calibrator(Protocol):
    """Scores in, thresholds and flags out, state as bytes."""

    method: str
    max_keys: int
    """The most keys whose state is kept (0: no cap); the least recently seen go first."""
    evicted: int
    """How many keys' states were dropped to stay within ``max_keys``, in all."""

    def update(self, keys: ArrayLike, scores: ArrayLike) -> Flags:
        """Flag (n,) ``scores`` of entities ``keys`` (n,) in stream order, then learn from them."""
        ...

    def threshold(self, key: str | None = None) -> float:
        """The threshold in force now for ``key`` (the global one when None); NaN while warming."""
        ...

    def snapshot(self, keys: ArrayLike | None = None) -> bytes:
        """The state (of ``keys`` only, when given, plus the global state) as bytes."""
        ...

    def restore(self, data: bytes, with_global: bool = True) -> None:
        """Load a snapshot's states, replacing those of the keys it holds (and the global state
        unless ``with_global`` is false)."""
        ...


def checked_batch(
    keys: ArrayLike, scores: ArrayLike
) -> tuple[NDArray[np.str_], NDArray[np.float64]]:
    """An ``update``'s (n,) ``keys`` as strings and (n,) ``scores`` as float64, refused
    (``CalibrationError``) when their lengths differ or a score is NaN. ``+ 0.0`` makes -0.0
    0.0: a window's sort would otherwise order the two by slot, and a restored window (slots in
    arrival order) could fit a knot of -0.0 where one never restored fits 0.0."""
    values = np.asarray(scores, dtype=np.float64).ravel() + 0.0
    names = np.asarray(keys).astype(str).ravel()
    if names.shape != values.shape:
        raise CalibrationError(f"{len(names)} keys for {len(values)} scores")
    if np.isnan(values).any():
        raise CalibrationError("scores must not be NaN")
    return names, values
