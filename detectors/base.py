"""The detector protocol and what scoring returns.

Windows are float arrays of shape (n, D): n windows of D features each. Higher scores are more
anomalous. ``score`` is in decades of tail probability (see ``detectors.normalise``);
thresholds are not a detector's business but the calibrator's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, Self

import numpy as np
from numpy.typing import NDArray

from calibration.memory import MemorySeed

FloatArray = NDArray[np.float32]
DevicePreference = Literal["auto", "cpu", "gpu"]
KindLabels = Sequence[str] | NDArray[np.str_]
"""(n,) anomaly kind names, one per window."""


@dataclass(frozen=True)
class Scores:
    """Per-window results for n windows of D features.

    - ``score`` (n,): the combined score; equals the sum of ``parts``.
    - ``parts`` name → (n,): each stage's weighted tail decades (``ae1``, ``ae2``), see
      ``detectors.normalise``.
    - ``errors`` name → (n,): each stage's raw mean squared reconstruction error, in scaled units.
    - ``contributions(rows)``: (len(rows), D), each feature's share of AE1's squared error for
      those windows; rows sum to 1. Computed when asked, because blame is wanted for the few
      flagged windows and computing it for every window would cost a fifth of the throughput.
      It reads the windows that were scored, so do not modify them while blame may be asked for.
    """

    score: FloatArray
    parts: Mapping[str, FloatArray]
    errors: Mapping[str, FloatArray]
    blame: Callable[[NDArray[np.intp]], FloatArray]
    """Maps window indices (k,) to their (k, D) shares; use ``contributions``."""
    typing: Callable[[NDArray[np.intp]], tuple[list[str], FloatArray]] | None = None
    """Maps window indices (k,) to their most likely anomaly kinds and those kinds' (k,)
    probabilities; None when the detector has no kind classifier (``detectors.kinds``)."""

    def __len__(self) -> int:
        return int(self.score.shape[0])

    def contributions(self, rows: NDArray[np.integer] | None = None) -> FloatArray:
        """(k, D) blame for the windows at ``rows`` (k,), or (n, D) for all when None."""
        return self.blame(_rows(len(self), rows))

    def kinds(self, rows: NDArray[np.integer] | None = None) -> tuple[list[str], FloatArray] | None:
        """The most likely anomaly kind of the windows at ``rows`` (k,), or all when None, with
        its (k,) probability; None when the detector does not type anomalies."""
        if self.typing is None:
            return None
        return self.typing(_rows(len(self), rows))


def _rows(n: int, rows: NDArray[np.integer] | None) -> NDArray[np.intp]:
    return np.arange(n) if rows is None else np.asarray(rows, dtype=np.intp)


class Detector(Protocol):
    """What the run loop, backtests and benchmarks need from any detector."""

    kind: str
    name_: str
    """The model's name in alerts: the bundle's, or ``unsaved``."""

    @property
    def window_length(self) -> int:
        """D: the number of features per window the detector was fitted on."""
        ...

    @property
    def feature_names(self) -> tuple[str, ...]: ...

    @property
    def version(self) -> str | None:
        """The bundle's content hash once saved or loaded; None for an unsaved detector."""
        ...

    @property
    def held_out_scores(self) -> NDArray[np.float64]:
        """(m,) scores of the last held-out windows of training (at most
        ``HELD_OUT_SCORES_KEPT``), oldest first; empty when unknown (a bundle written before
        they were kept). Calibrators start from them (``WindowCalibrator.start_from``)."""
        ...

    @property
    def memory_seed(self) -> MemorySeed | None:
        """The training windows every key's memory starts from (``calibration.memory``); None
        for a bundle written before they were kept (the run loop then runs without a memory)."""
        ...

    def fit(self, windows: NDArray[np.floating]) -> Self: ...

    def fit_kinds(self, windows: NDArray[np.floating], kinds: KindLabels) -> Self:
        """Learn anomaly kinds from (n, D) anomalous windows and their (n,) kind names; the
        scores do not change (``detectors.kinds``)."""
        ...

    def score(self, windows: NDArray[np.floating]) -> Scores: ...

    def save(self, path: Path, name: str | None = None) -> str: ...

    @classmethod
    def load(
        cls, path: Path, expected_window: int | None = None, device: DevicePreference = "auto"
    ) -> Self: ...


def as_windows(windows: NDArray[np.floating], expected_width: int | None = None) -> FloatArray:
    """Validate (n, D) finite windows and return them as contiguous float32."""
    array = np.ascontiguousarray(windows, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"windows must be a 2-D array (n, D); got shape {array.shape}")
    if expected_width is not None and array.shape[1] != expected_width:
        raise ValueError(
            f"windows have {array.shape[1]} features; the detector expects {expected_width}"
        )
    if not np.isfinite(array).all():
        bad = int(np.flatnonzero(~np.isfinite(array).all(axis=1))[0])
        raise ValueError(f"window {bad} holds a NaN or infinite value")
    return array
