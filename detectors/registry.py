"""Every detector kind by name: what ``tandem train --detector`` builds and what a bundle loads as.

A bundle's ``bundle.json`` names its kind, so the daemon, backtests and ``tandem score`` load any
kind through ``load_detector`` and run it unchanged behind the ``Detector`` protocol.
"""

from __future__ import annotations

from pathlib import Path

from detectors import bundle
from detectors.base import Detector, DevicePreference
from detectors.errors import BundleError
from detectors.spec import DETECTOR_KINDS


def load_detector(
    path: Path, expected_window: int | None = None, device: DevicePreference = "auto"
) -> Detector:
    """Load and verify the bundle at ``path`` as the detector kind it names."""
    kind = bundle.read_manifest(Path(path)).get("kind")
    if kind == "cascade":
        from detectors.cascade import CascadeDetector

        return CascadeDetector.load(Path(path), expected_window, device)
    if kind in DETECTOR_KINDS:
        from detectors.fusion import FusionDetector

        return FusionDetector.load(Path(path), expected_window, device)
    raise BundleError(
        f"{path} holds a detector of kind {kind!r}; this tandem loads {', '.join(DETECTOR_KINDS)}"
    )
