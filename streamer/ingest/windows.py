"""Cutting a multichannel series into flat sliding windows, and the index arithmetic behind it.

A series of T steps and C channels becomes windows of ``window`` steps taken every ``stride``
steps: window ``i`` covers steps ``[i * stride, i * stride + window)`` and is flattened step-major,
so feature ``s * C + c`` is channel ``c`` at step ``s`` of the window. A window is stamped with
its last step (the moment it could first be scored) and labelled anomalous if any of its steps is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray


def window_count(steps: int, window: int, stride: int) -> int:
    """How many whole windows fit in ``steps`` steps."""
    if window < 1 or stride < 1:
        raise ValueError("window and stride must be at least 1")
    return 0 if steps < window else (steps - window) // stride + 1


def window_last_steps(steps: int, window: int, stride: int) -> NDArray[np.int64]:
    """(n,) index of each window's last step."""
    n = window_count(steps, window, stride)
    return np.arange(n, dtype=np.int64) * stride + window - 1


def sliding_windows(
    values: NDArray[np.floating], window: int, stride: int = 1
) -> NDArray[np.float32]:
    """(T, C) series → (n, window * C) float32 windows, flattened step-major."""
    series = np.asarray(values, dtype=np.float32)
    if series.ndim != 2:
        raise ValueError(f"a series must be 2-D (steps, channels); got shape {series.shape}")
    steps, channels = series.shape
    n = window_count(steps, window, stride)
    if n == 0:
        return np.empty((0, window * channels), dtype=np.float32)
    view = np.lib.stride_tricks.sliding_window_view(series, window, axis=0)[::stride][:n]
    return np.ascontiguousarray(view.transpose(0, 2, 1).reshape(n, window * channels))


def window_any(flags: NDArray[np.integer], window: int, stride: int = 1) -> NDArray[np.int8]:
    """(T,) per-step 0/1 flags → (n,) 1 where any step of the window is flagged."""
    steps = flags.shape[0]
    n = window_count(steps, window, stride)
    if n == 0:
        return np.empty(0, dtype=np.int8)
    counts = np.concatenate([[0], np.cumsum(np.asarray(flags, dtype=np.int64) != 0)])
    starts = np.arange(n) * stride
    flagged: NDArray[np.int8] = ((counts[starts + window] - counts[starts]) > 0).astype(np.int8)
    return flagged


def window_feature_names(channels: Sequence[str], window: int) -> tuple[str, ...]:
    """Names in step-major order: ``temp[t-3]`` is channel ``temp`` three steps before the last."""
    return tuple(f"{name}[t-{window - 1 - step}]" for step in range(window) for name in channels)
