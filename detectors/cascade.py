"""The cascaded two-autoencoder detector.

AE1 reconstructs the scaled window (D → ``ae1.latent``); AE2 reconstructs AE1's latent code
(``ae1.latent`` → ``ae2.latent``). A window can be anomalous in two ways: AE1 cannot reconstruct it
(its shape is new), or AE1 can but its code sits where normal codes never do (a new combination of
familiar shapes). The score adds both errors' tail decades after normalising each against held-out
windows (``detectors.normalise``), so either way scores high. Per-feature blame is each
feature's share of AE1's squared error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
from detectors.base import DevicePreference, FloatArray, as_windows
from detectors.bundled import BundledDetector, ScoringModels
from detectors.errors import BundleError, DetectorError
from detectors.scaling import FeatureScaler
from detectors.scoring import (
    blame_model,
    cascade_error_model,
    cascade_score_model,
    scaled_input,
)
from detectors.spec import CascadeSpec

log = structlog.get_logger(__name__)

PARTS = ("ae1", "ae2")


class CascadeDetector(BundledDetector):
    """Fit on normal windows, score any windows; ``save``/``load`` as a model bundle.

    ``given_spec`` is the spec as constructed, its autoencoder sizes possibly unset; ``spec`` is
    the same until ``fit`` sizes it for the window (``CascadeSpec.sized_for``), and is what the
    bundle records. Each ``fit`` sizes ``given_spec`` afresh for its own windows.

    Learned attributes (set by ``fit`` or ``load``) end in ``_``: ``scaler_``, ``ae1_``, ``ae2_``,
    ``normalisers_``, ``training_summary_``.
    """

    kind = "cascade"
    parts = PARTS
    spec: CascadeSpec

    def __init__(
        self,
        spec: CascadeSpec | None = None,
        feature_names: Sequence[str] | None = None,
        device: DevicePreference = "auto",
        callbacks: Sequence[keras.callbacks.Callback] = (),
    ) -> None:
        given = spec or CascadeSpec()
        super().__init__(given, device, callbacks)
        self.given_spec = given
        self.feature_names_in = tuple(feature_names) if feature_names is not None else None

    @property
    def window_length(self) -> int:
        return int(self._fitted().center.shape[0])

    def fit(self, windows: NDArray[np.floating]) -> Self:
        """Train on (n, D) windows of normal behaviour, oldest first.

        The last ``spec.validation_fraction`` of them is held out: it stops training early and
        fixes the score normalisation. AE2 trains on AE1's codes of the same split. Unset
        autoencoder sizes follow D (``CascadeSpec.sized_for``); a ``DetectorError`` when the set
        ones do not fit D.
        """
        data = as_windows(windows)
        n, width = data.shape
        names = self._names_for(width)
        n_val, started = self._start_training(n)
        spec = self.given_spec.sized_for(width)
        ae1_spec, ae2_spec = spec.autoencoders(width)
        scaler = FeatureScaler.fit(data[: n - n_val], spec.scaler)
        scaled = scaler.transform(data)
        train, held_out = scaled[: n - n_val], scaled[n - n_val :]

        ae1 = build_autoencoder(ae1_spec, width, "ae1")
        result1 = self._train(ae1, train, held_out)
        encoder = encoder_of(ae1)
        codes_train = encoder.predict(train, batch_size=4096, verbose=0)
        codes_held_out = encoder.predict(held_out, batch_size=4096, verbose=0)
        ae2 = build_autoencoder(ae2_spec, ae1_spec.latent, "ae2")
        result2 = self._train(ae2, codes_train, codes_held_out)

        self.spec = spec
        self.scaler_ = scaler
        self.ae1_, self.ae2_ = ae1, ae2
        self.feature_names_ = names
        errors = cascade_error_model(ae1, ae2, scaler).predict(
            data[n - n_val :], batch_size=4096, verbose=0
        )
        stages = {"ae1": result1.__dict__, "ae2": result2.__dict__}
        self._calibrate(data, n_val, errors, stages, started)
        log.info(
            "cascade_trained",
            windows=n,
            features=width,
            ae1_layers=[width, *ae1_spec.hidden, ae1_spec.latent],
            ae2_layers=[ae1_spec.latent, *ae2_spec.hidden, ae2_spec.latent],
            seconds=self.training_summary_["seconds"],
        )
        return self

    def latent_model(self) -> keras.Model:
        """(B, D) raw windows → (B, ``ae1.latent`` + D): AE1's code and AE1's signed residual,
        which kinds are read from (``detectors.kinds``)."""
        window, scaled = scaled_input(self.ae1_, self._fitted())
        code = encoder_of(self.ae1_)(scaled)
        residual = scaled - decoder_of(self.ae1_)(code)
        return keras.Model(window, ops.concatenate([code, residual], axis=1), name="cascade_latent")

    def _bundle_models(self) -> dict[str, keras.Model]:
        self._fitted()
        return {"ae1": self.ae1_, "ae2": self.ae2_}

    def _bundle_entries(self) -> dict[str, Any]:
        weights = dict(zip(PARTS, self.spec.weights, strict=True))
        return {"normalisation": self._normalisation(weights=weights)}

    @classmethod
    def _check_kind(cls, path: Path, kind: object) -> None:
        if kind != cls.kind:
            raise BundleError(f"{path} holds a {kind!r} detector, not {cls.kind!r}")

    @classmethod
    def _from_bundle(
        cls, path: Path, manifest: Mapping[str, Any], device: DevicePreference
    ) -> Self:
        detector = cls(
            CascadeSpec.model_validate(manifest["spec"]), manifest["feature_names"], device
        )
        detector.ae1_ = bundle.load_model(path, "ae1")
        detector.ae2_ = bundle.load_model(path, "ae2")
        detector.feature_names_ = tuple(manifest["feature_names"])
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

    def _scoring_models(self) -> ScoringModels:
        normalisers = [self.normalisers_[part] for part in PARTS]
        scores = cascade_score_model(
            self.ae1_, self.ae2_, self.scaler_, normalisers, self.spec.weights
        )
        return scores, blame_model(self.ae1_, self.scaler_), self.latent_model

    def _fitted(self) -> FeatureScaler:
        scaler: FeatureScaler | None = getattr(self, "scaler_", None)
        if scaler is None:
            raise self._not_fitted()
        return scaler

    def _names_for(self, width: int) -> tuple[str, ...]:
        if self.feature_names_in is None:
            return tuple(f"f{i}" for i in range(width))
        if len(self.feature_names_in) != width:
            raise DetectorError(
                f"{len(self.feature_names_in)} feature names given for windows of {width} features"
            )
        return self.feature_names_in
