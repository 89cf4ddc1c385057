"""The rolling-quantile calibrator: the threshold is the ``quantile`` of the recent scores,
computed exactly (``numpy.quantile``, linear interpolation) on the last ``window`` accepted scores,
not on a sketch that drifts.

No threshold until ``warmup`` scores have been accepted. Flagged scores never enter the window, so
an anomaly burst cannot raise its own threshold. Leaving them out censors the window at the
threshold, though: a plain ``quantile`` of the accepted scores then sits below the threshold, and
every refresh ratchets it lower (measured: 46% of a stationary exponential stream flagged at
q = 0.95). So the level is corrected for what was left out: with ``p`` the accepted share of the
scores seen since the window's oldest entry, the threshold is the window's ``q / p`` quantile. For
a stationary stream that is the plain q-quantile of all scores. When ``q / p`` reaches 1 (more
flagged than ``1 - q`` allows, as in an anomaly burst) the threshold stays where it is: it is
neither raised by the anomalies nor lowered by their absence from the window.
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np
from numpy.typing import NDArray

from calibration import state
from calibration.errors import CalibrationError
from calibration.keyed import KeyedCalibrator, ThresholdState


class WindowState(ThresholdState):
    """The last ``size`` accepted scores of one entity in a ring buffer (order is irrelevant to a
    quantile), how many it has accepted and seen, and the threshold in force."""

    def __init__(self, quantile: float, size: int, warmup: int) -> None:
        self.quantile, self.size, self.warmup = quantile, size, warmup
        self.values = np.empty(size, dtype=np.float64)
        self.seen_at = np.empty(size, dtype=np.float64)
        self.filled = 0
        self.next = 0
        self.accepted = 0
        self.seen = 0
        self.threshold = float("nan")

    def learn(self, accepted: NDArray[np.float64], arrivals: NDArray[np.float64]) -> None:
        k = len(accepted)
        if k == 0:
            return
        if k >= self.size:
            self.values[:] = accepted[-self.size :]
            self.seen_at[:] = arrivals[-self.size :]
            self.next, self.filled = 0, self.size
        else:
            slots = (self.next + np.arange(k)) % self.size
            self.values[slots] = accepted
            self.seen_at[slots] = arrivals
            self.next = (self.next + k) % self.size
            self.filled = min(self.filled + k, self.size)
        self.accepted += k

    def refresh(self) -> None:
        if self.accepted < self.warmup or not self.filled:
            return
        level = self.level()
        if level < 1.0:
            self.threshold = float(np.quantile(self.values[: self.filled], level))
        elif np.isnan(self.threshold):
            self.threshold = float(self.values[: self.filled].max())

    def level(self) -> float:
        """The quantile level on the accepted window that matches ``quantile`` of all scores.

        1 or more means more scores were flagged than ``1 - quantile`` allows: the scores above
        the threshold are unknown (left out), so the threshold stays where it is.
        """
        oldest = self.next if self.filled == self.size else 0
        span = self.seen - self.seen_at[oldest]
        accepted_share = min(self.filled / span, 1.0) if span > 0 else 1.0
        return self.quantile / accepted_share

    def window(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """The accepted scores in the window and the seen count at their arrival, oldest first."""
        if self.filled < self.size:
            return self.values[: self.filled].copy(), self.seen_at[: self.filled].copy()
        return np.roll(self.values, -self.next), np.roll(self.seen_at, -self.next)

    def to_fields(self) -> state.StateFields:
        values, seen_at = self.window()
        counts = [self.accepted, self.seen, self.threshold]
        return {"window": values, "seen_at": seen_at, "counts": np.array(counts, dtype=np.float64)}

    @classmethod
    def from_fields(cls, fields: state.StateFields, params: dict[str, Any]) -> Self:
        restored = cls(params["quantile"], params["window"], params["warmup"])
        values, seen_at = fields["window"][-restored.size :], fields["seen_at"][-restored.size :]
        restored.values[: len(values)], restored.seen_at[: len(values)] = values, seen_at
        restored.filled = len(values)
        restored.next = len(values) % restored.size
        accepted, seen, threshold = fields["counts"]
        restored.accepted, restored.seen, restored.threshold = int(accepted), int(seen), threshold
        return restored


class RollingQuantile(KeyedCalibrator):
    """Exact rolling quantile of accepted scores, globally or per key (see ``calibration.keyed``).

    ``refresh`` is how many scores an entity sees between threshold recomputations; 1 recomputes
    after every score.
    """

    method = "quantile"

    def __init__(
        self,
        quantile: float = 0.999,
        window: int = 10_000,
        warmup: int = 1_000,
        refresh: int = 64,
        per_key: bool = False,
    ) -> None:
        if not 0.0 < quantile < 1.0:
            raise CalibrationError(f"quantile must be inside (0, 1), not {quantile}")
        if not 1 <= warmup <= window:
            raise CalibrationError(f"warmup ({warmup}) must be between 1 and window ({window})")
        self.quantile, self.window, self.warmup = quantile, window, warmup
        super().__init__(refresh=refresh, per_key=per_key)

    def new_state(self) -> WindowState:
        return WindowState(self.quantile, self.window, self.warmup)

    def params(self) -> dict[str, Any]:
        return {"quantile": self.quantile, "window": self.window, "warmup": self.warmup}

    def state_class(self) -> type[WindowState]:
        return WindowState
