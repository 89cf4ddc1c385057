"""Per-feature scaling fitted on training windows and stored with the model.

``robust`` (the default) centres each feature on its median and divides by its interquartile
range, so the fat tails of market data do not set the scale; ``standard`` uses mean and standard
deviation; ``none`` passes values as they are (a fused ``.keras`` autoencoder scales its own).
A feature that never varies in training gets scale 1 rather than a division by zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

ScalerMethod = Literal["robust", "standard", "none"]


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
