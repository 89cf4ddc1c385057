"""Two pre-trained autoencoders fused into one detector (seed article 000's three strategies).

Each member (``detectors.members``) reads its own subset of the window's D features (price
channels and volume channels, say, or two groups of sensors) and stays frozen unless
``freeze_members`` is false. A small trainable head learns to reconstruct the whole scaled window
from what the members give it:

- ``concat``: both latent codes, concatenated. Score: the head's reconstruction error.
- ``weighted``: both codes projected to a common width and averaged with two weights, fixed
  in ``[fusion].weights`` or learned as a softmax over two logits (``bundle.json`` reports
  them). Score: the head's reconstruction error.
- ``late``: each member's own decoder reconstructs its features; the head reconstructs the whole
  window from both reconstructions. Score: each member's error on its features and the head's
  error on the whole window, each as tail decades (``detectors.normalise``), added: a window
  one member finds odd scores high even when the joint reconstruction copes.

A relation between the groups that the members, trained apart, never saw (the groups moving
against each other) shows only in the head's error: that is what fusion adds over two separate
detectors. Blame is each feature's share of the head's squared error. The kinds an alert is
typed with are read from the fused code: both codes concatenated, or their weighted average.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import keras
import numpy as np
import structlog
from keras import ops
from numpy.typing import NDArray

from detectors import bundle
from detectors.autoencoder import TrainingResult, decoder_of, encoder_of
from detectors.base import DevicePreference, as_windows
from detectors.bundled import BundledDetector, ScoringModels
from detectors.errors import BundleError
from detectors.members import Member, check_member
from detectors.normalise import tail_decades_op
from detectors.scaling import FeatureScaler
from detectors.scoring import error_shares
from detectors.spec import FusionSpec

log = structlog.get_logger(__name__)

JOINT = "joint"
NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
RESERVED = frozenset(
    {JOINT, "ae1", "ae2", "partition", "offset", "key", "ts", "label", "score", "threshold", "flag"}
)
"""Member names become score parts, which sit beside these columns in backtest traces."""
FUSER = "fuser"


@keras.saving.register_keras_serializable(package="tandem")
class WeightedAverage(keras.layers.Layer):  # type: ignore[misc]
    """``w_0 a + w_1 b`` for two (B, W) inputs, with ``w = softmax(logits)``: fixed (the
    logits of the given weights, not trained) or learned (from equal weights)."""

    def __init__(self, fixed: Sequence[float] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fixed = None if fixed is None else [float(w) for w in fixed]

    def build(self, input_shape: Any) -> None:
        if self.fixed is None:
            start = np.zeros(2, np.float32)
        else:
            total = sum(self.fixed)
            start = np.log(np.maximum(np.asarray(self.fixed) / total, 1e-12)).astype(np.float32)
        self.logits = self.add_weight(
            shape=(2,),
            initializer=keras.initializers.Constant(start),
            trainable=self.fixed is None,
            name="logits",
        )

    def call(self, inputs: Sequence[Any]) -> Any:
        weights = ops.softmax(self.logits)
        return weights[0] * inputs[0] + weights[1] * inputs[1]

    def mix(self) -> list[float]:
        """The two weights in force, summing to 1."""
        logits = np.asarray(keras.ops.convert_to_numpy(self.logits), dtype=np.float64)
        weights = np.exp(logits - logits.max())
        return [float(w) for w in weights / weights.sum()]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "fixed": self.fixed}


def build_fuser(spec: FusionSpec, widths: Sequence[int], output_width: int) -> keras.Model:
    """The trainable head: the members' codes (``late``: their reconstructions), (B, w_i) each,
    → (B, ``output_width``) the whole scaled window."""
    inputs = [keras.Input((width,), name=f"member_{i}") for i, width in enumerate(widths)]
    if spec.mode == "weighted":
        if spec.project:
            common = spec.width or max(widths)
            codes = [
                keras.layers.Dense(common, name=f"project_{i}")(x) for i, x in enumerate(inputs)
            ]
        else:
            codes = inputs
        fused = WeightedAverage(spec.weights, name="mix")(codes)
    else:
        fused = keras.layers.Concatenate(name="fused")(inputs)
    hidden = fused
    for i, width in enumerate(spec.head):
        hidden = keras.layers.Dense(width, activation=spec.activation, name=f"head_{i}")(hidden)
    reconstruction = keras.layers.Dense(output_width, name="reconstruction")(hidden)
    return keras.Model(inputs, reconstruction, name=FUSER)


class FusionDetector(BundledDetector):
    """Fit the head on normal windows, score any windows; ``save``/``load`` as a model bundle.

    ``members`` are the two pre-trained autoencoders; ``feature_names`` (D,) name the stream's
    window features, which the members' features are looked up in. Learned attributes end in
    ``_``: ``scaler_`` (the whole window's), ``fuser_``, ``normalisers_``, ``training_summary_``.
    """

    spec: FusionSpec

    def __init__(
        self,
        members: Sequence[Member],
        feature_names: Sequence[str],
        spec: FusionSpec | None = None,
        device: DevicePreference = "auto",
        callbacks: Sequence[keras.callbacks.Callback] = (),
    ) -> None:
        super().__init__(spec or FusionSpec(), device, callbacks)
        self.kind = f"fusion-{self.spec.mode}"
        self.members = list(members)
        self.feature_names_ = tuple(feature_names)
        self._check_members()
        self.indices = [m.indices_in(self.feature_names_) for m in self.members]
        self.parts = (
            (*(m.name for m in self.members), JOINT) if self.spec.mode == "late" else (JOINT,)
        )

    @property
    def window_length(self) -> int:
        return len(self.feature_names_)

    @property
    def mix_weights(self) -> list[float] | None:
        """``weighted``: the two members' weights in force (learned or fixed); else None."""
        if self.spec.mode != "weighted":
            return None
        layer = self._fitted_fuser().get_layer("mix")
        assert isinstance(layer, WeightedAverage)
        return layer.mix()

    def fit(self, windows: NDArray[np.floating]) -> Self:
        """Train the head (and the members, unless frozen) on (n, D) normal windows, oldest
        first; the last ``spec.validation_fraction`` stops training and fixes the score
        normalisation."""
        spec = self.spec
        data = as_windows(windows, expected_width=self.window_length)
        n = len(data)
        n_val, started = self._start_training(n)
        self.scaler_ = FeatureScaler.fit(data[: n - n_val], spec.scaler)
        widths = [m.input_width if spec.mode == "late" else m.latent_width for m in self.members]
        self.fuser_ = build_fuser(spec, widths, self.window_length)
        for member in self.members:
            # concat and weighted read only the members' encoders; late reads both halves.
            member.autoencoder.trainable = not spec.freeze_members
            decoder_of(member.autoencoder).trainable = (
                not spec.freeze_members and spec.mode == "late"
            )
        graph = self._graph()
        trainer = keras.Model(graph["window"], graph["reconstruction"], name="fusion_training")
        trainer.compile(optimizer=keras.optimizers.Adam(spec.learning_rate), loss="mse")
        target = self.scaler_.transform(data)
        history = trainer.fit(
            data[: n - n_val],
            target[: n - n_val],
            validation_data=(data[n - n_val :], target[n - n_val :]),
            epochs=spec.epochs,
            batch_size=spec.batch_size,
            shuffle=True,
            verbose=0,
            callbacks=[
                keras.callbacks.EarlyStopping(patience=spec.patience, restore_best_weights=True),
                *self.callbacks,
            ],
        )
        for member in self.members:
            member.autoencoder.trainable = False
        errors = keras.Model(graph["window"], graph["errors"]).predict(
            data[n - n_val :], batch_size=4096, verbose=0
        )
        errors = errors if isinstance(errors, list) else [errors]
        stages = {FUSER: TrainingResult.from_history(history.history).__dict__}
        self._calibrate(data, n_val, errors, stages, started)
        log.info(
            "fusion_trained",
            mode=spec.mode,
            windows=n,
            mix_weights=self.mix_weights,
            seconds=self.training_summary_["seconds"],
        )
        return self

    def latent_model(self) -> keras.Model:
        """(B, D) raw windows → (B, L + D): the fused code (the codes concatenated, or for
        ``weighted`` their weighted average) and the head's signed residual, which kinds are
        read from (``detectors.kinds``)."""
        return self._latent(self._graph())

    @staticmethod
    def _latent(graph: dict[str, Any]) -> keras.Model:
        features = ops.concatenate([graph["fused_code"], graph["residual"]], axis=1)
        return keras.Model(graph["window"], features, name="fusion_latent")

    def _bundle_models(self) -> dict[str, keras.Model]:
        fuser = self._fitted_fuser()
        models = {f"member_{m.name}": m.autoencoder for m in self.members}
        models[FUSER] = fuser
        return models

    def _bundle_entries(self) -> dict[str, Any]:
        members = [
            {
                "name": m.name,
                "feature_names": list(m.feature_names),
                "scaler": m.scaler.to_dict(),
                "latent_width": m.latent_width,
                "source": m.source,
                "fine_tuned": not self.spec.freeze_members,
            }
            for m in self.members
        ]
        return {
            "members": members,
            "mix_weights": self.mix_weights,
            "normalisation": self._normalisation(parts=list(self.parts)),
        }

    @classmethod
    def _check_kind(cls, path: Path, kind: object) -> None:
        if not str(kind).startswith("fusion-"):
            raise BundleError(f"{path} holds a {kind!r} detector, not a fusion")

    @classmethod
    def _from_bundle(
        cls, path: Path, manifest: Mapping[str, Any], device: DevicePreference
    ) -> Self:
        members = [
            Member(
                entry["name"],
                bundle.load_model(path, f"member_{entry['name']}"),
                FeatureScaler.from_dict(entry["scaler"]),
                tuple(entry["feature_names"]),
                dict(entry.get("source", {})),
            )
            for entry in manifest["members"]
        ]
        detector = cls(
            members, manifest["feature_names"], FusionSpec.model_validate(manifest["spec"]), device
        )
        detector.fuser_ = bundle.load_model(path, FUSER)
        return detector

    def _check_members(self) -> None:
        """Raise ``BundleError`` for members that cannot be fused as the spec asks."""
        if len(self.members) != 2:
            raise BundleError(f"a fusion fuses two autoencoders; {len(self.members)} given")
        names = [m.name for m in self.members]
        if len(set(names)) != 2 or any(not NAME.fullmatch(n) or n in RESERVED for n in names):
            raise BundleError(
                f"members need two different names of lower-case letters, digits and '_', "
                f"other than {', '.join(sorted(RESERVED))}: {names}"
            )
        for member in self.members:
            check_member(member)
        widths = [m.latent_width for m in self.members]
        if self.spec.mode == "weighted" and not self.spec.project and widths[0] != widths[1]:
            raise BundleError(
                f"members {names[0]!r} and {names[1]!r} have latent widths {widths[0]} and "
                f"{widths[1]}; averaging needs equal widths: set [fusion].project = true to "
                "project both to a common width"
            )

    def _graph(self) -> dict[str, Any]:
        """The functional graph from (B, D) raw windows: ``reconstruction`` (B, D) of the scaled
        window, ``errors`` [(B,) per part], ``squared`` (B, D) the head's squared error, and
        ``fused_code``."""
        window = keras.Input((self.window_length,), name="window")
        target = _normalised(window, self.scaler_)
        codes, member_errors, fuser_inputs = [], [], []
        for member, index in zip(self.members, self.indices, strict=True):
            own = _normalised(ops.take(window, index, axis=1), member.scaler)
            code, rebuilt = _halves(member)(own)
            codes.append(code)
            if self.spec.mode == "late":
                member_errors.append(ops.mean(ops.square(own - rebuilt), axis=1))
                fuser_inputs.append(rebuilt)
            else:
                fuser_inputs.append(code)
        reconstruction = self.fuser_(fuser_inputs)
        residual = target - reconstruction
        squared = ops.square(residual)
        if self.spec.mode == "weighted":
            mixer = keras.Model(self.fuser_.inputs, self.fuser_.get_layer("mix").output)
            fused_code = mixer(codes)
        else:
            fused_code = keras.layers.Concatenate(name="fused_code")(codes)
        return {
            "window": window,
            "reconstruction": reconstruction,
            "errors": [*member_errors, ops.mean(squared, axis=1)],
            "squared": squared,
            "residual": residual,
            "fused_code": fused_code,
        }

    def _scoring_models(self) -> ScoringModels:
        graph = self._graph()
        parts = [
            tail_decades_op(self.normalisers_[part].op(error))
            for part, error in zip(self.parts, graph["errors"], strict=True)
        ]
        scores = keras.Model(graph["window"], [*parts, *graph["errors"]], name="fusion_scores")
        blame = keras.Model(graph["window"], error_shares(graph["squared"]), name="fusion_blame")
        return scores, blame, lambda: self._latent(graph)

    def _fitted_fuser(self) -> keras.Model:
        fuser: keras.Model | None = getattr(self, "fuser_", None)
        if fuser is None:
            raise self._not_fitted()
        return fuser


def _halves(member: Member) -> keras.Model:
    """(B, d) scaled member features → [(B, latent) code, (B, d) reconstruction], named after
    the member so that two members' nested ``encoder``/``decoder`` names do not clash."""
    features = keras.Input((member.input_width,), name=f"{member.name}_features")
    code = encoder_of(member.autoencoder)(features)
    rebuilt = decoder_of(member.autoencoder)(code)
    return keras.Model(features, [code, rebuilt], name=f"member_{member.name}")


def _normalised(values: Any, scaler: FeatureScaler) -> Any:
    """(B, d) values → (B, d) scaled by ``scaler``, as a layer of the graph."""
    return keras.layers.Normalization(mean=scaler.center, variance=np.square(scaler.scale))(values)
