"""The calibrator ``[calibration]`` asks for, and how an alert describes it: shared by the daemon,
backtests and sweeps, so each way of running calibrates with the same object."""

from __future__ import annotations

from typing import Any

import numpy as np
import structlog
from numpy.typing import NDArray

from calibration.evt import Dspot, Spot, first_fit_after
from calibration.likelihood import Likelihood
from calibration.quantile import RollingQuantile
from calibration.window import WindowCalibrator
from streamer.config import CalibrationConfig

log = structlog.get_logger(__name__)


def build_calibrator(
    config: CalibrationConfig, prior: NDArray[np.float64] | None = None
) -> WindowCalibrator | Likelihood:
    """The calibrator ``[calibration]`` asks for, started from ``prior`` (m,) scores (the
    model's held-out scores, ``Detector.held_out_scores``) when ``from_held_out`` is on and
    there are any. Without a prior, a SPOT or DSPOT warm-up too short to fit a threshold from
    (``first_fit_after``) is warned about: the first threshold then comes only once that many
    scores have been accepted, later than ``warmup`` says."""
    starts = config.from_held_out and prior is not None and len(prior) > 0
    if config.method == "likelihood":
        return _likelihood(config, prior if starts else None)
    if config.method != "quantile" and not starts and config.warmup < first_fit_after():
        log.warning(
            "calibration_warmup_short",
            warmup=config.warmup,
            first_threshold_after=first_fit_after(),
        )
    shared: dict[str, Any] = {
        "window": config.window,
        "warmup": config.warmup,
        "refresh": config.refresh,
        "per_key": config.per_key,
        "adapt_after": config.adapt_after,
    }
    calibrator: WindowCalibrator
    evt = {"target_rate": config.target_rate, "init_level": config.init_level, **shared}
    if config.method == "quantile":
        calibrator = RollingQuantile(config.quantile, **shared)
    elif config.method == "spot":
        calibrator = Spot(**evt)
    else:
        calibrator = Dspot(depth=config.depth, **evt)
    calibrator.max_keys = config.max_keys
    if starts and prior is not None:
        calibrator.start_from(prior)
        used = calibrator.started
        log.debug("calibration_prior", scores=len(prior), used=used)
    return calibrator


def _likelihood(config: CalibrationConfig, prior: NDArray[np.float64] | None) -> Likelihood:
    """``method = "likelihood"``: per key unless ``per_key`` is false; ``adapt_after`` does not
    apply (a new regime enters the history like any score)."""
    calibrator = Likelihood(
        config.target_rate,
        config.window,
        config.warmup,
        config.refresh,
        config.smooth,
        per_key=config.per_key,
    )
    calibrator.max_keys = config.max_keys
    if prior is not None:
        calibrator.start_from(prior)
        log.debug("calibration_prior", scores=len(prior), used=calibrator.started)
    return calibrator


def calibrator_description(config: CalibrationConfig) -> dict[str, Any]:
    """The ``calibrator`` object of an alert."""
    if config.method == "quantile":
        return {"method": "quantile", "quantile": config.quantile}
    if config.method == "likelihood":
        return {"method": "likelihood", "target_rate": config.target_rate, "smooth": config.smooth}
    return {"method": config.method, "target_rate": config.target_rate}
