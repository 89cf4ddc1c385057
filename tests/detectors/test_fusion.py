"""What is particular to fusions: members stay frozen unless asked, weights are fixed or learned
and reported, members come from bundles or ``.keras`` files, and members that cannot be fused
fail at load time with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from detectors.autoencoder import build_autoencoder
from detectors.errors import BundleError
from detectors.fusion import FusionDetector
from detectors.members import load_member, select_features
from detectors.spec import AutoencoderSpec, FusionSpec
from tests.detectors.conftest import GROUPS, Labelled, fusion_of


@pytest.fixture
def names(labelled: Labelled) -> tuple[str, ...]:
    return labelled.train.feature_names


@pytest.fixture
def few(labelled: Labelled) -> np.ndarray:
    return labelled.train.windows[:1500]


def member_weights(detector: FusionDetector) -> list[np.ndarray]:
    return [w.copy() for m in detector.members for w in m.autoencoder.get_weights()]


def test_members_stay_frozen_unless_fine_tuning_is_asked_for(
    member_bundles: dict[str, Path], names: tuple[str, ...], few: np.ndarray
) -> None:
    frozen = fusion_of("concat", member_bundles, names, epochs=2)
    before = member_weights(frozen)
    frozen.fit(few)
    assert all(np.array_equal(a, b) for a, b in zip(before, member_weights(frozen), strict=True))

    tuned = fusion_of("concat", member_bundles, names, epochs=2, freeze_members=False)
    tuned.fit(few)
    changed = [not np.array_equal(a, b) for a, b in zip(before, member_weights(tuned), strict=True)]
    assert any(changed)


def test_weighted_fusion_reports_learned_or_fixed_weights(
    member_bundles: dict[str, Path], names: tuple[str, ...], few: np.ndarray, tmp_path: Path
) -> None:
    learned = fusion_of("weighted", member_bundles, names, epochs=3).fit(few)
    assert learned.mix_weights is not None
    assert sum(learned.mix_weights) == pytest.approx(1.0)
    learned.save(tmp_path / "learned")
    manifest = json.loads((tmp_path / "learned" / "bundle.json").read_text())
    assert manifest["mix_weights"] == pytest.approx(learned.mix_weights)

    fixed = fusion_of("weighted", member_bundles, names, epochs=3, weights=(3.0, 1.0)).fit(few)
    assert fixed.mix_weights == pytest.approx([0.75, 0.25])


def test_averaging_codes_of_different_widths_without_projection_fails_at_load(
    member_bundles: dict[str, Path], names: tuple[str, ...], tmp_path: Path
) -> None:
    narrow = build_autoencoder(AutoencoderSpec(hidden=(8,), latent=3), 32, "narrow")
    narrow.save(tmp_path / "narrow.keras")
    members = [
        load_member("left", member_bundles["left"], None, names),
        load_member("narrow", tmp_path / "narrow.keras", list(GROUPS["right"]), names),
    ]
    spec = FusionSpec(mode="weighted", project=False)
    with pytest.raises(BundleError, match=r"latent widths 8 and 3.*project = true"):
        FusionDetector(members, names, spec)
    FusionDetector(members, names, FusionSpec(mode="weighted"))  # projected: fine


def test_a_keras_member_reads_the_channels_it_is_given(
    names: tuple[str, ...], few: np.ndarray, tmp_path: Path
) -> None:
    for name in GROUPS:
        model = build_autoencoder(AutoencoderSpec(hidden=(8,), latent=4), 32, name)
        model.save(tmp_path / f"{name}.keras")
    members = [
        load_member(name, tmp_path / f"{name}.keras", list(channels), names)
        for name, channels in GROUPS.items()
    ]
    assert members[1].feature_names[:2] == ("ch2[t-15]", "ch3[t-15]")
    assert members[0].scaler.method == "none"
    detector = FusionDetector(members, names, FusionSpec(mode="late", epochs=2)).fit(few)
    assert set(detector.score(few[:10]).parts) == {"left", "right", "joint"}


def test_members_that_cannot_be_fused_are_refused_with_the_reason(
    member_bundles: dict[str, Path], names: tuple[str, ...], tmp_path: Path
) -> None:
    model = build_autoencoder(AutoencoderSpec(hidden=(8,), latent=4), 32, "plain")
    model.save(tmp_path / "plain.keras")
    with pytest.raises(BundleError, match="name the features it reads"):
        load_member("plain", tmp_path / "plain.keras", None, names)
    with pytest.raises(BundleError, match="reads 16 features but its autoencoder takes 32"):
        load_member("plain", tmp_path / "plain.keras", ["ch0"], names)
    flat = keras.Sequential([keras.Input((32,)), keras.layers.Dense(32)])
    flat.save(tmp_path / "flat.keras")
    with pytest.raises(BundleError, match="no nested 'encoder' and 'decoder'"):
        load_member("flat", tmp_path / "flat.keras", list(GROUPS["left"]), names)
    with pytest.raises(BundleError, match="reads feature 'ch0\\[t-15\\]'"):
        load_member("left", member_bundles["left"], None, names[16:])
    with pytest.raises(BundleError, match=r"neither a model bundle nor a \.keras file"):
        load_member("gone", tmp_path / "gone", None, names)
    members = [load_member(n, p, None, names) for n, p in member_bundles.items()]
    members[1].name = "joint"
    with pytest.raises(BundleError, match="other than"):
        FusionDetector(members, names)


def test_features_are_chosen_by_name_or_by_channel(names: tuple[str, ...]) -> None:
    by_channel = select_features(names, ["ch1"])
    assert len(by_channel) == 16 and all(n.startswith("ch1[t-") for n in by_channel)
    assert select_features(names, ["ch0[t-0]", "ch1"])[-2:] == ["ch0[t-0]", "ch1[t-0]"]
    with pytest.raises(BundleError, match="'ch9' is not among"):
        select_features(names, ["ch9"])
