"""Model bundles: a directory of Keras 3 ``.keras`` files plus ``bundle.json``, content-hashed.

``bundle.json`` records, besides what the detector needs to score (kind, window length, feature
names, scaler, score normalisation), how the model was made (spec, training summary, library
versions, creation time) and the sha256 of every model file. Its ``version`` is the sha256 of the
canonical JSON of everything else in it, so it changes whenever any file or setting does; alerts
carry it. Loading re-checks every hash and loads the models with Keras safe mode on (no arbitrary
code from a bundle), and refuses bundles of another format.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import keras
import numpy as np
from numpy.typing import NDArray

from detectors.errors import BundleError

BUNDLE_FORMAT = 1
MANIFEST = "bundle.json"
QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99, "p99.9": 0.999, "max": 1.0}


def write_bundle(
    directory: Path,
    models: Mapping[str, keras.Model],
    manifest: Mapping[str, Any],
    arrays: Mapping[str, NDArray[np.generic]] | None = None,
) -> str:
    """Write ``<name>.keras`` for each model, ``<name>.npy`` for each of ``arrays`` and
    ``bundle.json``; return the bundle's version.

    The bundle is assembled in a sibling temporary directory and moved into place, so a reader
    never sees half a bundle. An existing bundle at ``directory`` is replaced.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        files = {}
        for name, model in models.items():
            path = staging / f"{name}.keras"
            model.save(path)
            files[path.name] = _file_hash(path)
        for name, array in (arrays or {}).items():
            path = staging / f"{name}.npy"
            np.save(path, np.asarray(array), allow_pickle=False)
            files[path.name] = _file_hash(path)
        body = {**manifest, "format": BUNDLE_FORMAT, "files": files}
        version = _manifest_hash(body)
        body["version"] = version
        (staging / MANIFEST).write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
        if directory.exists():
            if not (directory / MANIFEST).exists():
                raise BundleError(f"{directory} exists and is not a model bundle; not replacing it")
            shutil.rmtree(directory)
        staging.rename(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return version


def read_manifest(directory: Path) -> dict[str, Any]:
    """Read and verify ``bundle.json`` and the hashes of the files it lists."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise BundleError(f"{directory} is not a model bundle: {MANIFEST} is missing")
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise BundleError(f"{path} is not valid JSON: {error}") from None
    found = manifest.get("format")
    if found != BUNDLE_FORMAT:
        raise BundleError(
            f"{directory}: bundle format {found!r}; this tandem reads format {BUNDLE_FORMAT}. "
            "Retrain with this version (tandem train) or use the tandem that wrote it."
        )
    for name, recorded in manifest.get("files", {}).items():
        file = directory / name
        if not file.is_file():
            raise BundleError(f"{directory}: {name} is missing from the bundle")
        if _file_hash(file) != recorded:
            raise BundleError(
                f"{directory}: {name} does not match its recorded hash {recorded}; "
                "the bundle was modified after it was written"
            )
    body = {key: value for key, value in manifest.items() if key != "version"}
    if manifest.get("version") != _manifest_hash(body):
        raise BundleError(
            f"{path} does not match its recorded version {manifest.get('version')}; "
            "it was edited after the bundle was written"
        )
    return manifest


def load_model(directory: Path, name: str) -> keras.Model:
    """Load ``<name>.keras`` from a verified bundle with safe mode on, uncompiled."""
    path = Path(directory) / f"{name}.keras"
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except (ValueError, TypeError, OSError) as error:
        raise BundleError(f"{path} cannot be loaded safely: {error}") from None


def load_array(directory: Path, name: str) -> NDArray[np.generic] | None:
    """``<name>.npy`` of a verified bundle (no pickled objects), or None when it has none."""
    path = Path(directory) / f"{name}.npy"
    if not path.is_file():
        return None
    try:
        array: NDArray[np.generic] = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise BundleError(f"{path} cannot be read: {error}") from None
    return array


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def _manifest_hash(body: Mapping[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return f"sha256:{hashlib.sha256(canonical).hexdigest()}"


def describe(
    kind: str,
    name: str,
    feature_names: Sequence[str],
    spec: Mapping[str, Any],
    training: Mapping[str, Any],
    kinds: Mapping[str, Any] | None,
    **specific: Any,
) -> dict[str, Any]:
    """The ``bundle.json`` entries every detector kind writes, plus its ``specific`` ones
    (scaler, normalisation, members...): ``write_bundle`` adds the files and the version."""
    return {
        "kind": kind,
        "name": name,
        "window_length": len(feature_names),
        "feature_names": list(feature_names),
        "spec": dict(spec),
        **specific,
        "training": dict(training),
        "kinds": None if kinds is None else dict(kinds),
        "libraries": library_versions(),
        "created": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }


def check_window(path: Path, manifest: Mapping[str, Any], expected_window: int | None) -> int:
    """The bundle's window length D; a ``BundleError`` when the stream's (``expected_window``)
    differs, so a mismatch stops the daemon at start-up, not at its first record."""
    window = int(manifest["window_length"])
    if expected_window is not None and expected_window != window:
        raise BundleError(
            f"{path} was trained on windows of {window} features but the stream carries "
            f"{expected_window}; retrain on this stream's windows or fix [codec]"
        )
    return window


def quantiles(values: NDArray[np.floating]) -> dict[str, float]:
    """The summary quantiles of (n,) values that training summaries record."""
    return {name: float(np.quantile(values, q)) for name, q in QUANTILES.items()}


def library_versions() -> dict[str, str]:
    """Python, Keras, its backend and the libraries a bundle was written with."""
    versions = {"python": platform.python_version(), "keras": keras.__version__}
    versions["backend"] = keras.backend.backend()
    for package in ("tensorflow", "jax", "numpy", "tandem-detect"):
        try:
            versions[package] = package_version(package)
        except PackageNotFoundError:
            continue
    return versions
