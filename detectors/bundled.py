"""What the cascade and the fusions share: a compiled scorer, a kind classifier, a bundle.

``BundledDetector`` holds that lifecycle once: the held-out split that starts ``fit`` and the
score normalisation that ends it, ``fit_kinds``, ``score`` (the parts' sum, blame and kinds
through one ``CompiledScorer``), and ``save``/``load`` with the ``bundle.json`` entries every kind
writes (``bundle.describe``). A kind supplies only what differs: its training, its scoring graph
(``_scoring_models``), its models and entries in the bundle, and how it is rebuilt from them.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import keras
import numpy as np
import structlog
from numpy.typing import NDArray

from calibration.memory import MemorySeed
from detectors import bundle
from detectors.backend import Device, select_device
from detectors.base import DevicePreference, FloatArray, KindLabels, Scores, as_windows
from detectors.errors import DetectorError, NotFittedError
from detectors.kinds import CLASSIFIER_FILE, KindClassifier, train_kinds, typing_for
from detectors.normalise import RULE, LogRobustNormaliser
from detectors.scaling import FeatureScaler
from detectors.scoring import CompiledScorer
from detectors.spec import TrainingSpec

MIN_TRAINING_WINDOWS = 50

HELD_OUT_SCORES_KEPT = 10_000
"""The most held-out scores a bundle keeps (the latest): a default calibration window's worth."""
MEMORY_WINDOWS_KEPT = 2_500
"""Training windows the bundle keeps (the latest) to start each key's memory
(``calibration.memory``): ``[memory].capacity``'s default."""
MEMORY_FILE = "memory"

ScoringModels = tuple[keras.Model, keras.Model, Callable[[], keras.Model]]
"""``(scores, blame, latent)`` from (B, D) raw windows: ``[*parts, *errors]``, each (B,); (B, D)
blame shares; and a maker of the (B, L) latent model that kinds are read from, called only
when the detector has a kind classifier (building it costs time and Keras layer names)."""


