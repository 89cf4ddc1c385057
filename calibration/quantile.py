"""The rolling-quantile calibrator: the threshold is the ``quantile`` of the recent scores,
computed exactly (``numpy.quantile``'s linear interpolation) on the last ``window`` accepted
scores, not on a sketch that drifts. The shared machinery (windows, refresh blocks, per-key
routing, snapshots) is in ``calibration.window``.

Flagged scores never enter the window, which censors it at the threshold: a plain ``quantile`` of
the accepted scores then sits below the threshold, and every refresh ratchets it lower (measured:
46% of a stationary exponential stream flagged at q = 0.95). So the level is corrected for what
was left out: with ``p`` the accepted share of the scores seen since the window's oldest entry,
the threshold is the window's ``q / p`` quantile. For a stationary stream that is the plain
q-quantile of all scores. When ``q / p`` reaches 1 (more flagged than ``1 - q`` allows, as in an
anomaly burst) the threshold stays where it is: it is neither raised by the anomalies nor lowered
by their absence from the window.

Surprise is the empirical exceedance of the scores seen since the window's oldest entry,
``P(score >= s)``, with the same correction: up to the threshold the flagged scores count as
above ``s``; floored at ``1 / (window + 1)`` (every score above the window's maximum). So the
surprise at the threshold is ``-log10(1 - q)``. It is refitted with the threshold, and held with
it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from calibration import surprise
from calibration.errors import CalibrationError
from calibration.window import Censored, Fit, WindowCalibrator, sorted_quantile


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
        adapt_after: int = 0,
    ) -> None:
        if not 0.0 < quantile < 1.0:
            raise CalibrationError(f"quantile must be inside (0, 1), not {quantile}")
        self.quantile = quantile
        super().__init__(
            window=window, warmup=warmup, refresh=refresh, per_key=per_key, adapt_after=adapt_after
        )

    def params(self) -> dict[str, Any]:
        return {"quantile": self.quantile, **super().params()}

    def threshold_from(
        self, window: NDArray[np.float64], seen: int, current: float, censored: Censored
    ) -> Fit | None:
        """The corrected quantile, and the window's exceedance as the surprise model; both
        held (None) when the level reaches 1."""
        level = self.quantile / min(len(window) / seen, 1.0)
        if level >= 1.0 and not np.isnan(current):
            return None
        ordered = np.sort(window)
        threshold = sorted_quantile(ordered, level) if level < 1.0 else float(ordered[-1])
        return Fit(threshold, self._model(ordered, max(seen, len(window)), threshold))

    def _model(self, ordered: NDArray[np.float64], seen: int, threshold: float) -> surprise.Model:
        """The exceedance of ``seen`` scores from the sorted accepted ones (k,): a score at or
        below ``threshold`` is exceeded by the window's scores at or above it and by every
        flagged one (``seen - k``, censored there, as the threshold's level assumes); one
        above it by the window's alone; floored at ``1 / (window + 1)``, the surprise of every
        score above the window's maximum."""
        k, flagged = len(ordered), seen - len(ordered)
        split = int(np.searchsorted(ordered, threshold, side="left"))
        at_threshold = (k - split + flagged) / seen
        low, low_shares = surprise.body(
            ordered, flagged, seen, at_threshold, threshold, surprise.KNOTS - 1 - _ABOVE
        )
        above = ordered[np.searchsorted(ordered, threshold, side="right") :]
        picks = np.linspace(0, max(len(above) - 1, 0), _ABOVE).astype(np.int64)
        high = np.unique(above[picks]) if len(above) else above
        high_share = (k - np.searchsorted(ordered, high, side="left")) / seen
        knots = np.concatenate([low, [threshold], high])
        shares = np.concatenate([low_shares, [at_threshold], high_share])
        ceiling = float(np.log10(self.window + 1.0))
        decades = np.minimum(-np.log10(shares), ceiling)
        tail = np.full(surprise.TAIL_FIELDS, np.nan)
        tail[surprise.START], tail[surprise.DECADES] = knots[-1], decades[-1]
        tail[surprise.SHIFT], tail[surprise.CEILING] = 0.0, ceiling
        return surprise.model(knots, decades, tail)


_ABOVE = 4
"""Knots for the accepted scores above the threshold (accepted when it stood higher)."""
