"""Readings in, windows cut by the daemon, against the real broker: a daemon killed with -9 and
restarted mid-stream alerts exactly what a backtest of the same readings alerts (its buffers
travel in its checkpoints)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from streamer.cli.main import ExitCode, main
from streamer.windows import sliding_windows, window_feature_names
from tests.integration.daemons import Daemon, Setup, wait_committed
from tests.integration.test_daemon_faults import alerts_in

CHANNELS, STEPS = ("temp", "flow"), 4


def sensor(steps: int, seed: int) -> np.ndarray:
    """(steps, 2) readings: two coupled oscillations with noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps) / 7.0 + rng.uniform(0, 6)
    series = np.stack([np.sin(t), np.cos(t)], axis=1)
    return (series + rng.normal(0, 0.05, size=series.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def series_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small cascade trained on 4-step windows of the two channels ``temp`` and ``flow``."""
    from detectors.cascade import CascadeDetector
    from detectors.spec import AutoencoderSpec, CascadeSpec

    windows = sliding_windows(sensor(3000, 0), STEPS)
    spec = CascadeSpec(
        ae1=AutoencoderSpec(hidden=(6,), latent=3),
        ae2=AutoencoderSpec(hidden=(), latent=1),
        epochs=5,
    )
    detector = CascadeDetector(spec, feature_names=window_feature_names(CHANNELS, STEPS))
    path = tmp_path_factory.mktemp("series") / "bundle"
    detector.fit(windows).save(path)
    return path


def readings_file(path: Path, keys: int, steps: int) -> int:
    """``keys`` sensors' readings, one row per sensor per step, spikes here and there; returns
    how many rows."""
    rows = []
    for k in range(keys):
        series = sensor(steps, 10 + k)
        series[100 + 37 * k :: 211] += 4.0
        rows.append(
            pd.DataFrame(
                {
                    "key": f"s{k}",
                    "ts": 1_764_000_000_000 + np.arange(steps) * 1000,
                    **{name: series[:, c] for c, name in enumerate(CHANNELS)},
                }
            )
        )
    frame = pd.concat(rows).sort_values(["ts", "key"], kind="stable")
    frame.to_csv(path, index=False)
    return len(frame)


def test_a_readings_daemon_killed_mid_stream_alerts_what_a_backtest_alerts(
    setup: Setup, series_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup.bundle, setup.max_records = series_bundle, 32
    setup.codec = 'input = "readings"\n'
    setup.calibration = (
        'method = "spot"\ntarget_rate = 0.001\nwindow = 2000\nwarmup = 300\nrefresh = 20\n'
        "per_key = true\ncheckpoint_interval_s = 0.3\n"
    )
    data = tmp_path / "readings.csv"
    total = readings_file(data, keys=8, steps=500)
    config = setup.write_config()
    monkeypatch.delenv("TANDEM_KAFKA_BOOTSTRAP", raising=False)  # the config names the broker
    replay = ["replay", "--config", str(config), "--data", str(data), "--topic", setup.input_topic]
    assert main(replay) == ExitCode.OK

    first = Daemon(setup, "first")
    try:
        wait_committed(setup, total // 3, [first], timeout_s=240)
    finally:
        first.kill()
    second = Daemon(setup, "second")
    try:
        wait_committed(setup, total, [second], timeout_s=240)
    finally:
        assert second.terminate() == 0, second.tail()
    assert second.events("calibrator_restored"), "the second resumed from checkpoints"
    alerted = alerts_in(setup.bootstrap, setup.alerts_topic, first.alerted() + second.alerted())
    daemon_ids = {alert["alert_id"] for alert in alerted}

    out = tmp_path / "backtest"
    backtest = ["backtest", "--config", str(config), "--topic", setup.input_topic]
    assert main([*backtest, "--out", str(out)]) == ExitCode.OK
    expected = pd.read_csv(out / "alerts.csv", dtype={"key": str})
    assert len(expected) > 0 and daemon_ids == set(expected["alert_id"])
    windows = pd.read_parquet(out / "windows.parquet")
    assert len(windows) == 8 * (500 - STEPS + 1), "a window per reading once a key has four"
