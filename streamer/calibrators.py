"""The calibrator ``[calibration]`` asks for, the memory ``[memory]`` asks for, and how an alert
describes the calibrator: shared by the daemon, backtests and sweeps, so each way of running
judges scores with the same objects."""

from __future__ import annotations

from typing import Any

import numpy as np
import structlog
from numpy.typing import NDArray

from calibration.evt import Dspot, Spot, first_fit_after
from calibration.likelihood import Likelihood
from calibration.memory import Memory, MemorySeed, MemorySettings
from calibration.quantile import RollingQuantile
from calibration.window import WindowCalibrator
from streamer.config import CalibrationConfig, MemoryConfig
from streamer.ingest.features import STEP_NAME

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


DEFAULT_EXCLUDE = 16
"""``[memory].exclude`` when the model's feature names do not tell its window's length."""


def build_memory(
    config: MemoryConfig, seed: MemorySeed | None, feature_names: tuple[str, ...]
) -> Memory | None:
    """The per-key memory ``[memory]`` asks for, every key started from the model's ``seed``;
    None when it is off or the bundle keeps no seed (written before memories)."""
    if not config.enabled or seed is None or len(seed.windows) == 0:
        if config.enabled:
            log.warning("memory_off", reason="the model bundle keeps no training windows")
        return None
    settings = MemorySettings(
        capacity=config.capacity,
        stride=config.stride,
        block=config.block,
        reference=config.reference,
        exclude=config.exclude or window_steps(feature_names) or DEFAULT_EXCLUDE,
        gate=config.gate,
        max_keys=config.max_keys,
    )
    return Memory(seed, settings)


def window_steps(feature_names: tuple[str, ...]) -> int | None:
    """How many steps a window spans when every feature name is a step of a cut series
    (``temp[t-3]``); None otherwise."""
    lags = [STEP_NAME.match(name) for name in feature_names]
    if not lags or not all(lags):
        return None
    return 1 + max(int(match["lag"]) for match in lags if match is not None)


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
