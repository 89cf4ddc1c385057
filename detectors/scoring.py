"""Scoring the cascade through one compiled function with fixed batch shapes.

``model.predict`` costs milliseconds of set-up per call; one compiled forward pass over the whole
cascade (both autoencoders and the error arithmetic, fused by XLA) scores a batch in about the time
its arithmetic takes. Batches are padded up to the smallest of a few fixed sizes (``BUCKETS``) and
longer inputs are cut into chunks of the largest, so after one trace per bucket the function never
traces again, whatever batch sizes the stream delivers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np
import structlog
from keras import ops
from numpy.typing import NDArray

from detectors.autoencoder import decoder_of, encoder_of
from detectors.backend import Device, compile_forward

log = structlog.get_logger(__name__)

BUCKETS: tuple[int, ...] = (64, 512, 4096)


@dataclass(frozen=True)
class RawErrors:
    """Per-window raw errors of n scaled windows of D features.

    ``ae1`` (n,) and ``ae2`` (n,): mean squared reconstruction errors of the window and of AE1's
    code; ``squared`` (n, D): AE1's squared error per feature.
    """

    ae1: NDArray[np.float32]
    ae2: NDArray[np.float32]
    squared: NDArray[np.float32]


def cascade_error_model(ae1: keras.Model, ae2: keras.Model) -> keras.Model:
    """(B, D) scaled windows → [(B,) AE1 error, (B,) AE2 error, (B, D) AE1 squared error]."""
    width = ae1.input_shape[-1]
    window = keras.Input((width,), name="scaled_window")
    code = encoder_of(ae1)(window)
    squared = ops.square(window - decoder_of(ae1)(code))
    code_error = ops.mean(ops.square(code - ae2(code)), axis=1)
    return keras.Model(
        window, [ops.mean(squared, axis=1), code_error, squared], name="cascade_errors"
    )


class CompiledCascade:
    """The cascade's error function compiled once per bucket size on one device."""

    def __init__(
        self, ae1: keras.Model, ae2: keras.Model, device: Device, buckets: Sequence[int] = BUCKETS
    ) -> None:
        self.device = device
        self.buckets = tuple(sorted(buckets))
        self._width = int(ae1.input_shape[-1])
        self._run, self._traces = compile_forward(cascade_error_model(ae1, ae2), device)

    @property
    def traces(self) -> int:
        """How many times the function was traced (at most one per bucket)."""
        return self._traces()

    def warm_up(self) -> None:
        """Trace every bucket now, so the first real batches do not pay for compilation."""
        for size in self.buckets:
            self._run(np.zeros((size, self._width), dtype=np.float32))
        log.info(
            "scorer_compiled", device=self.device.name, buckets=self.buckets, traces=self.traces
        )

    def __call__(self, scaled: NDArray[np.float32]) -> RawErrors:
        """Errors for (n, D) scaled windows, any n ≥ 0."""
        n = scaled.shape[0]
        ae1 = np.empty(n, dtype=np.float32)
        ae2 = np.empty(n, dtype=np.float32)
        squared = np.empty((n, self._width), dtype=np.float32)
        largest = self.buckets[-1]
        for start in range(0, n, largest):
            chunk = scaled[start : start + largest]
            size = len(chunk)
            bucket = next(b for b in self.buckets if b >= size)
            if bucket != size:
                chunk = np.concatenate([chunk, np.zeros((bucket - size, self._width), np.float32)])
            out1, out2, out_sq = self._run(chunk)
            stop = start + size
            ae1[start:stop], ae2[start:stop], squared[start:stop] = (
                out1[:size],
                out2[:size],
                out_sq[:size],
            )
        return RawErrors(ae1=ae1, ae2=ae2, squared=squared)
