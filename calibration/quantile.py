"""The rolling-quantile calibrator: the threshold is the ``quantile`` of the recent scores,
computed exactly (``numpy.quantile``, linear interpolation) on the last ``window`` accepted scores,
not on a sketch that drifts. The shared machinery (windows, refresh blocks, per-key routing,
snapshots) is in ``calibration.window``.

Flagged scores never enter the window, which censors it at the threshold: a plain ``quantile`` of
the accepted scores then sits below the threshold, and every refresh ratchets it lower (measured:
46% of a stationary exponential stream flagged at q = 0.95). So the level is corrected for what
was left out: with ``p`` the accepted share of the scores seen since the window's oldest entry,
the threshold is the window's ``q / p`` quantile. For a stationary stream that is the plain
q-quantile of all scores. When ``q / p`` reaches 1 (more flagged than ``1 - q`` allows, as in an
anomaly burst) the threshold stays where it is: it is neither raised by the anomalies nor lowered
by their absence from the window.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from calibration.errors import CalibrationError
from calibration.window import WindowCalibrator


class RollingQuantile(WindowCalibrator):
    """Exact rolling quantile of accepted scores, globally or per key."""

    method = "quantile"

    def __init__(
        self,
        quantile: float = 0.999,
        window: int = 10_000,
        warmup: int = 1_000,
        refresh: int = 256,
        per_key: bool = False,
    ) -> None:
        if not 0.0 < quantile < 1.0:
            raise CalibrationError(f"quantile must be inside (0, 1), not {quantile}")
        self.quantile = quantile
        super().__init__(window=window, warmup=warmup, refresh=refresh, per_key=per_key)

    def params(self) -> dict[str, Any]:
        return {"quantile": self.quantile, **super().params()}

    def threshold_from(self, window: NDArray[np.float64], seen: int, current: float) -> float:
        level = self.quantile / min(len(window) / seen, 1.0)
        if level < 1.0:
            return float(np.quantile(window, level))
        return float(window.max()) if np.isnan(current) else current
