"""Generated sensor feeds for the demo and tests: several entities, reproducible, labelled.

``sensor_series`` is a multichannel series per entity with injected, labelled anomalies of four
kinds (the ones a sensor or market feed shows): ``spike`` (one reading far off), ``level_shift``
(a channel jumps and stays for a while), ``frozen`` (a channel repeats its last value) and
``correlation_break`` (a channel stops following the signal the others share). The first
``clean_fraction`` of every entity's series is kept anomaly-free for training.

``sensor_feed`` is a simpler univariate feed (the pipeline benchmark and some tests use it).

Each entity is a sensor whose reading is a sinusoid (its own period, phase and level) plus AR(1)
noise. Window ``i`` of an entity holds its samples ``[i, i + window)`` (stride 1), so consecutive
windows of one entity overlap by ``window - 1`` samples, as a real feature pipeline would emit them.
Entities are interleaved round-robin: row ``r`` belongs to entity ``r % n_keys``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from streamer.backtest.events import Event, find_events

ANOMALY_KINDS = ("spike", "level_shift", "frozen", "correlation_break")


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


def sensor_series(
    steps: int,
    n_keys: int = 2,
    channels: int = 4,
    anomaly_rate: float = 0.02,
    clean_fraction: float = 0.5,
    kinds: Sequence[str] = ANOMALY_KINDS,
    seed: int = 0,
    start_ms: int = 1_764_000_000_000,
    sample_interval_ms: int = 1_000,
    kind_channels: Mapping[str, Sequence[int]] | None = None,
) -> pd.DataFrame:
    """``steps`` rows per entity: ``key``, ``ts`` (epoch ms), ``ch0``…, ``label``, ``kind``.

    Every channel follows one shared signal per entity (two sinusoids) with its own gain and
    offset, plus AR(1) noise. About ``anomaly_rate`` of the steps after the clean prefix are
    inside an anomaly; kinds take turns in the order given. Each anomaly hits one channel, any
    of them, or for a kind named in ``kind_channels`` one of the channels listed there (so two
    groups of channels can carry different kinds of anomaly).
    """
    unknown = set(kinds) - set(ANOMALY_KINDS)
    if unknown:
        raise ValueError(f"unknown anomaly kinds {sorted(unknown)}; known: {ANOMALY_KINDS}")
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n_keys):
        signal = _shared_signal(rng, steps)
        gain = rng.uniform(0.5, 2.0, channels) * rng.choice([-1.0, 1.0], channels)
        offset = rng.normal(0.0, 3.0, channels)
        noise = _ar1_noise(rng, channels, steps, phi=0.5, scale=0.1).T
        values = signal[:, None] * gain + offset + noise
        labels = np.zeros(steps, dtype=np.int8)
        kind_of = np.full(steps, "", dtype=object)
        spread = np.abs(gain) * signal.std()
        for start, length, kind in _events(rng, steps, anomaly_rate, clean_fraction, kinds):
            allowed = (kind_channels or {}).get(kind, range(channels))
            channel = int(allowed[int(rng.integers(len(allowed)))])
            span = slice(start, start + length)
            if kind == "spike":
                values[start, channel] += rng.choice([-1, 1]) * rng.uniform(4, 6) * spread[channel]
            elif kind == "level_shift":
                values[span, channel] += (
                    rng.choice([-1, 1]) * rng.uniform(1.0, 1.5) * spread[channel]
                )
            elif kind == "frozen":
                values[span, channel] = values[start, channel]
            else:
                values[span, channel] = (
                    -signal[span] * gain[channel] + offset[channel] + noise[span, channel]
                )
            labels[span] = 1
            kind_of[span] = kind
        frame = pd.DataFrame(values.astype(np.float32), columns=[f"ch{c}" for c in range(channels)])
        frame.insert(0, "ts", start_ms + np.arange(steps, dtype=np.int64) * sample_interval_ms)
        frame.insert(0, "key", f"sensor-{k:03d}")
        frame["label"] = labels
        frame["kind"] = kind_of.astype(str)
        frames.append(frame)
    return pd.concat(frames).sort_values(["ts", "key"], kind="stable").reset_index(drop=True)


def _shared_signal(rng: np.random.Generator, steps: int) -> NDArray[np.float64]:
    t = np.arange(steps, dtype=np.float64)
    slow, fast = rng.uniform(150, 400), rng.uniform(20, 60)
    return np.sin(2 * np.pi * t / slow + rng.uniform(0, 2 * np.pi)) + 0.5 * np.sin(
        2 * np.pi * t / fast + rng.uniform(0, 2 * np.pi)
    )


def _events(
    rng: np.random.Generator, steps: int, rate: float, clean_fraction: float, kinds: Sequence[str]
) -> list[tuple[int, int, str]]:
    """Non-overlapping (start, length, kind) after the clean prefix, covering about ``rate`` of it.

    Spikes last one step, other kinds 10 to 39; gaps are drawn around the mean gap that spreads
    the expected number of events evenly over the span.
    """
    first = int(steps * clean_fraction)
    span = steps - first
    mean_length = sum(1 if kind == "spike" else 24.5 for kind in kinds) / max(len(kinds), 1)
    expected_events = max(span * rate / mean_length, 1.0)
    mean_gap = max(span / expected_events - mean_length, 2.0)
    events: list[tuple[int, int, str]] = []
    cursor = first + int(rng.uniform(0.2, 1.0) * mean_gap)
    for turn in range(round(expected_events)):
        kind = kinds[turn % len(kinds)]
        length = 1 if kind == "spike" else int(rng.integers(10, 40))
        if cursor + length >= steps:
            break
        events.append((cursor, length, kind))
        cursor += length + int(rng.uniform(0.5, 1.5) * mean_gap)
    return events


def injected_events(frame: pd.DataFrame) -> list[Event]:
    """The anomalies of a ``sensor_series`` frame: runs of labelled steps of one kind per sensor
    (``streamer.backtest.events.find_events`` over the steps), in time order; an event's
    ``start_ms``/``end_ms`` are its first and last anomalous step."""
    return find_events(
        frame["key"].to_numpy(),
        frame["ts"].to_numpy(dtype=np.int64),
        frame["label"].to_numpy(dtype=np.int8),
        kinds=frame["kind"].to_numpy(dtype=str),
    )
