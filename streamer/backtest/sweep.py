"""Calibration sweeps: one backtest's scores re-calibrated under several settings (``--sweep``),
so settings are compared on the same scores without scoring again: the scores of one pass go
through a fresh calibrator per setting, in the same order, so trying ten false-alarm targets costs
ten calibrations, not ten scoring passes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
from pydantic import ValidationError

from calibration.base import Flags
from streamer.calibrators import build_calibrator
from streamer.config import CalibrationConfig
from streamer.errors import ConfigError


@dataclass(frozen=True)
class SweepSetting:
    """One calibration to try: ``name`` (``key=value``) and the full calibration config."""

    name: str
    calibration: CalibrationConfig


@dataclass(frozen=True)
class SweepResult:
    """A sweep setting's thresholds and flags (n,) over the backtest's windows, in order."""

    setting: SweepSetting
    flags: Flags


def parse_sweep(text: str, base: CalibrationConfig) -> list[SweepSetting]:
    """``calibration.KEY=V1,V2,...`` (the ``calibration.`` prefix optional) as settings of
    ``base`` with KEY replaced; each is validated as a config file's would be."""
    name, _, values = text.partition("=")
    key = name.strip().removeprefix("calibration.")
    if not values or key not in CalibrationConfig.model_fields:
        raise ConfigError(
            f"--sweep {text!r}: expected calibration.KEY=V1,V2,... with KEY one of "
            f"{', '.join(CalibrationConfig.model_fields)}"
        )
    if key == "checkpoint_interval_s":
        raise ConfigError("--sweep: checkpoint_interval_s does not change what is flagged")
    settings = []
    for value in (v.strip() for v in values.split(",") if v.strip()):
        try:
            config = CalibrationConfig.model_validate({**base.model_dump(), key: value})
        except ValidationError as error:
            reason = error.errors()[0]["msg"]
            raise ConfigError(f"--sweep {key}={value}: {reason}") from None
        settings.append(SweepSetting(f"{key}={value}", config))
    return settings


def run_sweep(windows: pd.DataFrame, settings: Sequence[SweepSetting]) -> list[SweepResult]:
    """Each setting's flags over ``windows`` (a ``Backtest.windows``): a fresh calibrator fed
    the same scores of the same keys in the same order as the run loop fed its own."""
    keys = windows["key"].to_numpy()
    scores = windows["score"].to_numpy()
    return [
        SweepResult(setting, build_calibrator(setting.calibration).update(keys, scores))
        for setting in settings
    ]
