"""The CLI through ``main(argv)``: help, config show/check and their exit codes, broker check."""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path

import pytest

from streamer.cli.main import ExitCode, main
from streamer.config import load_config, masked

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("config", "broker", "demo"):
        assert command in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("tandem 0.")


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_config_show_prints_the_effective_config_as_toml(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TANDEM_BATCH_MAX_RECORDS", "512")
    path = CONFIGS / "sensor.toml"
    assert main(["config", "show", "--config", str(path)]) == ExitCode.OK
    out = capsys.readouterr().out
    shown = tomllib.loads(out)
    assert shown == masked(load_config(path))
    assert shown["batch"]["max_records"] == 512
    assert "# overridden by environment: TANDEM_BATCH_MAX_RECORDS" in out


def test_config_show_masks_secrets(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TANDEM_KAFKA_SSL_PASSWORD", "s3cret-key-pass")
    assert main(["config", "show", "--json"]) == ExitCode.OK
    out = capsys.readouterr().out
    assert "s3cret-key-pass" not in out
    assert '"ssl_password": "**********"' in out


def test_config_with_a_typo_fails_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "typo.toml"
    path.write_text("[batch]\nmax_recrods = 10\n")
    assert main(["config", "check", "--config", str(path)]) == ExitCode.CONFIG
    err = capsys.readouterr().err
    assert f"{path}: [batch] unknown key 'max_recrods' (did you mean 'max_records'?)" in err


def test_config_check_accepts_shipped_configs(capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("default.toml", "market.toml", "sensor.toml"):
        assert main(["config", "check", "--config", str(CONFIGS / name)]) == ExitCode.OK
    assert capsys.readouterr().out.count(": ok") == 3


def test_broker_check_without_a_broker_exits_with_the_broker_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(
        [
            "--log-level",
            "error",
            "broker",
            "check",
            "--bootstrap",
            "127.0.0.1:1",
            "--timeout-s",
            "1",
        ]
    )
    assert code == ExitCode.BROKER
    assert "no broker answered at ['127.0.0.1:1']" in capsys.readouterr().err


def test_a_reader_that_closes_stdout_ends_the_command_quietly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``tandem config show --json | head``: no traceback, the status a shell gives SIGPIPE."""
    read, write = os.pipe()
    os.close(read)
    with os.fdopen(write, "w") as closed:
        monkeypatch.setattr(sys, "stdout", closed)
        assert main(["config", "show", "--json"]) == ExitCode.STDOUT_CLOSED == 141
        print("after the reader left", file=closed, flush=True)  # now /dev/null: no error
    assert capsys.readouterr().err == ""
