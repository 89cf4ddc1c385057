"""Alert policies for run-loop tests."""

from __future__ import annotations

from typing import Literal

from detectors.base import Detector
from streamer.config import AlertsConfig
from streamer.events import EventTracker


def window_alerts(
    detector: Detector, mode: Literal["events", "windows"] = "windows", **alerting: int
) -> EventTracker:
    """One alert per flagged window (``mode="windows"``), or events with ``alerting`` settings
    (``quiet``, ``update_every``, ``cooldown``)."""
    return EventTracker(
        AlertsConfig(mode=mode, **alerting),
        detector.feature_names,
        model={"name": "tiny", "version": detector.version or ""},
        calibrator={"method": "quantile", "quantile": 0.99},
    )
