"""Alert typing: which kind of anomaly a flagged window is, read from the detector's latent code.

Where training data names the kind of each anomalous window (``spike``, ``level_shift``,
``frozen``, ``correlation_break``, or the user's own words), a small softmax head learns the kind
from the code the detector's first encoder gives the window (the cascade's AE1 code; a fusion's
fused code) and from that stage's signed residual (the scaled window minus its reconstruction,
D values). The code alone names the right kind for 0.39 to 0.44 of the anomalous windows of
events it never saw, the code with the residual for 0.73 to 0.74 (bench/eval_fusion.py's feed,
cascade and weighted fusion): a code says where a window sits, not what broke, while the
residual shows the shape of the break (one step, a run, a flat line, an inverted channel).

The detector stays frozen: the head is fitted on its codes afterwards, so adding kinds never
changes a score. It is trained on anomalous windows only, so it answers "which kind, if this
is an anomaly"; alerts carry its answer and its probability.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import structlog
from numpy.typing import NDArray

from detectors import bundle
from detectors.base import KindLabels
from detectors.errors import DetectorError
from detectors.scoring import CompiledScorer

log = structlog.get_logger(__name__)

MIN_PER_KIND = 5
"""A kind with fewer labelled windows than this cannot be learned and is an error."""


@dataclass
class KindClassifier:
    """``model`` maps (B, L) latent codes to (B, K) probabilities of ``kinds`` (K,);
    ``summary`` holds the training windows per kind and the held-out accuracy per kind."""

    model: keras.Model
    kinds: tuple[str, ...]
    summary: dict[str, Any]

    @classmethod
    def fit(
        cls,
        codes: NDArray[np.float32],
        kinds: KindLabels,
        hidden: int = 64,
        epochs: int = 100,
        validation_fraction: float = 0.2,
        seed: int = 0,
    ) -> KindClassifier:
        """Fit on (n, L) codes of anomalous windows and their (n,) kind names.

        Each kind's last ``validation_fraction`` of windows (in the order given, oldest first:
        its latest events) is held out of a first fit that measures per-kind accuracy on
        events it did not see; the classifier kept is then fitted on every window. A fixed
        number of epochs, not early stopping: stopping on other events' loss kept an early,
        underfitted epoch (0.38 of its own training windows right, 0.29 of unseen ones, against
        0.75 unseen with this recipe on bench/eval_fusion.py's feed).
        """
        names = np.asarray(kinds, dtype=str)
        labels, counts = np.unique(names, return_counts=True)
        if len(labels) < 2:
            raise DetectorError(f"kind labels name {len(labels)} kind(s); at least 2 are needed")
        scarce = [f"{k} ({c})" for k, c in zip(labels, counts, strict=True) if c < MIN_PER_KIND]
        if scarce:
            raise DetectorError(
                f"too few labelled windows of kind {', '.join(scarce)}; "
                f"at least {MIN_PER_KIND} of each are needed"
            )
        target = np.searchsorted(labels, names)
        held_out = np.zeros(len(names), dtype=bool)
        for index in range(len(labels)):
            rows = np.flatnonzero(target == index)
            held_out[rows[len(rows) - max(round(len(rows) * validation_fraction), 1) :]] = True
        trial = _fitted(codes[~held_out], target[~held_out], len(labels), hidden, epochs, seed)
        predicted = np.argmax(trial.predict(codes[held_out], verbose=0), axis=1)
        truth = target[held_out]
        accuracy = {
            str(kind): float(np.mean(predicted[truth == i] == i)) for i, kind in enumerate(labels)
        }
        summary = {
            "windows": {str(k): int(c) for k, c in zip(labels, counts, strict=True)},
            "held_out_accuracy": accuracy,
            "held_out_accuracy_overall": float(np.mean(predicted == truth)),
        }
        model = _fitted(codes, target, len(labels), hidden, epochs, seed)
        log.info("kind_classifier_trained", **summary)
        return cls(model, tuple(str(k) for k in labels), summary)

    def on(self, latent: keras.Model) -> keras.Model:
        """(B, D) raw windows → (B, K) probabilities, through ``latent`` ((B, D) → (B, L))."""
        window = keras.Input(latent.input_shape[1:], name="window")
        return keras.Model(window, self.model(latent(window)), name="kind_probabilities")

    def manifest(self) -> dict[str, Any]:
        """What ``bundle.json`` records under ``"kinds"``."""
        return {"names": list(self.kinds), "training": self.summary}

    @classmethod
    def from_bundle(cls, path: Path, manifest: dict[str, Any]) -> KindClassifier | None:
        """The classifier of a verified bundle, or None when it has none."""
        entry = manifest.get("kinds")
        if not entry:
            return None
        model = bundle.load_model(path, CLASSIFIER_FILE)
        return cls(model, tuple(entry["names"]), dict(entry.get("training", {})))


CLASSIFIER_FILE = "classifier"


def kind_answers(
    kinds: tuple[str, ...], probabilities: NDArray[np.float32]
) -> tuple[list[str], NDArray[np.float32]]:
    """(k, K) probabilities → the k most likely kind names and their (k,) probabilities."""
    best = np.argmax(probabilities, axis=1)
    return [kinds[i] for i in best.tolist()], probabilities[np.arange(len(best)), best]


def train_kinds(
    latent: keras.Model,
    windows: NDArray[np.float32],
    kinds: KindLabels,
    seed: int,
) -> KindClassifier:
    """A classifier of (n, D) anomalous windows' kinds (n,), fitted on their ``latent`` codes."""
    if len(windows) != len(kinds):
        raise DetectorError(f"{len(windows)} windows but {len(kinds)} kind labels")
    codes = latent.predict(windows, batch_size=4096, verbose=0)
    return KindClassifier.fit(codes, kinds, seed=seed)


def typing_for(
    classifier: KindClassifier | None, compiled: CompiledScorer, data: NDArray[np.float32]
) -> Callable[[NDArray[np.intp]], tuple[list[str], NDArray[np.float32]]] | None:
    """``Scores.typing`` for windows ``data`` (n, D): rows → kinds and probabilities."""
    if classifier is None:
        return None
    names = classifier.kinds
    return lambda rows: kind_answers(names, compiled.kind_probabilities(data[rows]))


def _fitted(
    codes: NDArray[np.float32],
    target: NDArray[np.intp],
    n_kinds: int,
    hidden: int,
    epochs: int,
    seed: int,
) -> keras.Model:
    """A softmax classifier of (n, L) ``codes`` into ``n_kinds``, its inputs standardised with
    the codes' own mean and variance (a layer of the model, so it travels in the bundle)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((int(codes.shape[1]),), name="code")
    variance = np.maximum(codes.var(axis=0), 1e-12)
    scaled = keras.layers.Normalization(mean=codes.mean(axis=0), variance=variance)(inputs)
    hidden_layer = keras.layers.Dense(hidden, activation="relu", name="kind_hidden")(scaled)
    dropped = keras.layers.Dropout(0.3, name="kind_dropout")(hidden_layer)
    probabilities = keras.layers.Dense(n_kinds, activation="softmax", name="kind")(dropped)
    model = keras.Model(inputs, probabilities, name="kind_classifier")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(
        codes,
        target,
        epochs=epochs,
        batch_size=64,
        verbose=0,
        class_weight=_balanced(target, n_kinds),
    )
    return model


def _balanced(target: NDArray[np.intp], n_kinds: int) -> dict[int, float]:
    """Class weights that give every kind the same total weight (spikes are short events)."""
    counts = np.bincount(target, minlength=n_kinds).astype(np.float64)
    return {i: float(len(target) / (n_kinds * max(c, 1.0))) for i, c in enumerate(counts)}
