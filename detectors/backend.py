"""The one place that knows which Keras backend runs: device choice and compiling the forward pass.

Model code uses Keras 3 layers and ``keras.ops`` only. Turning a model into one compiled function
(and pinning it to a device) has no backend-neutral API in Keras, so it lives here, with a branch
per supported backend: TensorFlow (``tf.function`` with XLA) and JAX (``jax.jit`` over
``stateless_call``). Each distinct input shape is traced once; callers pad to a few fixed shapes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from numpy.typing import NDArray

from detectors.base import DevicePreference
from detectors.errors import DetectorError

CompiledFn = Callable[[NDArray[np.float32]], list[NDArray[np.float32]]]


@dataclass(frozen=True)
class Device:
    """Where scoring runs: ``kind`` is ``cpu`` or ``gpu``; ``name`` is the backend's own name."""

    backend: str
    kind: str
    name: str


def select_device(preference: DevicePreference = "auto") -> Device:
    """Pick the device: ``auto`` takes a GPU when the backend sees one; ``gpu`` insists on one."""
    backend = keras.backend.backend()
    gpus = _gpu_names(backend)
    if preference == "gpu" and not gpus:
        raise DetectorError(
            f"[model].device = 'gpu' but the {backend} backend sees no GPU; "
            "install tandem-detect[gpu] on a GPU machine or set device = 'auto'"
        )
    if gpus and preference != "cpu":
        return Device(backend, "gpu", gpus[0])
    return Device(backend, "cpu", "/CPU:0" if backend == "tensorflow" else "cpu")


def compile_forward(model: keras.Model, device: Device) -> tuple[CompiledFn, Callable[[], int]]:
    """Compile ``model`` (inference mode) for ``device``.

    Returns the function (float32 (B, D) in, list of numpy outputs) and a counter of how many
    times it has been traced: one per distinct input shape, never again for a shape seen before.
    """
    traces = [0]

    def forward(inputs: Any) -> Any:
        traces[0] += 1  # runs only while tracing
        return model(inputs, training=False)

    if device.backend == "tensorflow":
        return _compile_tensorflow(forward, device), lambda: traces[0]
    if device.backend == "jax":
        return _compile_jax(model, device, traces), lambda: traces[0]
    raise DetectorError(f"Keras backend {device.backend!r} is not supported; use tensorflow or jax")


def _gpu_names(backend: str) -> list[str]:
    if backend == "tensorflow":
        import tensorflow as tf

        return [f"/GPU:{i}" for i, _ in enumerate(tf.config.list_physical_devices("GPU"))]
    if backend == "jax":
        import jax

        try:
            return [str(d) for d in jax.devices("gpu")]
        except RuntimeError:
            return []
    return []


def _compile_tensorflow(forward: Callable[[Any], Any], device: Device) -> CompiledFn:
    """One XLA-compiled concrete function per input shape, placed on ``device`` when traced.

    Concrete functions skip ``tf.function``'s per-call signature dispatch, which costs about as
    much as scoring a few hundred windows.
    """
    import tensorflow as tf

    def placed(inputs: Any) -> Any:
        with tf.device(device.name):
            return forward(inputs)

    per_shape: dict[tuple[int, ...], Any] = {}

    def run(batch: NDArray[np.float32]) -> list[NDArray[np.float32]]:
        concrete = per_shape.get(batch.shape)
        if concrete is None:
            signature = [tf.TensorSpec(batch.shape, tf.float32)]
            function = tf.function(placed, input_signature=signature, jit_compile=True)
            concrete = per_shape[batch.shape] = function.get_concrete_function()
        return [output.numpy() for output in _as_list(concrete(tf.constant(batch)))]

    return run


def _compile_jax(model: keras.Model, device: Device, traces: list[int]) -> CompiledFn:
    import jax

    target = jax.devices("gpu" if device.kind == "gpu" else "cpu")[0]
    trainable = jax.device_put([v.value for v in model.trainable_variables], target)
    frozen = jax.device_put([v.value for v in model.non_trainable_variables], target)

    def forward(trainable: Any, frozen: Any, inputs: Any) -> Any:
        traces[0] += 1  # runs only while tracing
        outputs, _ = model.stateless_call(trainable, frozen, inputs, training=False)
        return outputs

    compiled: Any = jax.jit(forward)

    def run(batch: NDArray[np.float32]) -> list[NDArray[np.float32]]:
        outputs = compiled(trainable, frozen, jax.device_put(batch, target))
        return [np.asarray(output) for output in _as_list(outputs)]

    return run


def _as_list(outputs: Any) -> list[Any]:
    """A model with one output returns a bare tensor; one with several, a list or tuple."""
    return list(outputs) if isinstance(outputs, list | tuple) else [outputs]
