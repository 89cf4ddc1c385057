"""Generated sensor feeds for the demo and tests: several entities, sliding windows, reproducible.

Each entity is a sensor whose reading is a sinusoid (its own period, phase and level) plus AR(1)
noise. Window ``i`` of an entity holds its samples ``[i, i + window)`` (stride 1), so consecutive
windows of one entity overlap by ``window - 1`` samples, as a real feature pipeline would emit them.
Entities are interleaved round-robin: row ``r`` belongs to entity ``r % n_keys``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class SensorFeed:
    """``n`` windows: ``keys`` (n,) entity names, ``ts_ms`` (n,) epoch milliseconds of each window's
    last sample, ``windows`` (n, window) float32 readings."""

    keys: NDArray[np.str_]
    ts_ms: NDArray[np.int64]
    windows: NDArray[np.float32]

    def __len__(self) -> int:
        return int(self.windows.shape[0])


def sensor_feed(
    n_windows: int,
    n_keys: int = 8,
    window: int = 16,
    seed: int = 0,
    start_ms: int = 1_764_000_000_000,
    sample_interval_ms: int = 1_000,
) -> SensorFeed:
    """Generate ``n_windows`` interleaved windows from ``n_keys`` sensors (see module docstring)."""
    if n_windows < 1 or n_keys < 1 or window < 1:
        raise ValueError("n_windows, n_keys and window must be positive")
    rng = np.random.default_rng(seed)
    per_key = -(-n_windows // n_keys)
    length = per_key + window - 1
    t = np.arange(length, dtype=np.float64)
    period = rng.uniform(30.0, 300.0, size=(n_keys, 1))
    phase = rng.uniform(0.0, 2 * np.pi, size=(n_keys, 1))
    level = rng.normal(0.0, 5.0, size=(n_keys, 1))
    amplitude = rng.uniform(0.5, 2.0, size=(n_keys, 1))
    noise = _ar1_noise(rng, n_keys, length, phi=0.7, scale=0.1)
    series = level + amplitude * np.sin(2 * np.pi * t / period + phase) + noise
    slides = np.lib.stride_tricks.sliding_window_view(series, window, axis=1)
    windows = slides.transpose(1, 0, 2).reshape(-1, window)[:n_windows].astype(np.float32)
    rows = np.arange(n_windows)
    keys = np.array([f"sensor-{k:03d}" for k in range(n_keys)])[rows % n_keys]
    ts_ms = start_ms + ((rows // n_keys) + window - 1).astype(np.int64) * sample_interval_ms
    return SensorFeed(keys=keys, ts_ms=ts_ms, windows=windows)


def _ar1_noise(
    rng: np.random.Generator, n_series: int, length: int, phi: float, scale: float
) -> NDArray[np.float64]:
    """(n_series, length) AR(1) noise ``x[t] = phi * x[t-1] + e[t]``, stationary from the start."""
    shocks = rng.normal(0.0, scale, size=(n_series, length))
    noise = np.empty_like(shocks)
    noise[:, 0] = shocks[:, 0] / np.sqrt(1 - phi**2)
    for step in range(1, length):
        noise[:, step] = phi * noise[:, step - 1] + shocks[:, step]
    return noise
