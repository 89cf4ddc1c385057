"""The cascaded two-autoencoder detector.

AE1 reconstructs the scaled window (D → ``ae1.latent``); AE2 reconstructs AE1's latent code
(``ae1.latent`` → ``ae2.latent``). A window can be anomalous in two ways: AE1 cannot reconstruct it
(its shape is new), or AE1 can but its code sits where normal codes never do (a new combination of
familiar shapes). The score adds both errors' tail decades after normalising each against held-out
windows (``detectors.normalise``), so either way scores high. Per-feature blame is each
feature's share of AE1's squared error.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import keras
import numpy as np
import structlog
from keras import ops
from numpy.typing import NDArray

from detectors import bundle
from detectors.autoencoder import (
    TrainingResult,
    build_autoencoder,
    decoder_of,
    encoder_of,
    train_autoencoder,
)
from detectors.backend import Device, select_device
from detectors.base import DevicePreference, FloatArray, KindLabels, Scores, as_windows
from detectors.errors import BundleError, DetectorError, NotFittedError
from detectors.kinds import CLASSIFIER_FILE, KindClassifier, train_kinds, typing_for
from detectors.normalise import RULE, LogRobustNormaliser
from detectors.scaling import FeatureScaler
from detectors.scoring import (
    CompiledScorer,
    blame_model,
    cascade_error_model,
    cascade_score_model,
    scaled_input,
)
from detectors.spec import CascadeSpec

log = structlog.get_logger(__name__)

PARTS = ("ae1", "ae2")
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
        self._compiled: CompiledScorer | None = None
        self.kinds_: KindClassifier | None = None
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
                "ae1_error": bundle.quantiles(held_out_scores.errors["ae1"]),
                "ae2_error": bundle.quantiles(held_out_scores.errors["ae2"]),
                "score": bundle.quantiles(held_out_scores.score),
            },
            "seconds": round(time.perf_counter() - started, 2),
        }
        self.kinds_ = None
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
            typing=typing_for(self.kinds_, compiled, data),
        )

    def latent_model(self) -> keras.Model:
        """(B, D) raw windows → (B, ``ae1.latent`` + D): AE1's code and AE1's signed residual,
        which kinds are read from (``detectors.kinds``)."""
        window, scaled = scaled_input(self.ae1_, self._fitted())
        code = encoder_of(self.ae1_)(scaled)
        residual = scaled - decoder_of(self.ae1_)(code)
        return keras.Model(window, ops.concatenate([code, residual], axis=1), name="cascade_latent")

    def fit_kinds(self, windows: NDArray[np.floating], kinds: KindLabels) -> Self:
        """Learn anomaly kinds from (n, D) anomalous windows, oldest first, and their (n,)
        kind names (``detectors.kinds``); scores do not change."""
        data = as_windows(windows, expected_width=self.window_length)
        self.kinds_ = train_kinds(self.latent_model(), data, kinds, self.spec.seed)
        self._compiled = self._compile(select_device(self.device))
        self._version = None
        return self

    def save(self, path: Path, name: str | None = None) -> str:
        """Write the bundle to directory ``path``; return its version (content hash)."""
        scaler = self._fitted()
        manifest = bundle.describe(
            self.kind,
            name or Path(path).name,
            self.feature_names_,
            self.spec.model_dump(mode="json"),
            self.training_summary_,
            self.kinds_.manifest() if self.kinds_ else None,
            scaler=scaler.to_dict(),
            normalisation={
                "rule": RULE,
                "weights": dict(zip(PARTS, self.spec.weights, strict=True)),
                **{part: self.normalisers_[part].to_dict() for part in PARTS},
            },
        )
        self.name_ = str(manifest["name"])
        models = {"ae1": self.ae1_, "ae2": self.ae2_}
        if self.kinds_ is not None:
            models[CLASSIFIER_FILE] = self.kinds_.model
        self._version = bundle.write_bundle(Path(path), models, manifest)
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
        window = bundle.check_window(Path(path), manifest, expected_window)
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
        detector.kinds_ = KindClassifier.from_bundle(Path(path), manifest)
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

    def _compile(self, device: Device) -> CompiledScorer:
        normalisers = [self.normalisers_[part] for part in PARTS]
        scores = cascade_score_model(
            self.ae1_, self.ae2_, self.scaler_, normalisers, self.spec.weights
        )
        blame = blame_model(self.ae1_, self.scaler_)
        kinds = self.kinds_.on(self.latent_model()) if self.kinds_ else None
        return CompiledScorer(scores, len(PARTS), blame, device, kinds)

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
