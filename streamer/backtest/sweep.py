"""Sweeps: one backtest's scores under several settings (``--sweep``), compared on the same
scores without scoring again. A calibration setting (``calibration.KEY=V1,V2,...``) sends the
scores of one pass through a fresh calibrator per value, in the same order, so trying ten
false-alarm targets costs ten calibrations, not ten scoring passes. An alert setting
(``alerts.quiet=...``, ``alerts.cooldown=...``) keeps the run's flags and only groups them into
events differently (``streamer.backtest.event_counts``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from pydantic import ValidationError

from calibration.base import Flags
from streamer.calibrators import build_calibrator
from streamer.config import AlertsConfig, CalibrationConfig
from streamer.errors import ConfigError

ALERT_KEYS = ("quiet", "cooldown")
"""The ``[alerts]`` settings a sweep can vary: those that change which flags make an event
(``update_every`` changes only how often an event is re-published)."""


@dataclass(frozen=True)
class SweepSetting:
    """One setting to try: ``name`` (``key=value``), the full calibration config, and the
    ``[alerts]`` values it changes (None: the run's own)."""

    name: str
    calibration: CalibrationConfig
    quiet: int | None = None
    cooldown: int | None = None

    @property
    def recalibrates(self) -> bool:
        """Whether the setting changes the calibration (else it reuses the run's flags)."""
        return self.quiet is None and self.cooldown is None

    def alerting(self, run: AlertsConfig) -> AlertsConfig:
        """The ``[alerts]`` section this setting stands for, given the run's."""
        changes = {key: value for key in ALERT_KEYS if (value := getattr(self, key)) is not None}
        return AlertsConfig.model_validate({**run.model_dump(), **changes})


@dataclass(frozen=True)
class SweepResult:
    """A sweep setting's thresholds and flags (n,) over the backtest's windows, in order."""

    setting: SweepSetting
    flags: Flags


def parse_sweep(text: str, base: CalibrationConfig) -> list[SweepSetting]:
    """``calibration.KEY=V1,V2,...`` (the ``calibration.`` prefix optional) as settings of
    ``base`` with KEY replaced, or ``alerts.quiet=...``/``alerts.cooldown=...`` as settings of
    the run's ``[alerts]`` with that value replaced; each is validated as a config file's would
    be."""
    name, _, values = text.partition("=")
    name = name.strip()
    choices = [v.strip() for v in values.split(",") if v.strip()]
    if name.startswith("alerts."):
        return _alert_settings(text, name.removeprefix("alerts."), choices, base)
    key = name.removeprefix("calibration.")
    if not choices or key not in CalibrationConfig.model_fields:
        raise ConfigError(
            f"--sweep {text!r}: expected calibration.KEY=V1,V2,... with KEY one of "
            f"{', '.join(CalibrationConfig.model_fields)}, or alerts.KEY=V1,V2,... with KEY "
            f"one of {', '.join(ALERT_KEYS)}"
        )
    if key == "checkpoint_interval_s":
        raise ConfigError("--sweep: checkpoint_interval_s does not change what is flagged")
    settings = []
    for value in choices:
        try:
            config = CalibrationConfig.model_validate({**base.model_dump(), key: value})
        except ValidationError as error:
            reason = error.errors()[0]["msg"]
            raise ConfigError(f"--sweep {key}={value}: {reason}") from None
        settings.append(SweepSetting(f"{key}={value}", config))
    return settings


def _alert_settings(
    text: str, key: str, choices: list[str], base: CalibrationConfig
) -> list[SweepSetting]:
    if key not in ALERT_KEYS or not choices:
        raise ConfigError(
            f"--sweep {text!r}: expected alerts.KEY=V1,V2,... with KEY one of "
            f"{', '.join(ALERT_KEYS)} (the others do not change which flags make an event)"
        )
    settings = []
    for value in choices:
        try:
            config = AlertsConfig.model_validate({key: value})
        except ValidationError as error:
            reason = error.errors()[0]["msg"]
            raise ConfigError(f"--sweep alerts.{key}={value}: {reason}") from None
        number = getattr(config, key)
        settings.append(SweepSetting(f"alerts.{key}={number}", base, **{key: number}))
    return settings


def run_sweep(
    windows: pd.DataFrame,
    settings: Sequence[SweepSetting],
    prior: NDArray[np.float64] | None = None,
) -> list[SweepResult]:
    """Each setting's flags over ``windows`` (a ``Backtest.windows``): a fresh calibrator,
    started from the same ``prior`` as the run's (``Backtest.prior``), fed the same scores of
    the same keys in the same order as the run loop fed its own, or, for an alert setting, the
    run's own flags."""
    keys = windows["key"].to_numpy()
    scores = windows["score"].to_numpy()
    own = Flags(
        windows["threshold"].to_numpy(np.float64),
        windows["flag"].to_numpy(bool),
        windows["surprise"].to_numpy(np.float64),
    )
    return [
        SweepResult(
            setting,
            build_calibrator(setting.calibration, prior).update(keys, scores)
            if setting.recalibrates
            else own,
        )
        for setting in settings
    ]
