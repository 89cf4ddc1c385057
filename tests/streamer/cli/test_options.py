"""Options shared by several commands: bad values are usage errors, found before any work."""

from __future__ import annotations

import pytest

from streamer.cli.main import ExitCode, main

COMMANDS = {
    "train": ["train", "--data", "feed.csv", "--out", "bundle"],
    "score": ["score", "--data", "feed.csv", "--model", "bundle"],
    "replay": ["replay", "--data", "feed.csv"],
    "backtest": ["backtest", "--data", "feed.csv", "--model", "bundle"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize(
    ("option", "value", "said"),
    [
        ("--window", "0", "argument --window: 0 is not a positive whole number"),
        ("--window", "-3", "argument --window: -3 is not a positive whole number"),
        ("--stride", "0", "argument --stride: 0 is not a positive whole number"),
        ("--window", "ten", "argument --window: 'ten' is not a whole number"),
    ],
)
def test_a_window_or_stride_below_one_is_a_usage_error(
    command: str, option: str, value: str, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*COMMANDS[command], option, value]) == ExitCode.CONFIG
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"tandem {command}: error: {said}"
    assert "Traceback" not in err
