"""Every detector kind by name: what ``tandem train --detector`` builds and what a bundle loads as.

``KINDS`` is the one table of kinds: where a kind's spec comes from, how many pre-trained
members it fuses, which class builds and loads it. The CLI asks it instead of branching on kind
names. A bundle's ``bundle.json`` names its kind, so the daemon, backtests and ``tandem score``
load any kind through ``load_detector`` and run it unchanged behind the ``Detector`` protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import keras

from detectors import bundle
from detectors.base import Detector, DevicePreference
from detectors.bundled import BundledDetector
from detectors.cascade import CascadeDetector
from detectors.errors import BundleError, DetectorError
from detectors.fusion import FusionDetector
from detectors.members import Member
from detectors.spec import DETECTOR_KINDS, CascadeSpec, FusionMode, FusionSpec, TrainingSpec

Builder = Callable[
    [TrainingSpec, Sequence[str], Sequence[Member], DevicePreference, Sequence[Any]],
    BundledDetector,
]
"""(spec from ``DetectorKind.spec``, the window's D feature names, members, device, Keras
callbacks) → an unfitted detector."""


@dataclass(frozen=True)
class DetectorKind:
    """One kind: ``section`` is the config section its spec is read from (``[train]`` or
    ``[fusion]``), ``members`` how many pre-trained autoencoders it fuses, ``loads`` the class
    its bundles load as."""

    name: str
    section: Literal["train", "fusion"]
    members: int
    settings: Mapping[str, Any]
    """What the kind fixes in its section's spec (a fusion's ``mode``)."""
    spec_type: type[TrainingSpec]
    builder: Builder
    loads: type[BundledDetector]

    def spec(self, section: TrainingSpec) -> TrainingSpec:
        """The spec this kind trains with: its config section's, with ``settings`` applied.
        Raises pydantic's ``ValidationError`` when they do not fit together."""
        return self.spec_type.model_validate({**section.model_dump(), **self.settings})

    def build(
        self,
        spec: TrainingSpec,
        feature_names: Sequence[str],
        members: Sequence[Member] = (),
        device: DevicePreference = "auto",
        callbacks: Sequence[keras.callbacks.Callback] = (),
    ) -> BundledDetector:
        """An unfitted detector of this kind for windows of ``feature_names`` (D,)."""
        if len(members) != self.members:
            raise DetectorError(f"{self.name} takes {self.members} members; {len(members)} given")
        return self.builder(spec, feature_names, members, device, callbacks)

    def load(
        self, path: Path, expected_window: int | None = None, device: DevicePreference = "auto"
    ) -> BundledDetector:
        """Load and verify the bundle at ``path``, a detector of this kind."""
        return self.loads.load(path, expected_window, device)


def _cascade(
    spec: TrainingSpec,
    names: Sequence[str],
    members: Sequence[Member],
    device: DevicePreference,
    callbacks: Sequence[Any],
) -> CascadeDetector:
    assert isinstance(spec, CascadeSpec)
    return CascadeDetector(spec, names, device, callbacks)


def _fusion(
    spec: TrainingSpec,
    names: Sequence[str],
    members: Sequence[Member],
    device: DevicePreference,
    callbacks: Sequence[Any],
) -> FusionDetector:
    assert isinstance(spec, FusionSpec)
    return FusionDetector(members, names, spec, device, callbacks)


def _fusion_kind(mode: FusionMode) -> DetectorKind:
    return DetectorKind(
        f"fusion-{mode}", "fusion", 2, {"mode": mode}, FusionSpec, _fusion, FusionDetector
    )


KINDS: dict[str, DetectorKind] = {
    "cascade": DetectorKind("cascade", "train", 0, {}, CascadeSpec, _cascade, CascadeDetector),
    "fusion-concat": _fusion_kind("concat"),
    "fusion-weighted": _fusion_kind("weighted"),
    "fusion-late": _fusion_kind("late"),
}
"""Every kind by name, in ``DETECTOR_KINDS``' order (the CLI's choices, which import no Keras)."""
assert tuple(KINDS) == DETECTOR_KINDS


def detector_kind(name: str) -> DetectorKind:
    """The kind called ``name``; a ``DetectorError`` naming the known kinds otherwise."""
    if name not in KINDS:
        raise DetectorError(f"no detector kind {name!r}; this tandem builds {_known()}")
    return KINDS[name]


def load_detector(
    path: Path, expected_window: int | None = None, device: DevicePreference = "auto"
) -> Detector:
    """Load and verify the bundle at ``path`` as the detector kind it names."""
    kind = bundle.read_manifest(Path(path)).get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise BundleError(f"{path} holds a detector of kind {kind!r}; this tandem loads {_known()}")
    return KINDS[kind].load(Path(path), expected_window, device)


def _known() -> str:
    return ", ".join(KINDS)
