"""Readings in, windows cut by the daemon, against the real broker: a daemon killed with -9 and
restarted mid-stream alerts exactly what a backtest of the same readings alerts (its buffers
travel in its checkpoints)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from streamer.cli.main import ExitCode, main
from streamer.ingest.windows import sliding_windows, window_feature_names
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


def test_a_readings_daemon_killed_then_rebalanced_alerts_what_a_backtest_alerts(
    setup: Setup,
    series_bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """4,000 readings in three parts: after the first the daemon is killed with -9 and another
    takes over from the checkpoints; after the second a third daemon joins and takes a
    partition from it. The alert ids equal a backtest of the topic's, and the alerts (key,
    time, type, score, threshold) a backtest of the file's."""
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
    frame = pd.read_csv(data)
    cuts = [0, total // 3, 2 * total // 3, total]
    parts = [tmp_path / f"part{i}.csv" for i in range(3)]
    for i, part in enumerate(parts):
        frame.iloc[cuts[i] : cuts[i + 1]].to_csv(part, index=False)
    replay = ["replay", "--config", str(config), "--topic", setup.input_topic, "--data"]

    first = Daemon(setup, "first")
    daemons = [first]
    try:
        assert main([*replay, str(parts[0])]) == ExitCode.OK
        wait_committed(setup, cuts[1], daemons, timeout_s=240)
        first.kill()
        daemons = [Daemon(setup, "second")]
        # Each next part once the newcomer owns a partition, so it resumes from a checkpoint.
        daemons[0].wait_for("partitions_assigned", 240, lambda e: bool(e["partitions"]))
        assert main([*replay, str(parts[1])]) == ExitCode.OK
        wait_committed(setup, cuts[2], daemons, timeout_s=240)
        daemons.append(Daemon(setup, "third"))
        daemons[1].wait_for("partitions_assigned", 240, lambda e: bool(e["partitions"]))
        assert main([*replay, str(parts[2])]) == ExitCode.OK
        wait_committed(setup, total, daemons, timeout_s=240)
    finally:
        statuses = [daemon.terminate() for daemon in daemons]
        if first.alive():
            first.kill()
    assert statuses == [0, 0], [d.tail() for d in daemons]
    for daemon in daemons:
        assert daemon.events("calibrator_restored"), f"{daemon} resumed from checkpoints"
    alerted = alerts_in(
        setup.bootstrap, setup.alerts_topic, sum(d.alerted() for d in [first, *daemons])
    )
    once = {alert["alert_id"]: alert for alert in alerted}  # a kill may send a batch's twice

    out = tmp_path / "backtest"
    backtest = ["backtest", "--config", str(config), "--topic", setup.input_topic]
    assert main([*backtest, "--out", str(out)]) == ExitCode.OK
    expected = pd.read_csv(out / "alerts.csv", dtype={"key": str})
    assert len(expected) > 0 and set(once) == set(expected["alert_id"])
    windows = pd.read_parquet(out / "windows.parquet")
    assert len(windows) == 8 * (500 - STEPS + 1), "a window per reading once a key has four"

    from_file = tmp_path / "file"
    assert (
        main(["backtest", "--config", str(config), "--data", str(data), "--out", str(from_file)])
        == 0
    )
    columns = ["key", "event_ts", "type", "score", "threshold"]
    file_alerts = pd.read_csv(from_file / "alerts.csv", dtype={"key": str})
    judged = sorted(tuple(a[c] for c in columns) for a in once.values())
    assert sorted(file_alerts[columns].itertuples(index=False, name=None)) == judged
