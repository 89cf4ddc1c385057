"""A backtest of readings (``[codec].input = "readings"``) judges exactly the windows, in the same
order, that a backtest of the same file cut with ``--window`` judges."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from streamer.cli.main import ExitCode, main


def test_readings_backtest_equals_the_windows_backtest_of_the_same_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TANDEM_TRAIN_EPOCHS", "1")
    monkeypatch.setenv("TANDEM_MEMORY_ENABLED", "true")  # each key's memory numbers alike too
    feed, bundle = tmp_path / "feed.csv", tmp_path / "b"
    main(["generate", "--out", str(feed), "--steps", "700", "--keys", "3", "--channels", "2"])
    main(["train", "--data", str(feed), "--window", "6", "--out", str(bundle)])
    runs = {}
    for name, extra in (("windows", ["--window", "6"]), ("readings", [])):
        monkeypatch.setenv("TANDEM_CODEC_INPUT", name)
        out = tmp_path / name
        argv = ["backtest", "--model", str(bundle), "--data", str(feed), *extra]
        assert main([*argv, "--out", str(out)]) == ExitCode.OK, capsys.readouterr().err
        runs[name] = pd.read_parquet(out / "windows.parquet")
    columns = ["key", "ts", "score", "memory", "threshold", "flag", "surprise"]
    windows, readings = (runs[n][columns].reset_index(drop=True) for n in runs)
    assert len(readings) == 3 * (700 - 5) and (readings["memory"] < 0).any()
    pd.testing.assert_frame_equal(windows, readings)

    monkeypatch.setenv("TANDEM_CODEC_INPUT", "readings")
    argv = ["backtest", "--model", str(bundle), "--data", str(feed), "--window", "6"]
    assert main(argv) == ExitCode.CONFIG
    assert "leave out --window" in capsys.readouterr().err