class BundledDetector(ABC):
    """A ``Detector`` whose score is the sum of named parts (``parts``, in the scorer's order).

    Learned attributes end in ``_``: ``scaler_`` (the whole window's), ``normalisers_`` (one per
    part), ``training_summary_``, ``held_out_scores_`` (the bundle keeps them for calibrators to
    start from), ``kinds_`` and those of the kind.
    """

    kind: str
    spec: TrainingSpec
    parts: tuple[str, ...]
    feature_names_: tuple[str, ...]
    scaler_: FeatureScaler
    normalisers_: dict[str, LogRobustNormaliser]
    training_summary_: dict[str, Any]

    def __init__(
        self,
        spec: TrainingSpec,
        device: DevicePreference,
        callbacks: Sequence[keras.callbacks.Callback],
    ) -> None:
        self.spec = spec
        self.device = device
        self.callbacks = tuple(callbacks)
        self._version: str | None = None
        self._compiled: CompiledScorer | None = None
        self.held_out_scores_: NDArray[np.float64] = np.empty(0)
        self.memory_seed_: MemorySeed | None = None
        self.kinds_: KindClassifier | None = None
        self.name_ = "unsaved"

    @property
    @abstractmethod
    def window_length(self) -> int:
        """D: the number of features per window."""

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.feature_names_

    @property
    def version(self) -> str | None:
        return self._version

    @property
    def held_out_scores(self) -> NDArray[np.float64]:
        return self.held_out_scores_

    @property
    def memory_seed(self) -> MemorySeed | None:
        return self.memory_seed_

    @abstractmethod
    def fit(self, windows: NDArray[np.floating]) -> Self:
        """Train on (n, D) normal windows, oldest first: ``_start_training``, the kind's own
        models, then ``_calibrate``."""

    @abstractmethod
    def latent_model(self) -> keras.Model:
        """(B, D) raw windows → (B, L): the code and residual kinds are read from."""

    def score(self, windows: NDArray[np.floating]) -> Scores:
        """Score (n, D) windows; ``parts`` are named as ``self.parts`` and ``score`` is their
        (n,) sum; see ``Scores`` for the rest."""
        compiled = self._compiled
        if compiled is None:
            raise self._not_fitted()
        data = as_windows(windows, expected_width=self.window_length)
        out = compiled(data)
        return Scores(
            score=np.sum(out.parts, axis=0, dtype=np.float32),
            parts=dict(zip(self.parts, out.parts, strict=True)),
            errors=dict(zip(self.parts, out.errors, strict=True)),
            blame=lambda rows: compiled.shares(data[rows]),
            typing=typing_for(self.kinds_, compiled, data),
        )

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
        models = self._bundle_models()
        manifest = bundle.describe(
            self.kind,
            name or Path(path).name,
            self.feature_names_,
            self.spec.model_dump(mode="json"),
            self.training_summary_,
            self.kinds_.manifest() if self.kinds_ else None,
            scaler=self.scaler_.to_dict(),
            held_out_scores=self.held_out_scores_.tolist(),
            **self._bundle_entries(),
            **self._memory_entries(),
        )
        if self.kinds_ is not None:
            models[CLASSIFIER_FILE] = self.kinds_.model
        self.name_ = str(manifest["name"])
        seed = self.memory_seed_
        arrays = {} if seed is None else {MEMORY_FILE: seed.windows}
        self._version = bundle.write_bundle(Path(path), models, manifest, arrays)
        _log(type(self)).info(
            "bundle_written", path=str(path), version=self._version, kind=self.kind
        )
        return self._version

    @classmethod
    def load(
        cls, path: Path, expected_window: int | None = None, device: DevicePreference = "auto"
    ) -> Self:
        """Load and verify a bundle; ``expected_window`` (the stream's D) must match if given."""
        path = Path(path)
        manifest = bundle.read_manifest(path)
        cls._check_kind(path, manifest.get("kind"))
        window = bundle.check_window(path, manifest, expected_window)
        detector = cls._from_bundle(path, manifest, device)
        detector.scaler_ = FeatureScaler.from_dict(manifest["scaler"])
        norms = manifest["normalisation"]
        detector.normalisers_ = {
            part: LogRobustNormaliser.from_dict(norms[part]) for part in detector.parts
        }
        detector.training_summary_ = manifest.get("training", {})
        detector.held_out_scores_ = np.asarray(manifest.get("held_out_scores", []), np.float64)
        detector.memory_seed_ = _memory_seed(path, manifest)
        detector.kinds_ = KindClassifier.from_bundle(path, manifest)
        detector._compiled = detector._compile(select_device(device))
        detector._compiled.warm_up()
        detector._version = manifest["version"]
        detector.name_ = str(manifest.get("name", path.name))
        _log(cls).info("bundle_loaded", path=str(path), version=detector._version, window=window)
        return detector

    def _memory_entries(self) -> dict[str, Any]:
        """``bundle.json``'s entry for the memory seed: the scaler that puts windows in its
        units (the windows themselves are ``memory.npy``)."""
        seed = self.memory_seed_
        if seed is None:
            return {}
        return {"memory_scaler": FeatureScaler("standard", seed.center, seed.scale).to_dict()}

    def _start_training(self, n: int) -> tuple[int, float]:
        """How many of ``n`` windows, the last, ``fit`` holds out, and its start time
        (``time.perf_counter``, seconds); seeds Keras so that the fit repeats exactly."""
        n_val = max(round(n * self.spec.validation_fraction), 1)
        if n - n_val < MIN_TRAINING_WINDOWS:
            raise DetectorError(
                f"{n} windows leave {n - n_val} to train on; at least {MIN_TRAINING_WINDOWS} needed"
            )
        started = time.perf_counter()
        keras.utils.set_random_seed(self.spec.seed)
        return n_val, started

    def _calibrate(
        self,
        data: FloatArray,
        n_val: int,
        errors: Sequence[NDArray[np.floating]],
        stages: Mapping[str, Any],
        started: float,
    ) -> None:
        """End ``fit``: normalise each part by its (n_val,) ``errors`` on the last ``n_val`` of
        the (n, D) windows ``data``, compile the scorer, and record the training summary with
        ``stages`` (model → how its training went) and the held-out quantiles."""
        n_train = len(data) - n_val
        self.normalisers_ = {
            part: LogRobustNormaliser.fit(e) for part, e in zip(self.parts, errors, strict=True)
        }
        self.kinds_ = None
        self._compiled = self._compile(select_device(self.device))
        scaler = FeatureScaler.fit(data, "standard")
        kept = np.asarray(data[-MEMORY_WINDOWS_KEPT:], np.float32)
        self.memory_seed_ = MemorySeed(kept, scaler.center, scaler.scale)
        held_out = self.score(data[n_train:])
        self.held_out_scores_ = held_out.score[-HELD_OUT_SCORES_KEPT:].astype(np.float64)
        self.training_summary_ = {
            "windows": {"train": n_train, "held_out": n_val},
            **stages,
            "held_out_quantiles": {
                **{f"{p}_error": bundle.quantiles(held_out.errors[p]) for p in self.parts},
                "score": bundle.quantiles(held_out.score),
            },
            "seconds": round(time.perf_counter() - started, 2),
        }
        self._version = None

    def _compile(self, device: Device) -> CompiledScorer:
        """``_scoring_models`` compiled on ``device``, with kind probabilities when typed."""
        scores, blame, latent = self._scoring_models()
        kinds = self.kinds_.on(latent()) if self.kinds_ else None
        return CompiledScorer(scores, len(self.parts), blame, device, kinds)

    def _normalisation(self, **specific: Any) -> dict[str, Any]:
        """``bundle.json``'s ``normalisation``: the rule, the kind's ``specific`` entries and
        each part's normaliser."""
        return {
            "rule": RULE,
            **specific,
            **{part: self.normalisers_[part].to_dict() for part in self.parts},
        }

    def _not_fitted(self) -> NotFittedError:
        return NotFittedError(
            f"this {type(self).__name__} is not fitted; call fit() or load() first"
        )

    @abstractmethod
    def _scoring_models(self) -> ScoringModels:
        """The models the scorer compiles (``ScoringModels``)."""

    @abstractmethod
    def _bundle_models(self) -> dict[str, keras.Model]:
        """The kind's models by bundle file name; ``NotFittedError`` before ``fit``."""

    @abstractmethod
    def _bundle_entries(self) -> dict[str, Any]:
        """The kind's own ``bundle.json`` entries (``normalisation`` and what it alone has)."""

    @classmethod
    @abstractmethod
    def _check_kind(cls, path: Path, kind: object) -> None:
        """Raise ``BundleError`` when a bundle's ``kind`` is not one this class loads."""

    @classmethod
    @abstractmethod
    def _from_bundle(
        cls, path: Path, manifest: Mapping[str, Any], device: DevicePreference
    ) -> Self:
        """The detector with the kind's own models and settings from a verified bundle; ``load``
        restores what every kind has."""


def _log(kind: type[BundledDetector]) -> Any:
    """The logger of the kind's own module, so that its bundle events name the kind's module
    (``detectors.cascade``, ``detectors.fusion``), not this one."""
    return structlog.get_logger(kind.__module__)


def _memory_seed(path: Path, manifest: Mapping[str, Any]) -> MemorySeed | None:
    """The bundle's memory seed; None for a bundle written before it kept one."""
    windows = bundle.load_array(path, MEMORY_FILE)
    if windows is None or "memory_scaler" not in manifest:
        return None
    scaler = FeatureScaler.from_dict(manifest["memory_scaler"])
    return MemorySeed(np.asarray(windows, np.float32), scaler.center, scaler.scale)
