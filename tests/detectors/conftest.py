"""A generated labelled dataset and one detector trained on its clean part, shared by the module
tests (training once keeps the suite fast)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detectors.base import Detector
from detectors.cascade import CascadeDetector
from detectors.fusion import FusionDetector
from detectors.members import load_member, select_features
from detectors.spec import DETECTOR_KINDS, AutoencoderSpec, CascadeSpec, FusionSpec
from streamer.demo.synthetic import sensor_series
from streamer.ingest.tables import WindowTable, windows_from_frame

WINDOW = 16
CHANNELS = 4
UNIVARIATE_WINDOW = 16


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


@pytest.fixture(scope="session")
def univariate() -> np.ndarray:
    """(1000, 16) float32: windows of 16 steps of one noisy sine, stride 1 (D = 16)."""
    rng = np.random.default_rng(3)
    steps = np.arange(1015)
    series = np.sin(2 * np.pi * steps / 50) + rng.normal(0, 0.05, size=steps.shape)
    return np.lib.stride_tricks.sliding_window_view(series, UNIVARIATE_WINDOW).astype(np.float32)


@pytest.fixture(scope="session")
def univariate_trained(univariate: np.ndarray) -> CascadeDetector:
    """The default cascade (sizes unset), 2 epochs on the univariate windows: sized for D = 16."""
    return CascadeDetector(CascadeSpec(epochs=2), device="cpu").fit(univariate)


GROUPS = {"left": ("ch0", "ch1"), "right": ("ch2", "ch3")}
"""The two channel groups fusion members are trained on."""

MEMBER_SPEC = CascadeSpec(
    ae1=AutoencoderSpec(hidden=(24,), latent=8),
    ae2=AutoencoderSpec(hidden=(4,), latent=2),
    epochs=25,
)


@pytest.fixture(scope="session")
def member_bundles(labelled: Labelled, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two cascade bundles, each trained on one channel group of the clean windows: the
    pre-trained autoencoders a fusion is built from."""
    directory = tmp_path_factory.mktemp("members")
    paths = {}
    for name, channels in GROUPS.items():
        names = select_features(labelled.train.feature_names, channels)
        group = labelled.train.with_features(names)
        paths[name] = directory / name
        CascadeDetector(MEMBER_SPEC, feature_names=names, device="cpu").fit(group.windows).save(
            paths[name]
        )
    return paths


def fusion_of(
    mode: str, bundles: dict[str, Path], names: tuple[str, ...], **spec: Any
) -> FusionDetector:
    """An unfitted fusion of the two member bundles over windows of ``names``."""
    members = [load_member(name, path, None, names) for name, path in bundles.items()]
    settings = {"epochs": 30, "head": (32,), **spec}
    return FusionDetector(members, names, FusionSpec(mode=mode, **settings), device="cpu")  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def every_kind(
    labelled: Labelled, trained: CascadeDetector, member_bundles: dict[str, Path]
) -> dict[str, Detector]:
    """One fitted detector of every kind ``tandem train --detector`` builds, on the same data."""
    detectors: dict[str, Detector] = {"cascade": trained}
    names = labelled.train.feature_names
    for kind in DETECTOR_KINDS[1:]:
        mode = kind.removeprefix("fusion-")
        detectors[kind] = fusion_of(mode, member_bundles, names).fit(labelled.train.windows)
    assert set(detectors) == set(DETECTOR_KINDS)
    return detectors
