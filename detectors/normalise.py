"""Putting the two reconstruction errors on one scale before they are combined.

AE1's error (on D scaled features) and AE2's (on AE1's latent code) live on unrelated scales, and
both are skewed, heavy-tailed positive numbers. Each is therefore normalised against its own
distribution on held-out training windows:

    z_k = (ln(e_k + floor_k) - median_k) / (1.4826 * MAD_k)

where median and MAD are those of ``ln(e_k + floor_k)`` on the held-out windows (1.4826 makes the
MAD a standard deviation for normal data) and ``floor_k`` is 1e-6 times the held-out median error,
so a perfect reconstruction cannot send the log to minus infinity. On held-out normal windows each
``z_k`` is roughly centred on 0 with unit spread, whatever the raw scale.

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
from scipy.special import log_ndtr

MAD_TO_SIGMA = 1.4826
RULE = (
    "z = (ln(e + floor) - median) / (1.4826 * MAD) on held-out windows; "
    "part = w * -log10 P(Z > z), Z standard normal; score = sum of parts"
)


@dataclass(frozen=True)
class LogRobustNormaliser:
    """The normalisation of one error, fitted on its held-out values."""

    floor: float
    median: float
    mad: float

    @classmethod
    def fit(cls, errors: NDArray[np.floating]) -> LogRobustNormaliser:
        """Fit on (n,) held-out raw errors (non-negative)."""
        values = np.asarray(errors, dtype=np.float64)
        floor = max(float(np.median(values)) * 1e-6, float(np.finfo(np.float32).tiny))
        logs = np.log(values + floor)
        median = float(np.median(logs))
        mad = float(np.median(np.abs(logs - median)))
        return cls(floor=floor, median=median, mad=max(mad, 1e-6))

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
