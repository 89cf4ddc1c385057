"""``tandem run`` up to its first batch, with the broker and the model stood in for (no broker)."""

from __future__ import annotations

import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import streamer.cli.run
from streamer.cli.main import ExitCode, main


def test_a_metrics_port_already_taken_is_one_line_and_the_config_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    broker = SimpleNamespace(brokers=1, api_version="4.0")
    detector = SimpleNamespace(name_="cascade", version="1")
    monkeypatch.setattr(streamer.cli.run, "wait_for_broker", lambda *a, **k: broker)

    def load_detector(*args: Any, **kwargs: Any) -> SimpleNamespace:
        return detector

    monkeypatch.setattr("detectors.registry.load_detector", load_detector)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("TANDEM_METRICS_HOST", "127.0.0.1")
        monkeypatch.setenv("TANDEM_METRICS_PORT", str(port))
        assert main(["run", "--model", str(tmp_path)]) == ExitCode.CONFIG
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith(
        f"tandem: cannot serve metrics and health on 127.0.0.1:{port}: "
    )
    assert "set [metrics].port (TANDEM_METRICS_PORT) to a free port (0: any)" in err
