"""Putting the two reconstruction errors on one scale before they are combined.

AE1's error (on D scaled features) and AE2's (on AE1's latent code) live on unrelated scales, and
both are skewed, heavy-tailed positive numbers. Each is therefore normalised against its own
distribution on held-out training windows:

    z_k = (ln(e_k + floor_k) - median_k) / (1.4826 * MAD_k)

where median and MAD are those of ``ln(e_k + floor_k)`` on the held-out windows (1.4826 makes the
MAD a standard deviation for normal data). On held-out normal windows each ``z_k`` is roughly
centred on 0 with unit spread, whatever the raw scale.

Both floors come from the held-out errors themselves, never from a constant the data can dwarf.
``floor_k`` (``error_floor``) is 1e-6 times the held-out median error, or the smallest positive
error when most windows are reconstructed exactly, so a perfect reconstruction cannot send the
log to minus infinity. The MAD is floored at the spread the held-out upper tail implies
(``tail_spread``), and where every held-out error is equal at ``flat_spread``. Flat, square-wave or
mostly perfect held-out errors have a MAD of 0, and the former constant floor of 1e-6 sent every
later window of such a series to 1e13 decades; see docs/floors.md.

Each ``z_k`` then becomes tail decades, ``d_k = -log10 P(Z > z_k)`` for a standard normal Z, and
the score is ``w_1 d_1 + w_2 d_2`` (weights from the spec, stored in the bundle). With unit
weights this is Fisher's combination of the two tail probabilities, in decades: a score of 6 is
as rare as one in a million held-out windows would be. Decades rather than a sum of z-scores
because an error that is unremarkable (or lower than usual) adds almost nothing, so one stage's
noise does not drown the other's alarm: a window that AE1 reconstructs well but whose code AE2
finds unusual still scores high through ``d_2``, and the reverse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from keras import ops
from numpy.typing import NDArray
from scipy.special import log_ndtr, ndtri

MAD_TO_SIGMA = 1.4826
RULE = (
    "z = (ln(e + floor) - median) / (1.4826 * mad) on held-out windows, mad at least what the "
    "held-out upper tail implies; part = w * -log10 P(Z > z), Z standard normal; "
    "score = sum of parts"
)
ERROR_FLOOR_SHARE = 1e-6
"""``floor`` as a share of the held-out median error, when that is positive."""
TAIL_CHECKS = ((0.9, 1.2815516), (0.99, 2.3263479))
"""Held-out quantiles of the log error, each with its standard normal z-score."""
TAIL_SLACK = 2.0
"""A checked held-out quantile may score at most this many times its normal z-score."""
FLAT_SPREAD = 1e-4
"""Spreads of the log error up to this (nats) are float32 rounding: the errors are all equal."""


@dataclass(frozen=True)
class LogRobustNormaliser:
    """The normalisation of one error, fitted on its held-out values.

    ``floor`` is in the error's units; ``median`` and ``mad`` are in nats of ``ln(e + floor)``,
    ``mad`` being the spread: the median absolute deviation or, where that misreads the held-out
    errors, its floor. A bundle stores the three, so a bundle written before the floors were
    derived from the data loads and scores as it did.
    """

    floor: float
    median: float
    mad: float

    @classmethod
    def fit(cls, errors: NDArray[np.floating]) -> LogRobustNormaliser:
        """Fit on (n,) held-out raw errors (non-negative)."""
        values = np.asarray(errors, dtype=np.float64)
        floor = error_floor(values)
        logs = np.log(values + floor)
        median = float(np.median(logs))
        mad = float(np.median(np.abs(logs - median)))
        spread = max(mad, tail_spread(logs, median))
        if spread <= FLAT_SPREAD:
            spread = flat_spread(len(values))
        return cls(floor=floor, median=median, mad=spread)

    def __call__(self, errors: NDArray[np.floating]) -> NDArray[np.float32]:
        """(n,) raw errors → (n,) normalised, float32."""
        logs = np.log(np.asarray(errors, dtype=np.float64) + self.floor)
        return ((logs - self.median) / (MAD_TO_SIGMA * self.mad)).astype(np.float32)

    def op(self, errors: Any) -> Any:
        """The same normalisation as a Keras op on a (B,) tensor, for the compiled graph."""
        logs = ops.log(errors + self.floor)
        return (logs - self.median) / (MAD_TO_SIGMA * self.mad)

    def to_dict(self) -> dict[str, float]:
        return {"floor": self.floor, "median": self.median, "mad": self.mad}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LogRobustNormaliser:
        return cls(floor=float(data["floor"]), median=float(data["median"]), mad=float(data["mad"]))


def error_floor(errors: NDArray[np.float64]) -> float:
    """The error added before the log, from (n,) held-out errors, in their units.

    A millionth of the median error, so a perfect reconstruction cannot send the log to minus
    infinity. When the median is 0 (at least half the held-out windows reconstructed exactly), the
    smallest positive error, the finest the held-out data resolve: a millionth of a typical
    positive error would set perfect windows 14 nats below the rest, a gap the spread then has to
    span, and a window ten times worse than any held-out one would gain little. When every error
    is 0, float32's resolution of a squared error between values of order one (both stages'
    inputs are scaled to that), ``eps**2``, about 1.4e-14.
    """
    tiny = float(np.finfo(np.float32).tiny)
    median = float(np.median(errors))
    if median > 0:
        return max(ERROR_FLOOR_SHARE * median, tiny)
    positive = errors[errors > 0]
    if positive.size:
        return max(float(positive.min()), tiny)
    return float(np.finfo(np.float32).eps) ** 2


def tail_spread(logs: NDArray[np.float64], median: float) -> float:
    """The least spread (nats) at which no ``TAIL_CHECKS`` quantile of the (n,) held-out log
    errors scores above ``TAIL_SLACK`` times its normal z-score.

    For log-normal errors that is half their MAD, so it only binds where the MAD misreads the
    held-out errors: when half or more are equal (a flat or square-wave series, perfect
    reconstructions) the MAD is 0, and every error above them would otherwise claim a rarity that
    n held-out windows cannot show; and when over 1 % of them lie more than 6.9 MADs above the
    median (a heavy upper tail). The held-out 90th and 99th percentiles then score at most 2.3
    and 5.6 decades, a few more than the 1 and 2 they are empirically.
    """
    levels = np.quantile(logs, [level for level, _ in TAIL_CHECKS])
    return max(
        (float(level) - median) / (MAD_TO_SIGMA * TAIL_SLACK * z)
        for level, (_, z) in zip(levels, TAIL_CHECKS, strict=True)
    )


def flat_spread(n: int) -> float:
    """The spread (nats) when all n held-out errors are equal (up to float32 rounding).

    The data then show no spread at all; this one makes an error ten times theirs score
    ``log10(n + 1)`` decades (n at least 2), the rarity n equal values can vouch for, and a
    hundred times theirs about four times that: finite, growing with the departure and with n.
    """
    z = float(ndtri(1.0 - 1.0 / (max(n, 2) + 1)))
    return math.log(10.0) / (MAD_TO_SIGMA * z)


ASYMPTOTIC_FROM = 8.0
"""Above this z the tail is computed from its asymptotic expansion instead of ``erfc``."""


def tail_decades_op(z: Any) -> Any:
    """``-log10 P(Z > z)`` as a Keras op on a float32 tensor, for the compiled graph.

    Up to z = 8 it is ``-log(erfc(z / sqrt 2) / 2)``; beyond, where float32 ``erfc`` heads for
    underflow, the standard asymptotic expansion ``z^2/2 + log z + log(2 pi)/2
    - log(1 - 1/z^2 + 3/z^4 - 15/z^6)`` (its next term is below 1e-5 there). ``tail_decades`` is
    the float64 reference it is tested against.
    """
    near = -ops.log(0.5 * ops.erfc(ops.minimum(z, ASYMPTOTIC_FROM) / math.sqrt(2.0)))
    far_z = ops.maximum(z, ASYMPTOTIC_FROM)
    inverse = 1.0 / ops.square(far_z)
    series = 1.0 - inverse + 3.0 * ops.square(inverse) - 15.0 * inverse * ops.square(inverse)
    far = 0.5 * ops.square(far_z) + ops.log(far_z) + 0.5 * math.log(2 * math.pi) - ops.log(series)
    return ops.where(z > ASYMPTOTIC_FROM, far, near) / math.log(10.0)


def tail_decades(z: NDArray[np.floating]) -> NDArray[np.float32]:
    """(n,) z-scores → (n,) ``-log10 P(Z > z)`` in float64 via scipy; stable far into the tail."""
    decades: NDArray[np.float64] = -log_ndtr(-np.asarray(z, dtype=np.float64)) / np.log(10.0)
    return decades.astype(np.float32)
