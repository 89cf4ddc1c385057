"""A generated labelled dataset and one detector trained on its clean part, shared by the module
tests (training once keeps the suite fast)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from detectors.cascade import CascadeDetector
from detectors.spec import CascadeSpec
from streamer.synthetic import sensor_series
from streamer.tables import WindowTable, windows_from_frame

WINDOW = 16
CHANNELS = 4


@dataclass(frozen=True)
class Labelled:
    train: WindowTable
    test: WindowTable


@pytest.fixture(scope="session")
def labelled() -> Labelled:
    """Two sensors, 4 channels each, windows of 16 steps (D = 64); anomalies in the second half."""
    frame = sensor_series(8_000, n_keys=2, channels=CHANNELS, anomaly_rate=0.03, seed=1)
    table = windows_from_frame(frame, WINDOW)
    first_half = table.head_per_key(0.5)
    train, test = table.select(first_half), table.select(~first_half)
    assert train.labels is not None and not train.labels.any()
    return Labelled(train=train, test=test)


@pytest.fixture(scope="session")
def trained(labelled: Labelled) -> CascadeDetector:
    return CascadeDetector(CascadeSpec(epochs=40), feature_names=labelled.train.feature_names).fit(
        labelled.train.windows
    )


@pytest.fixture(scope="session")
def small_windows() -> np.ndarray:
    rng = np.random.default_rng(7)
    base = rng.normal(size=(600, 3)) @ rng.normal(size=(3, 12))
    return (base + rng.normal(0, 0.05, size=base.shape)).astype(np.float32)
