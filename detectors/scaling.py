"""Per-feature scaling fitted on training windows and stored with the model.

``robust`` (the default) centres each feature on its median and divides by its interquartile
range, so the fat tails of market data do not set the scale; ``standard`` uses mean and standard
deviation; ``none`` passes values as they are (a fused ``.keras`` autoencoder scales its own).

Either spread is floored at the feature's resolution (``resolution``), the finest scale its
training values can resolve: a feature that rests on one value and moves in steps gets a scale of
the order of its step, not of the jitter around its resting value, which would send each step to
thousands. An ordinary continuous feature's floor lies below its interquartile range, so its scale
is unchanged. A feature that never varies in training gets scale 1. The reasoning and measured
effects: docs/floors.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

ScalerMethod = Literal["robust", "standard", "none"]

LEVEL_SHARE = 0.1
"""A jump between levels counts when at least this share of the values lies on each side."""
JUMP_FRACTION = 0.25
"""The share of a jump between levels the scale is at least: a level switch scales to about 4."""
MOVE_FRACTION = 0.5
"""The share of a typical move off the resting value the scale is at least: a move scales to 2."""


@dataclass(frozen=True)
class FeatureScaler:
    """``(x - center) / scale`` per feature; ``center`` and ``scale`` have shape (D,)."""

    method: ScalerMethod
    center: NDArray[np.float32]
    scale: NDArray[np.float32]

    @classmethod
    def fit(cls, windows: NDArray[np.float32], method: ScalerMethod = "robust") -> FeatureScaler:
        """Fit on (n, D) training windows."""
        data = np.asarray(windows, dtype=np.float64)
        if method == "none":
            width = data.shape[1]
            return cls(method, np.zeros(width, np.float32), np.ones(width, np.float32))
        if method == "robust":
            q25, center, q75 = np.quantile(data, [0.25, 0.5, 0.75], axis=0)
            spread = q75 - q25
        else:
            center, spread = data.mean(axis=0), data.std(axis=0)
        spread = np.maximum(spread, resolution(data))
        tiny = np.finfo(np.float32).eps * np.maximum(1.0, np.abs(center))
        scale = np.where(spread > tiny, spread, 1.0)
        return cls(method, center.astype(np.float32), scale.astype(np.float32))

    def transform(self, windows: NDArray[np.float32]) -> NDArray[np.float32]:
        """(n, D) raw → (n, D) scaled, float32."""
        return ((windows - self.center) / self.scale).astype(np.float32, copy=False)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "center": self.center.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureScaler:
        return cls(
            data["method"],
            np.asarray(data["center"], dtype=np.float32),
            np.asarray(data["scale"], dtype=np.float32),
        )


def resolution(data: NDArray[np.float64]) -> NDArray[np.float64]:
    """(n, D) training values → (D,) the finest scale each feature's values resolve, the floor
    of its spread: the largest of

    - its step: the smallest positive gap between its sorted values (a quantised feature's
      quantum; an interquartile range below it is an artefact of interpolating quantiles);
    - a quarter of its jump: the widest gap between consecutive sorted values with at least
      ``LEVEL_SHARE`` of the values on each side (a feature switching between levels: SKAB's
      flow rate rests on 32 and steps by 1.0, its interquartile range is the jitter, 0.001);
    - half of its move: the median distance from the median of the values not on it (a feature
      that rests on one value and moves now and then, by whatever size).

    All three are 0 for a feature that never varies. For continuous values the step and the jump
    are spacings, of order IQR·log(n)/n, and the move is the median absolute deviation, never
    above the IQR, so the floor stays below the IQR.
    """
    ordered = np.sort(data, axis=0)
    gaps = np.diff(ordered, axis=0)
    floor: NDArray[np.float64] = np.maximum(
        np.maximum(_step(gaps), JUMP_FRACTION * _jump(gaps)), MOVE_FRACTION * _move(data, ordered)
    )
    return floor


def _step(gaps: NDArray[np.float64]) -> NDArray[np.float64]:
    """(n-1, D) gaps between sorted values → (D,) the smallest positive one, 0 when none."""
    positive = np.where(gaps > 0, gaps, np.inf).min(axis=0, initial=np.inf)
    return np.where(np.isfinite(positive), positive, 0.0)


def _jump(gaps: NDArray[np.float64]) -> NDArray[np.float64]:
    """(n-1, D) gaps between sorted values → (D,) the widest with ``LEVEL_SHARE`` of the n
    values on each side: gap i - 1 lies between the i lowest values and the n - i highest."""
    n = len(gaps) + 1
    least = max(int(np.ceil(LEVEL_SHARE * n)), 1)
    widest: NDArray[np.float64] = gaps[least - 1 : n - least].max(axis=0, initial=0.0)
    return widest


def _move(data: NDArray[np.float64], ordered: NDArray[np.float64]) -> NDArray[np.float64]:
    """(n, D) values and the same sorted → (D,) the median of ``|x - median|`` over the values
    not equal to the median, 0 when all are."""
    n = len(ordered)
    median = 0.5 * (ordered[(n - 1) // 2] + ordered[n // 2])
    deviations = np.abs(data - median)
    off = np.where(deviations > 0, deviations, np.nan)
    moved = np.isfinite(off).any(axis=0)
    typical = np.nanmedian(off[:, moved], axis=0)
    result = np.zeros(data.shape[1])
    result[moved] = typical
    return result
