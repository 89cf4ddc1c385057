"""The cascaded two-autoencoder detector.

AE1 reconstructs the scaled window (D → ``ae1.latent``); AE2 reconstructs AE1's latent code
(``ae1.latent`` → ``ae2.latent``). A window can be anomalous in two ways: AE1 cannot reconstruct it
(its shape is new), or AE1 can but its code sits where normal codes never do (a new combination of
familiar shapes). The score adds both errors' tail decades after normalising each against held-out
windows (``detectors.normalise``), so either way scores high. Per-feature blame is each
feature's share of AE1's squared error.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, Self

import keras
import numpy as np
import structlog
from numpy.typing import NDArray

from detectors import bundle
from detectors.autoencoder import (
    TrainingResult,
    build_autoencoder,
    encoder_of,
    train_autoencoder,
)
from detectors.backend import Device, select_device
from detectors.base import DevicePreference, FloatArray, Scores, as_windows
from detectors.errors import BundleError, DetectorError, NotFittedError
from detectors.normalise import RULE, LogRobustNormaliser
from detectors.scaling import FeatureScaler
from detectors.scoring import CompiledCascade, cascade_error_model
from detectors.spec import CascadeSpec

log = structlog.get_logger(__name__)

PARTS = ("ae1", "ae2")
QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99, "p99.9": 0.999, "max": 1.0}
MIN_TRAINING_WINDOWS = 50


class CascadeDetector:
    """Fit on normal windows, score any windows; ``save``/``load`` as a model bundle.

    Learned attributes (set by ``fit`` or ``load``) end in ``_``: ``scaler_``, ``ae1_``, ``ae2_``,
    ``normalisers_``, ``training_summary_``.
    """

    kind = "cascade"

    def __init__(
        self,
        spec: CascadeSpec | None = None,
        feature_names: Sequence[str] | None = None,
        device: DevicePreference = "auto",
        callbacks: Sequence[keras.callbacks.Callback] = (),
    ) -> None:
        self.spec = spec or CascadeSpec()
        self.feature_names_in = tuple(feature_names) if feature_names is not None else None
        self.device = device
        self.callbacks = tuple(callbacks)
        self._version: str | None = None
        self._compiled: CompiledCascade | None = None
        self.name_ = "unsaved"

    @property
    def window_length(self) -> int:
        return int(self._fitted().center.shape[0])

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.feature_names_

    @property
    def version(self) -> str | None:
        return self._version

    def fit(self, windows: NDArray[np.floating]) -> Self:
        """Train on (n, D) windows of normal behaviour, oldest first.

        The last ``spec.validation_fraction`` of them is held out: it stops training early and
        fixes the score normalisation. AE2 trains on AE1's codes of the same split.
        """
        spec = self.spec
        data = as_windows(windows)
        n, width = data.shape
        names = self._names_for(width)
        n_val = max(round(n * spec.validation_fraction), 1)
        if n - n_val < MIN_TRAINING_WINDOWS:
            raise DetectorError(
                f"{n} windows leave {n - n_val} to train on; at least {MIN_TRAINING_WINDOWS} needed"
            )
        if spec.ae1.latent >= width:
            raise DetectorError(
                f"ae1.latent ({spec.ae1.latent}) must be below the window length ({width})"
            )
        started = time.perf_counter()
        keras.utils.set_random_seed(spec.seed)
        scaler = FeatureScaler.fit(data[: n - n_val], spec.scaler)
        scaled = scaler.transform(data)
        train, held_out = scaled[: n - n_val], scaled[n - n_val :]

        ae1 = build_autoencoder(spec.ae1, width, "ae1")
        result1 = self._train(ae1, train, held_out)
        encoder = encoder_of(ae1)
        codes_train = encoder.predict(train, batch_size=4096, verbose=0)
        codes_held_out = encoder.predict(held_out, batch_size=4096, verbose=0)
        ae2 = build_autoencoder(spec.ae2, spec.ae1.latent, "ae2")
        result2 = self._train(ae2, codes_train, codes_held_out)

        self.scaler_ = scaler
        self.ae1_, self.ae2_ = ae1, ae2
        self.feature_names_ = names
        errors = cascade_error_model(ae1, ae2, scaler).predict(
            data[n - n_val :], batch_size=4096, verbose=0
        )
        self.normalisers_ = {
            part: LogRobustNormaliser.fit(e) for part, e in zip(PARTS, errors, strict=True)
        }
        self._compiled = self._compile(select_device(self.device))
        held_out_scores = self.score(data[n - n_val :])
        self.training_summary_: dict[str, Any] = {
            "windows": {"train": n - n_val, "held_out": n_val},
            "ae1": result1.__dict__,
            "ae2": result2.__dict__,
            "held_out_quantiles": {
                "ae1_error": _quantiles(held_out_scores.errors["ae1"]),
                "ae2_error": _quantiles(held_out_scores.errors["ae2"]),
                "score": _quantiles(held_out_scores.score),
            },
            "seconds": round(time.perf_counter() - started, 2),
        }
        self._version = None
        log.info(
            "cascade_trained", windows=n, features=width, seconds=self.training_summary_["seconds"]
        )
        return self

    def score(self, windows: NDArray[np.floating]) -> Scores:
        """Score (n, D) windows; see ``Scores`` for what comes back."""
        self._fitted()
        compiled = self._compiled
        assert compiled is not None
        data = as_windows(windows, expected_width=self.window_length)
        out = compiled(data)
        return Scores(
            score=out.parts[0] + out.parts[1],
            parts=dict(zip(PARTS, out.parts, strict=True)),
            errors=dict(zip(PARTS, out.errors, strict=True)),
            blame=lambda rows: compiled.shares(data[rows]),
        )

    def save(self, path: Path, name: str | None = None) -> str:
        """Write the bundle to directory ``path``; return its version (content hash)."""
        scaler = self._fitted()
        manifest = {
            "kind": self.kind,
            "name": name or Path(path).name,
            "window_length": self.window_length,
            "feature_names": list(self.feature_names_),
            "spec": self.spec.model_dump(mode="json"),
            "scaler": scaler.to_dict(),
            "normalisation": {
                "rule": RULE,
                "weights": dict(zip(PARTS, self.spec.weights, strict=True)),
                **{part: self.normalisers_[part].to_dict() for part in PARTS},
            },
            "training": self.training_summary_,
            "libraries": _library_versions(),
            "created": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        }
        self.name_ = str(manifest["name"])
        self._version = bundle.write_bundle(
            Path(path), {"ae1": self.ae1_, "ae2": self.ae2_}, manifest
        )
        log.info("bundle_written", path=str(path), version=self._version)
        return self._version

    @classmethod
    def load(
        cls, path: Path, expected_window: int | None = None, device: DevicePreference = "auto"
    ) -> Self:
        """Load and verify a bundle; ``expected_window`` (the stream's D) must match if given."""
        manifest = bundle.read_manifest(Path(path))
        if manifest.get("kind") != cls.kind:
            raise BundleError(f"{path} holds a {manifest.get('kind')!r} detector, not {cls.kind!r}")
        window = int(manifest["window_length"])
        if expected_window is not None and expected_window != window:
            raise BundleError(
                f"{path} was trained on windows of {window} features but the stream carries "
                f"{expected_window}; retrain on this stream's windows or fix [codec]"
            )
        detector = cls(
            CascadeSpec.model_validate(manifest["spec"]), manifest["feature_names"], device
        )
        detector.scaler_ = FeatureScaler.from_dict(manifest["scaler"])
        detector.ae1_ = bundle.load_model(Path(path), "ae1")
        detector.ae2_ = bundle.load_model(Path(path), "ae2")
        detector.feature_names_ = tuple(manifest["feature_names"])
        norms = manifest["normalisation"]
        detector.normalisers_ = {part: LogRobustNormaliser.from_dict(norms[part]) for part in PARTS}
        detector.training_summary_ = manifest.get("training", {})
        detector._compiled = detector._compile(select_device(device))
        detector._compiled.warm_up()
        detector._version = manifest["version"]
        detector.name_ = str(manifest.get("name", Path(path).name))
        log.info("bundle_loaded", path=str(path), version=detector._version, window=window)
        return detector

    def _train(self, model: keras.Model, train: FloatArray, held_out: FloatArray) -> TrainingResult:
        spec = self.spec
        return train_autoencoder(
            model,
            train,
            held_out,
            epochs=spec.epochs,
            batch_size=spec.batch_size,
            learning_rate=spec.learning_rate,
            patience=spec.patience,
            callbacks=self.callbacks,
        )

    def _compile(self, device: Device) -> CompiledCascade:
        normalisers = [self.normalisers_[part] for part in PARTS]
        return CompiledCascade(
            self.ae1_, self.ae2_, self.scaler_, normalisers, self.spec.weights, device
        )

    def _fitted(self) -> FeatureScaler:
        scaler: FeatureScaler | None = getattr(self, "scaler_", None)
        if scaler is None:
            raise NotFittedError("this CascadeDetector is not fitted; call fit() or load() first")
        return scaler

    def _names_for(self, width: int) -> tuple[str, ...]:
        if self.feature_names_in is None:
            return tuple(f"f{i}" for i in range(width))
        if len(self.feature_names_in) != width:
            raise DetectorError(
                f"{len(self.feature_names_in)} feature names given for windows of {width} features"
            )
        return self.feature_names_in


def _quantiles(values: FloatArray) -> dict[str, float]:
    return {name: float(np.quantile(values, q)) for name, q in QUANTILES.items()}


def _library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "keras": keras.__version__}
    versions["backend"] = keras.backend.backend()
    for package in ("tensorflow", "jax", "numpy", "tandem-detect"):
        try:
            versions[package] = package_version(package)
        except PackageNotFoundError:
            continue
    return versions
