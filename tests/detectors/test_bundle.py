"""Model bundles: exact round trip, content hash as version, and clear refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
from structlog.testing import capture_logs

from detectors import bundle
from detectors.cascade import CascadeDetector
from detectors.errors import BundleError
from tests.detectors.conftest import Labelled


@pytest.fixture(scope="module")
def saved(trained: CascadeDetector, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bundles") / "sensor"
    trained.save(path)
    return path


@pytest.fixture
def copy(saved: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(saved, target)
    return target


def test_saved_and_loaded_detectors_score_identically(
    trained: CascadeDetector, saved: Path, labelled: Labelled
) -> None:
    loaded = CascadeDetector.load(saved, expected_window=64, device="cpu")
    windows = labelled.test.windows[:3000]
    np.testing.assert_array_equal(loaded.score(windows).score, trained.score(windows).score)
    np.testing.assert_array_equal(
        loaded.score(windows).contributions(), trained.score(windows).contributions()
    )
    assert loaded.version == trained.version and loaded.version.startswith("sha256:")
    assert loaded.feature_names == trained.feature_names
    assert loaded.spec == trained.spec


def test_loading_compiles_scores_and_blame_for_every_bucket(
    saved: Path, labelled: Labelled
) -> None:
    """The first alert of a batch size must not stall the stream compiling the blame function."""
    with capture_logs() as logs:
        loaded = CascadeDetector.load(saved, expected_window=64, device="cpu")
    compiled = loaded._compiled
    assert compiled is not None
    (event,) = [entry for entry in logs if entry["event"] == "scorer_compiled"]
    assert event["traces"] == compiled.traces == 2 * len(compiled.buckets)
    assert event["seconds"] > 0
    for size in (1, 64, 65, 600, 4097):
        scores = loaded.score(labelled.test.windows[:size])
        assert scores.contributions().shape == (size, 64)
    assert compiled.traces == 2 * len(compiled.buckets), "nothing traced after loading"


def test_bundle_json_describes_the_model(saved: Path) -> None:
    manifest = json.loads((saved / "bundle.json").read_text())
    assert manifest["kind"] == "cascade" and manifest["format"] == bundle.BUNDLE_FORMAT
    assert manifest["window_length"] == 64 and manifest["name"] == "sensor"
    assert set(manifest["files"]) == {"ae1.keras", "ae2.keras", "memory.npy"}
    assert manifest["scaler"]["method"] == "robust" and len(manifest["scaler"]["center"]) == 64
    assert manifest["normalisation"]["weights"] == {"ae1": 1.0, "ae2": 1.0}
    assert {"keras", "backend", "numpy"} <= set(manifest["libraries"])
    assert manifest["training"]["held_out_quantiles"]["score"]["p99"] > 0
    assert manifest["created"].endswith("Z")


def test_a_bundle_records_the_sizes_the_window_gave_and_loads_with_them(
    univariate_trained: CascadeDetector, univariate: np.ndarray, tmp_path: Path
) -> None:
    """Sizes left unset are resolved at fit; the bundle must say what was built, so loading it
    never depends on the rule (or a later change to it)."""
    path = tmp_path / "univariate"
    univariate_trained.save(path)
    spec = json.loads((path / "bundle.json").read_text())["spec"]
    assert spec["ae1"] == {"hidden": [12], "latent": 6, "activation": "relu", "dropout": 0.0}
    assert spec["ae2"] == {"hidden": [4], "latent": 2, "activation": "relu", "dropout": 0.0}
    loaded = CascadeDetector.load(path, expected_window=16, device="cpu")
    assert loaded.spec == loaded.given_spec == univariate_trained.spec
    windows = univariate[:200]
    np.testing.assert_array_equal(
        loaded.score(windows).score, univariate_trained.score(windows).score
    )


def test_bundles_with_the_former_fixed_sizes_still_load(saved: Path) -> None:
    """Bundles written before sizes followed the window held them all, as the fitted spec does;
    D = 64 gives the former defaults, 32 → 16 and 8 → 4."""
    spec = json.loads((saved / "bundle.json").read_text())["spec"]
    assert (spec["ae1"]["hidden"], spec["ae1"]["latent"]) == ([32], 16)
    assert (spec["ae2"]["hidden"], spec["ae2"]["latent"]) == ([8], 4)
    loaded = CascadeDetector.load(saved, device="cpu")
    assert loaded.spec.ae1.latent == 16 and loaded.spec.ae2.latent == 4


def test_missing_file_is_named(copy: Path) -> None:
    (copy / "ae2.keras").unlink()
    with pytest.raises(BundleError, match=r"ae2\.keras is missing"):
        CascadeDetector.load(copy)


def test_modified_model_file_is_detected(copy: Path) -> None:
    with (copy / "ae1.keras").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(BundleError, match=r"ae1\.keras does not match its recorded hash"):
        CascadeDetector.load(copy)


def test_edited_manifest_is_detected(copy: Path) -> None:
    manifest = json.loads((copy / "bundle.json").read_text())
    manifest["normalisation"]["weights"]["ae2"] = 0.0
    (copy / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="was edited after the bundle was written"):
        CascadeDetector.load(copy)


def test_wrong_window_length_is_a_load_error(saved: Path) -> None:
    with pytest.raises(
        BundleError, match="trained on windows of 64 features but the stream carries 32"
    ):
        CascadeDetector.load(saved, expected_window=32)


def test_other_bundle_format_is_refused(copy: Path) -> None:
    manifest = json.loads((copy / "bundle.json").read_text())
    manifest["format"] = bundle.BUNDLE_FORMAT + 1
    (copy / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(
        BundleError, match=f"bundle format {bundle.BUNDLE_FORMAT + 1}; this tandem reads"
    ):
        CascadeDetector.load(copy)


def test_a_directory_without_bundle_json_is_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"not a model bundle: bundle\.json is missing"):
        CascadeDetector.load(tmp_path)


def test_saving_replaces_a_bundle_but_not_other_directories(
    trained: CascadeDetector, copy: Path, tmp_path: Path
) -> None:
    trained.save(copy)
    assert CascadeDetector.load(copy).version == trained.version
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(BundleError, match="is not a model bundle; not replacing it"):
        trained.save(precious)
    assert (precious / "notes.txt").read_text() == "keep me"


def test_models_load_in_safe_mode(tmp_path: Path) -> None:
    inputs = keras.Input((4,))
    sneaky = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    bundle.write_bundle(tmp_path / "b", {"ae1": sneaky}, {"kind": "cascade"})
    bundle.read_manifest(tmp_path / "b")
    with pytest.raises(BundleError, match="cannot be loaded safely"):
        bundle.load_model(tmp_path / "b", "ae1")


def test_a_bundle_keeps_the_held_out_scores_calibrators_start_from(
    trained: CascadeDetector, saved: Path, labelled: Labelled
) -> None:
    """``fit`` keeps the scores of its held-out windows, the bundle carries them exactly (JSON
    numbers round-trip float64), and they are what scoring those windows again gives."""
    held_out = trained.held_out_scores
    n_val = trained.training_summary_["windows"]["held_out"]
    assert held_out.shape == (n_val,) and held_out.dtype == np.float64
    again = trained.score(labelled.train.windows[-n_val:]).score
    np.testing.assert_array_equal(held_out, again.astype(np.float64))
    loaded = CascadeDetector.load(saved, device="cpu")
    np.testing.assert_array_equal(loaded.held_out_scores, held_out)


def test_a_bundle_written_before_held_out_scores_were_kept_loads_without_them(
    copy: Path,
) -> None:
    manifest = json.loads((copy / "bundle.json").read_text())
    del manifest["held_out_scores"], manifest["version"]
    manifest["version"] = bundle._manifest_hash(manifest)
    (copy / "bundle.json").write_text(json.dumps(manifest))
    assert len(CascadeDetector.load(copy, device="cpu").held_out_scores) == 0


def test_a_bundle_keeps_the_training_windows_every_keys_memory_starts_from(
    trained: CascadeDetector, saved: Path, labelled: Labelled, copy: Path
) -> None:
    """The last training windows, exactly, and a scaler fitted on all of them; a bundle
    written before memories (no ``memory.npy``) loads without a seed."""
    seed = trained.memory_seed
    assert seed is not None
    np.testing.assert_array_equal(seed.windows, labelled.train.windows[-len(seed.windows) :])
    loaded = CascadeDetector.load(saved, device="cpu").memory_seed
    assert loaded is not None
    np.testing.assert_array_equal(loaded.windows, seed.windows)
    np.testing.assert_array_equal(loaded.scale, seed.scale)
    manifest = json.loads((copy / "bundle.json").read_text())
    del manifest["files"]["memory.npy"], manifest["version"]
    manifest["version"] = bundle._manifest_hash(manifest)
    (copy / "bundle.json").write_text(json.dumps(manifest))
    (copy / "memory.npy").unlink()
    assert CascadeDetector.load(copy, device="cpu").memory_seed is None
