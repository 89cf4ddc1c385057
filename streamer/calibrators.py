"""The calibrator ``[calibration]`` asks for, and how an alert describes it: shared by the daemon,
backtests and sweeps, so each way of running calibrates with the same object."""

from __future__ import annotations

import math
from typing import Any

import structlog

from calibration.evt import MIN_PEAKS, Dspot, Spot
from calibration.quantile import RollingQuantile
from calibration.window import WindowCalibrator
from streamer.config import CalibrationConfig

log = structlog.get_logger(__name__)


def build_calibrator(config: CalibrationConfig) -> WindowCalibrator:
    """The calibrator ``[calibration]`` asks for. A SPOT or DSPOT warm-up too short to hold
    ``MIN_PEAKS`` scores over ``init_level`` is warned about: the first threshold then comes
    only once that many have been accepted, later than ``warmup`` says."""
    peaks = config.warmup * (1 - config.init_level)
    if config.method != "quantile" and peaks < MIN_PEAKS - 1e-9:
        log.warning(
            "calibration_warmup_short",
            warmup=config.warmup,
            init_level=config.init_level,
            peaks=round(peaks, 1),
            first_threshold_after=math.ceil(MIN_PEAKS / (1 - config.init_level) - 1e-9),
        )
    shared: dict[str, Any] = {
        "window": config.window,
        "warmup": config.warmup,
        "refresh": config.refresh,
        "per_key": config.per_key,
        "adapt_after": config.adapt_after,
    }
    if config.method == "quantile":
        return RollingQuantile(config.quantile, **shared)
    evt = {"target_rate": config.target_rate, "init_level": config.init_level, **shared}
    if config.method == "spot":
        return Spot(**evt)
    return Dspot(depth=config.depth, **evt)


def calibrator_description(config: CalibrationConfig) -> dict[str, Any]:
    """The ``calibrator`` object of an alert."""
    if config.method == "quantile":
        return {"method": "quantile", "quantile": config.quantile}
    return {"method": config.method, "target_rate": config.target_rate}
