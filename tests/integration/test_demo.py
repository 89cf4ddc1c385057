"""The demo command end to end against the real broker: generate, ``tandem train``, ``tandem run``,
replay, ``tandem alerts``, and the score of the alerts against the injected anomalies."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from streamer.cli.main import ExitCode, main
from tests.conftest import Broker

SENSOR = Path(__file__).resolve().parents[2] / "configs" / "sensor.toml"


def test_the_demo_catches_injected_anomalies_and_cleans_up(
    kafka_broker: Broker,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("TANDEM_KAFKA_BOOTSTRAP", kafka_broker.bootstrap)
    monkeypatch.setenv("TANDEM_CALIBRATION_WARMUP", "300")  # small feed, short warm-up
    monkeypatch.setenv("COLUMNS", "200")  # no wrapped lines to match across
    argv = [
        "demo",
        "--config",
        str(SENSOR),
        "--keys",
        "3",
        "--train-windows",
        "800",
        "--test-steps",
        "1200",
        "--epochs",
        "15",
        "--rate",
        "0",
        "--workdir",
        str(tmp_path),
    ]
    status = main(argv)
    out = capsys.readouterr().out
    assert status == ExitCode.OK, out[-5000:]

    summary = re.search(
        r"caught (\d+) of (\d+) injected anomalies, (\d+) false alarms \(([\d.]+) per 10,000", out
    )
    assert summary, out[-3000:]
    caught, injected = int(summary[1]), int(summary[2])
    assert injected >= 6 and caught > 0
    # the calibrator warmed up on 512 clean windows per sensor (300 rounded up to refresh blocks)
    assert "then 512 clean windows for the calibrator's warm-up" in out
    assert "3 sensors x 2,527 steps" in out
    windows = 3 * (512 + 1200)
    assert "group tandem-sensor.demo-" in out and f"has committed all {windows:,} windows" in out
    assert f"daemon: {windows:,} windows in " in out and " 0 dead letters" in out
    assert "tandem run finished its batch and exited 0" in out
    assert (tmp_path / "model" / "bundle.json").is_file()
    assert '"event":"daemon_stopped"' in (tmp_path / "daemon.log").read_text()

    run_id = re.search(r"run (\w{8}), work dir", out)
    assert run_id, out[:500]
    admin = KafkaAdminClient(**kafka_broker.client_options())
    try:
        left = [name for name in admin.list_topics() if run_id[1] in name]
        groups = [g["group_id"] for g in admin.list_groups() if run_id[1] in g["group_id"]]
    finally:
        admin.close()
    assert left == [] and groups == []
