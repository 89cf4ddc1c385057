"""Extreme-value thresholds: SPOT and DSPOT, after Siffer et al., "Anomaly Detection in Streams
with Extreme Value Theory", KDD 2017.

Ask for a false-alarm probability (``target_rate``, e.g. 1e-4: one false alarm per 10,000
windows) instead of a quantile. Past ``t``, the ``init_level`` quantile of an entity's window of
accepted scores, the excesses are fitted with a generalised Pareto distribution (by
probability-weighted moments, in closed form), which gives the threshold a normal score exceeds
with probability ``target_rate`` (the paper's equation 1):

    z = t + sigma / xi * ((target_rate * n / N_t) ** -xi - 1)     (t - sigma * ln(...) as xi → 0)

with ``n`` scores seen and ``N_t`` peaks over ``t``. Flagged scores are never learned but count
as peaks censored where they were flagged (the threshold in force then), only as many as the
normal tail explains (``_tail_allowance``). ``Dspot`` applies the same to residuals from the
mean of the ``depth`` previous accepted scores. The same fit gives each score its surprise,
``-log10 P(score >= s)``. A fitted shape below 0 (a tail that ends) is replaced by an
exponential tail (``xi = 0``), so a short warm-up's light tail is never extrapolated to a
threshold at its own largest scores.

Reasoning, departures from the paper and measurements: docs/calibration.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from calibration import surprise
from calibration.errors import CalibrationError
from calibration.window import Censored, Fit, WindowCalibrator, sorted_quantile

MIN_PEAKS = 10
"""Fewer peaks than this give no fit: the entity keeps its threshold (or has none yet)."""

WANTED_PEAKS = 12
"""A window too short to hold this many scores over ``init_level`` is fitted from a lower
level, so a short warm-up or a model's few held-out scores still give a threshold."""

LOWEST_INIT_LEVEL = 0.8
"""The level is never lowered below this: a window needs ``MIN_PEAKS / (1 - 0.8)`` = 50 scores
for a first fit (``first_fit_after``)."""

IMPUTED_SHAPE_LIMIT = 0.5
"""The largest shape a censored peak's imputed excess is computed with (see ``impute``)."""


def fit_gpd(excesses: NDArray[np.float64]) -> tuple[float, float]:
    """Shape ``xi`` and scale ``sigma`` of a generalised Pareto distribution fitted to (m,)
    positive excesses by probability-weighted moments (Hosking & Wallis 1987). The shape is
    always below 1 (``a1 > 0``), but its estimate has infinite variance from 1/2 up."""
    return fit_sorted(np.sort(excesses))


def fit_sorted(ordered: NDArray[np.float64]) -> tuple[float, float]:
    """``fit_gpd`` for excesses (m,) already in ascending order."""
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


def exponential_scale(excesses: NDArray[np.float64], cuts: NDArray[np.float64]) -> float:
    """The scale of an exponential tail (shape 0) fitted to (m,) positive ``excesses`` and (f,)
    peaks censored at ``cuts`` (known only to exceed them): the censored maximum likelihood,
    all excess over every peak per uncensored one.

    A fitted shape below 0 says the tail ends; fitted on a few dozen peaks of one warm-up it
    says so too soon, and the threshold extrapolated from it sits at that warm-up's largest
    scores (the demo's feed with the memory on: 1.16 against later normal scores up to 1.9).
    The exponential tail lies above every lighter one, so the threshold is never below what
    the target rate asks (docs/calibration.md, "Light tails")."""
    return float((excesses.sum() + np.maximum(cuts, 0.0).sum()) / len(excesses))


