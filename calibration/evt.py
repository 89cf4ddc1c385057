"""Extreme-value thresholds: SPOT and DSPOT, after Siffer et al., "Anomaly Detection in Streams
with Extreme Value Theory", KDD 2017.

Ask for a false-alarm probability (``target_rate``, e.g. 1e-4: one false alarm per 10,000
windows) instead of a quantile. Past ``t``, the ``init_level`` quantile of an entity's window of
accepted scores, the excesses are fitted with a generalised Pareto distribution (by
probability-weighted moments, in closed form), which gives the threshold a normal score exceeds
with probability ``target_rate`` (the paper's equation 1):

    z = t + sigma / xi * ((target_rate * n / N_t) ** -xi - 1)     (t - sigma * ln(...) as xi → 0)

with ``n`` scores seen and ``N_t`` peaks over ``t``. Flagged scores are never learned but count
as censored peaks, only as many as the normal tail explains (``_tail_allowance``). ``Dspot``
applies the same to residuals from the mean of the ``depth`` previous accepted scores.

Reasoning, departures from the paper and measurements: docs/calibration.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from calibration.errors import CalibrationError
from calibration.window import WindowCalibrator

MIN_PEAKS = 10
"""Fewer peaks than this give no fit: the entity keeps its threshold (or has none yet)."""


def fit_gpd(excesses: NDArray[np.float64]) -> tuple[float, float]:
    """Shape ``xi`` and scale ``sigma`` of a generalised Pareto distribution fitted to (m,)
    positive excesses by probability-weighted moments (Hosking & Wallis 1987)."""
    ordered = np.sort(excesses)
    m = len(ordered)
    plotting = (np.arange(1, m + 1) - 0.35) / m
    a0 = float(ordered.mean())
    a1 = float(np.mean((1.0 - plotting) * ordered))
    denominator = a0 - 2.0 * a1
    if denominator <= 0 or a0 <= 0:
        return 0.0, max(a0, np.finfo(float).tiny)
    return 2.0 - a0 / denominator, 2.0 * a0 * a1 / denominator


def gpd_threshold(
    initial: float, xi: float, sigma: float, target_rate: float, seen: int, peaks: int
) -> float:
    """The score exceeded with probability ``target_rate`` (Siffer et al., equation 1)."""
    ratio = target_rate * seen / peaks
    if abs(xi) < 1e-9:
        return initial - sigma * float(np.log(ratio))
    return float(initial + sigma / xi * (ratio ** (-xi) - 1.0))


class Spot(WindowCalibrator):
    """SPOT: extreme-value threshold for a target false-alarm rate, globally or per key."""

    method = "spot"

    def __init__(
        self,
        target_rate: float = 1e-4,
        init_level: float = 0.98,
        window: int = 10_000,
        warmup: int = 1_000,
        refresh: int = 256,
        per_key: bool = False,
    ) -> None:
        if not 0.0 < target_rate < 1.0 - init_level:
            raise CalibrationError(
                f"target_rate ({target_rate}) must be positive and below 1 - init_level "
                f"({1.0 - init_level:g}): SPOT extrapolates beyond the initial threshold"
            )
        self.target_rate, self.init_level = target_rate, init_level
        super().__init__(window=window, warmup=warmup, refresh=refresh, per_key=per_key)

    def params(self) -> dict[str, Any]:
        return {"target_rate": self.target_rate, "init_level": self.init_level, **super().params()}

    def threshold_from(self, window: NDArray[np.float64], seen: int, current: float) -> float:
        return self._evt_threshold(window, seen, current)

    def _evt_threshold(self, values: NDArray[np.float64], seen: int, current: float) -> float:
        """Threshold from accepted ``values`` (k,) out of ``seen`` scores; ``current`` is where
        the flagged ``seen - k`` were censored (NaN: none were).

        When more scores were flagged than the normal tail can account for (``_tail_allowance``
        of the ``target_rate * seen`` expected), they are an anomaly, not the tail: only the
        expected number are treated as censored peaks, and the rest count for nothing. Imputing
        every one of a long anomaly (a level shift, a frozen sensor: hundreds of flagged
        windows) made the fitted tail heavier at each refresh and ratcheted the threshold up by
        orders of magnitude, hiding the anomalies after it."""
        flagged = seen - len(values)
        expected = self.target_rate * seen
        explained = (
            flagged if flagged <= _tail_allowance(expected) else min(flagged, round(expected))
        )
        seen -= flagged - explained
        flagged = explained
        level = min(self.init_level * seen / len(values), 1.0)
        initial = float(np.quantile(values, level))
        excesses = values[values > initial] - initial
        if len(excesses) < MIN_PEAKS:
            return current
        xi, sigma = fit_gpd(excesses)
        if flagged and not np.isnan(current) and current > initial:
            cut = current - initial
            beyond = cut + (sigma + xi * cut) / (1.0 - xi) if xi < 1.0 else 2.0 * cut
            xi, sigma = fit_gpd(np.concatenate([excesses, np.full(flagged, beyond)]))
        return gpd_threshold(initial, xi, sigma, self.target_rate, seen, len(excesses) + flagged)


def _tail_allowance(expected: float) -> int:
    """The most flagged scores the normal tail accounts for when ``expected`` are expected: a
    generous Poisson bound (2e + 4 sqrt(e) + 4; a stationary stream exceeds it with probability
    below 1e-8), so chance clusters of normal exceedances all count as censored peaks (dropping
    some lowered the threshold: 2.2 times the target rate, measured with a bound of 2e)."""
    return int(np.ceil(2.0 * expected + 4.0 * np.sqrt(expected) + 4.0))


class Dspot(Spot):
    """DSPOT: SPOT on residuals from the mean of the ``depth`` previous accepted scores."""

    method = "dspot"
    needs_order = True

    def __init__(self, depth: int = 50, **spot: Any) -> None:
        if depth < 1:
            raise CalibrationError(f"depth must be at least 1, not {depth}")
        self.depth = depth
        super().__init__(**spot)
        if self.warmup <= depth:
            raise CalibrationError(f"warmup ({self.warmup}) must exceed depth ({depth})")

    def params(self) -> dict[str, Any]:
        return {"depth": self.depth, **super().params()}

    def threshold_from(self, window: NDArray[np.float64], seen: int, current: float) -> float:
        if len(window) <= self.depth:
            return current
        sums = np.cumsum(np.concatenate(([0.0], window)))
        local_means = (sums[self.depth : -1] - sums[: -self.depth - 1]) / self.depth
        residuals = window[self.depth :] - local_means
        level_now = float(window[-self.depth :].mean())
        residual_seen = max(seen - self.depth, len(residuals))
        censored_at = current - level_now if not np.isnan(current) else np.nan
        threshold = self._evt_threshold(residuals, residual_seen, censored_at)
        return current if np.isnan(threshold) else level_now + threshold
