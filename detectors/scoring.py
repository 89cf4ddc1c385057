"""Scoring a detector through one compiled function with fixed batch shapes.

``model.predict`` costs milliseconds of set-up per call; one compiled forward pass over the whole
cascade (scaling, both autoencoders, their errors, normalisation and tail decades, fused by XLA)
scores a batch in about the time its arithmetic takes, on whichever device it was placed.
Batches are padded up to the smallest of a few fixed sizes (``BUCKETS``) and longer inputs are
cut into chunks of the largest, so after one trace per bucket the function never traces again,
whatever batch sizes the stream delivers.

There is one bucket by default, because a window's score must not depend on the batch it came
in: a backtest has to reproduce the daemon's scores exactly, and the daemon's batches depend on
timing. Each input shape compiles to its own kernels, which may sum in another order: a window
scored in a batch padded to 64 rows came out about 1e-6 away from the same window padded to 512.
Within one shape a row's result does not depend on its neighbours or its position (checked in
``tests/detectors/test_cascade.py``). Padding a small batch to 4,096 rows costs about 3 ms on a
CPU core, which only matters when batches are small, that is when the stream is slow.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras
import numpy as np
import structlog
from keras import ops
from numpy.typing import NDArray

from detectors.autoencoder import decoder_of, encoder_of
from detectors.backend import CompiledFn, Device, compile_forward
from detectors.normalise import LogRobustNormaliser, tail_decades_op
from detectors.scaling import FeatureScaler

log = structlog.get_logger(__name__)

BUCKETS: tuple[int, ...] = (4096,)


@dataclass(frozen=True)
class StageOutputs:
    """Per-window results for n windows, all (n,) float32: ``parts``, each stage's weighted tail
    decades, and ``errors``, the stages' raw mean squared reconstruction errors (in scaled
    units), in the detector's order of stages (the cascade's: AE1 on the window, AE2 on AE1's
    code)."""

    parts: tuple[NDArray[np.float32], ...]
    errors: tuple[NDArray[np.float32], ...]


def cascade_error_model(ae1: keras.Model, ae2: keras.Model, scaler: FeatureScaler) -> keras.Model:
    """(B, D) raw windows → [(B,) AE1 error, (B,) AE2 error]; scaling is the first layer."""
    window, scaled = scaled_input(ae1, scaler)
    code = encoder_of(ae1)(scaled)
    squared = ops.square(scaled - decoder_of(ae1)(code))
    code_error = ops.mean(ops.square(code - ae2(code)), axis=1)
    return keras.Model(window, [ops.mean(squared, axis=1), code_error], name="cascade_errors")


def cascade_score_model(
    ae1: keras.Model,
    ae2: keras.Model,
    scaler: FeatureScaler,
    normalisers: Sequence[LogRobustNormaliser],
    weights: Sequence[float],
) -> keras.Model:
    """(B, D) raw windows → [AE1 part, AE2 part, AE1 error, AE2 error], each (B,)."""
    errors = cascade_error_model(ae1, ae2, scaler)
    window = keras.Input((int(ae1.input_shape[-1]),), name="window")
    error1, error2 = errors(window)
    parts = [
        weight * tail_decades_op(normaliser.op(error))
        for weight, normaliser, error in zip(weights, normalisers, (error1, error2), strict=True)
    ]
    return keras.Model(window, [*parts, error1, error2], name="cascade_scores")


def blame_model(ae1: keras.Model, scaler: FeatureScaler) -> keras.Model:
    """(B, D) raw windows → (B, D) each feature's share of AE1's squared error.

    Rows sum to 1; a perfectly reconstructed window blames all features equally.
    """
    window, scaled = scaled_input(ae1, scaler)
    shares = error_shares(ops.square(scaled - ae1(scaled)))
    return keras.Model(window, shares, name="cascade_blame")


def error_shares(squared: keras.KerasTensor) -> keras.KerasTensor:
    """(B, D) squared errors → (B, D) each feature's share of its row's total; rows sum to 1,
    and a perfectly reconstructed row blames all D features equally."""
    total = ops.sum(squared, axis=1, keepdims=True)
    width = int(squared.shape[-1])
    return ops.where(total > 0, squared / ops.maximum(total, 1e-30), 1.0 / width)


def scaled_input(
    ae1: keras.Model, scaler: FeatureScaler
) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    window = keras.Input((int(ae1.input_shape[-1]),), name="window")
    variance = np.square(scaler.scale)
    return window, keras.layers.Normalization(mean=scaler.center, variance=variance)(window)


class CompiledScorer:
    """A detector's score function, and its on-demand functions, compiled per bucket on one device.

    ``score_model`` maps (B, D) raw windows to ``[*parts, *errors]``, ``n_parts`` of each, all
    (B,). Scores are what every window needs; blame (n, D) and kind probabilities (n, K) are
    wanted for the few flagged windows, so they are separate functions called on demand rather
    than outputs that slow every batch (blame as an output costs about a fifth of the
    throughput, measured with bench/bench_scoring.py).
    """

    def __init__(
        self,
        score_model: keras.Model,
        n_parts: int,
        blame: keras.Model,
        device: Device,
        kinds: keras.Model | None = None,
        buckets: Sequence[int] = BUCKETS,
    ) -> None:
        self.device = device
        self.buckets = tuple(sorted(buckets))
        self.n_parts = n_parts
        self._width = int(score_model.input_shape[-1])
        self._scores, self._score_traces = compile_forward(score_model, device)
        self._blame, self._blame_traces = compile_forward(blame, device)
        self._kinds: tuple[CompiledFn, Callable[[], int]] | None = None
        self._n_kinds = 0
        if kinds is not None:
            self._kinds = compile_forward(kinds, device)
            self._n_kinds = int(kinds.output_shape[-1])
        log.info("scoring_device", backend=device.backend, device=device.name, kind=device.kind)

    @property
    def traces(self) -> int:
        """How many times the functions were traced (at most once per bucket each)."""
        kinds = self._kinds[1]() if self._kinds is not None else 0
        return self._score_traces() + self._blame_traces() + kinds

    def warm_up(self) -> None:
        """Trace and compile every bucket of both functions now.

        Otherwise the first batch of each size pays for the score function's compilation, and the
        first alert of each size for the blame function's (about half a second each on CPU), in
        the middle of the stream. The ``scorer_compiled`` event gives the seconds this took.
        """
        started = time.perf_counter()
        for size in self.buckets:
            zeros = np.zeros((size, self._width), dtype=np.float32)
            self._scores(zeros)
            self._blame(zeros)
            if self._kinds is not None:
                self._kinds[0](zeros)
        log.info(
            "scorer_compiled",
            device=self.device.name,
            buckets=self.buckets,
            traces=self.traces,
            seconds=round(time.perf_counter() - started, 2),
        )

    def __call__(self, windows: NDArray[np.float32]) -> StageOutputs:
        """Parts and errors for (n, D) raw float32 windows, any n ≥ 0."""
        outputs = self._bucketed(self._scores, windows, [()] * (2 * self.n_parts))
        return StageOutputs(
            parts=tuple(outputs[: self.n_parts]), errors=tuple(outputs[self.n_parts :])
        )

    def shares(self, windows: NDArray[np.float32]) -> NDArray[np.float32]:
        """(n, D) blame for (n, D) raw float32 windows."""
        (shares,) = self._bucketed(self._blame, windows, [(self._width,)])
        return shares

    def kind_probabilities(self, windows: NDArray[np.float32]) -> NDArray[np.float32]:
        """(n, K) probabilities of the K anomaly kinds for (n, D) raw float32 windows."""
        if self._kinds is None:
            raise ValueError("this detector has no kind classifier")
        (probabilities,) = self._bucketed(self._kinds[0], windows, [(self._n_kinds,)])
        return probabilities

    def _bucketed(
        self, run: CompiledFn, windows: NDArray[np.float32], shapes: list[tuple[int, ...]]
    ) -> list[NDArray[np.float32]]:
        """Run ``run`` over ``windows`` in bucket-sized, zero-padded chunks; ``shapes`` are the
        per-window shapes of its outputs."""
        n = windows.shape[0]
        largest = self.buckets[-1]
        if n <= largest:
            return [result[:n] for result in run(self._padded(windows))]
        outputs = [np.empty((n, *shape), dtype=np.float32) for shape in shapes]
        for start in range(0, n, largest):
            chunk = windows[start : start + largest]
            for output, result in zip(outputs, run(self._padded(chunk)), strict=True):
                output[start : start + len(chunk)] = result[: len(chunk)]
        return outputs

    def _padded(self, chunk: NDArray[np.float32]) -> NDArray[np.float32]:
        """``chunk`` zero-padded to the smallest bucket that holds it."""
        size = len(chunk)
        bucket = next(b for b in self.buckets if b >= size)
        if bucket == size:
            return chunk
        return np.concatenate([chunk, np.zeros((bucket - size, self._width), np.float32)])
