"""The demo command end to end against the real broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer.cli import ExitCode, main
from tests.conftest import Broker

SENSOR = Path(__file__).resolve().parents[2] / "configs" / "sensor.toml"


def test_demo_reads_back_every_window(
    kafka_broker: Broker, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TANDEM_KAFKA_BOOTSTRAP", kafka_broker.bootstrap)
    argv = [
        "demo",
        "--config",
        str(SENSOR),
        "--windows",
        "3000",
        "--keys",
        "5",
        "--partitions",
        "3",
    ]
    assert main(argv) == ExitCode.OK
    out = capsys.readouterr().out
    assert "3000 windows of 16 features from 5 sensors produced" in out
    assert "3000 read back" in out
    assert "0 malformed; 0 missing" in out