def impute(cuts: NDArray[np.float64], xi: float, sigma: float) -> NDArray[np.float64]:
    """Expected excesses (f,) of censored peaks known only to exceed ``cuts`` (f,) (excesses of
    their censoring points over ``t``; negative ones count as 0) under a GPD: the cut plus the
    mean residual life ``(sigma + xi * cut) / (1 - xi)``, with ``xi`` at most
    ``IMPUTED_SHAPE_LIMIT``. Past 1/2 the fitted shape is noise (infinite-variance estimate) and
    ``1 / (1 - xi)`` amplifies it without bound; capped, an imputed excess stays below
    ``3 * cut + 2 * sigma``."""
    shape = min(xi, IMPUTED_SHAPE_LIMIT)
    cuts = np.maximum(cuts, 0.0)
    return cuts + np.maximum(sigma + shape * cuts, 0.0) / (1.0 - shape)


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
        adapt_after: int = 0,
    ) -> None:
        if not 0.0 < target_rate < 1.0 - init_level:
            raise CalibrationError(
                f"target_rate ({target_rate}) must be positive and below 1 - init_level "
                f"({1.0 - init_level:g}): SPOT extrapolates beyond the initial threshold"
            )
        self.target_rate, self.init_level = target_rate, init_level
        super().__init__(
            window=window, warmup=warmup, refresh=refresh, per_key=per_key, adapt_after=adapt_after
        )

    def params(self) -> dict[str, Any]:
        return {"target_rate": self.target_rate, "init_level": self.init_level, **super().params()}

    def base_level(self, accepted: int) -> float:
        """The level of the initial threshold ``t`` for a window of ``accepted`` scores:
        ``init_level``, lowered (to ``LOWEST_INIT_LEVEL`` at most) for a window too short to hold
        ``WANTED_PEAKS`` above it. From 600 scores on (at 0.98) it is ``init_level``."""
        return min(self.init_level, max(LOWEST_INIT_LEVEL, 1.0 - WANTED_PEAKS / accepted))

    def censor_capacity(self) -> int:
        """Enough censoring points for every flagged score the normal tail may explain: the
        ``f = allowance(target_rate * (window + f))`` of a full window (at most ``window``)."""
        kept = 0
        while kept < self.window:
            wanted = _tail_allowance(self.target_rate * (self.window + kept))
            if wanted <= kept:
                break
            kept = wanted
        return min(kept, self.window)

    def threshold_from(
        self, window: NDArray[np.float64], seen: int, current: float, censored: Censored
    ) -> Fit | None:
        return self._tail_fit(np.sort(window), seen, censored.at, 0.0)

    def _tail_fit(
        self, ordered: NDArray[np.float64], seen: int, cuts: NDArray[np.float64], shift: float
    ) -> Fit | None:
        """Threshold and surprise model from accepted ``ordered`` (k,), ascending, out of
        ``seen`` scores, the flagged ones censored at ``cuts`` (f,) (those kept), all relative
        to ``shift`` (DSPOT's local mean; 0 for SPOT). None: too few peaks to fit.

        Each flagged score counted as a peak is imputed beyond the threshold that was in force
        when it was flagged, never beyond the current one: censoring every flagged score at the
        latest threshold fed each refresh's threshold into the next one's imputations, and with a
        heavy fitted tail that loop ratcheted the threshold up geometrically for as long as the
        flagged scores stayed in the window (5.8 → 9,593 on a SKAB series; see
        docs/calibration.md)."""
        k = len(ordered)
        counted = self._counted(seen - k, k, seen, cuts)
        seen = k + len(counted)
        level = min(self.base_level(k) * seen / k, 1.0)
        initial = sorted_quantile(ordered, level)
        excesses = ordered[np.searchsorted(ordered, initial, side="right") :] - initial
        if len(excesses) < MIN_PEAKS:
            return None
        xi, sigma = fit_sorted(excesses)
        if len(counted):
            imputed = impute(counted - initial, xi, sigma)
            xi, sigma = fit_gpd(np.concatenate([excesses, imputed]))
        if xi < 0.0:
            xi, sigma = 0.0, exponential_scale(excesses, counted - initial)
        peaks = len(excesses) + len(counted)
        threshold = gpd_threshold(initial, xi, sigma, self.target_rate, seen, peaks)
        knots, shares = surprise.body(
            ordered, len(counted), seen, peaks / seen, initial, surprise.KNOTS - 1
        )
        tail = np.array([initial, xi, sigma, -np.log10(peaks / seen), shift, np.nan])
        model = surprise.model(
            np.append(knots, initial), -np.log10(np.append(shares, peaks / seen)), tail
        )
        return Fit(shift + threshold, model)

    def _counted(
        self, flagged: int, accepted: int, seen: int, cuts: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """The censoring points (ascending) of the flagged scores that count as censored peaks,
        of ``flagged`` among ``seen`` (``accepted`` accepted) with kept censoring points
        ``cuts``.

        When more scores were flagged than the normal tail can account for (``_tail_allowance``
        of the ``target_rate * seen`` expected), they are an anomaly, not the tail: only the
        normal exceedances expected among the accepted scores, ``target_rate * accepted /
        (1 - target_rate)`` (not among all ``seen``, which would grow with the anomaly's
        length), count, at the lowest censoring points; the rest count for nothing. So do
        flagged scores whose censoring point was not kept (restored from an older snapshot)."""
        if flagged <= _tail_allowance(self.target_rate * seen):
            wanted = flagged
        else:
            wanted = round(self.target_rate * accepted / (1.0 - self.target_rate))
        return np.sort(cuts)[: min(wanted, len(cuts))]


def first_fit_after() -> int:
    """The fewest accepted scores SPOT and DSPOT fit a threshold from: ``MIN_PEAKS`` above
    ``LOWEST_INIT_LEVEL``."""
    return int(np.ceil(MIN_PEAKS / (1.0 - LOWEST_INIT_LEVEL) - 1e-9))


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

    def threshold_from(
        self, window: NDArray[np.float64], seen: int, current: float, censored: Censored
    ) -> Fit | None:
        """SPOT on the residuals; a flagged score is censored at the threshold it exceeded less
        the mean of the ``depth`` accepted scores before it (the first ``depth`` when fewer
        remain in the window), and the model's shift is the mean of the last ``depth``."""
        if len(window) <= self.depth:
            return None
        sums = np.cumsum(np.concatenate(([0.0], window)))
        local_means = (sums[self.depth : -1] - sums[: -self.depth - 1]) / self.depth
        residuals = window[self.depth :] - local_means
        level_now = float(window[-self.depth :].mean())
        after = censored.after if censored.after is not None else np.zeros(len(censored.at))
        before = np.clip(after, self.depth, len(window)).astype(np.int64)
        cuts = censored.at - (sums[before] - sums[before - self.depth]) / self.depth
        residual_seen = max(seen - self.depth, len(residuals))
        return self._tail_fit(np.sort(residuals), residual_seen, cuts, level_now)
