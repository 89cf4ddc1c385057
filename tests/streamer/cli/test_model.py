"""generate → train → score through ``main(argv)``, on a small generated feed."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import keras
import pandas as pd
import pytest
import structlog
from rich.console import Console
from structlog.testing import capture_logs

from streamer.cli.main import ExitCode, main


def test_generate_train_score(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TANDEM_TRAIN_EPOCHS", "3")
    feed, bundle, scores = tmp_path / "feed.parquet", tmp_path / "models" / "s1", tmp_path / "s.csv"
    assert main(["generate", "--out", str(feed), "--steps", "3000", "--keys", "2"]) == ExitCode.OK
    assert "6000 steps from 2 sensors" in capsys.readouterr().out

    argv = ["train", "--data", str(feed), "--window", "8", "--train-fraction", "0.5"]
    assert main([*argv, "--out", str(bundle), "--name", "plant-7"]) == ExitCode.OK
    out = capsys.readouterr().out
    assert "held-out windows: error and score quantiles" in out
    assert "version sha256:" in out
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert manifest["name"] == "plant-7" and manifest["window_length"] == 32
    assert manifest["spec"]["epochs"] == 3
    assert manifest["feature_names"][:2] == ["ch0[t-7]", "ch1[t-7]"]

    argv = ["score", "--model", str(bundle), "--data", str(feed), "--window", "8"]
    assert main([*argv, "--out", str(scores), "--top", "3"]) == ExitCode.OK
    out = capsys.readouterr().out
    assert "3 highest scores of" in out
    frame = pd.read_csv(scores)
    assert len(frame) == 2 * (3000 - 7)
    assert {"key", "ts", "score", "ae1", "ae2", "top_feature", "top_share", "label"} <= set(frame)


def test_score_with_a_mismatched_window_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TANDEM_TRAIN_EPOCHS", "1")
    feed, bundle = tmp_path / "feed.csv", tmp_path / "b"
    main(["generate", "--out", str(feed), "--steps", "800", "--keys", "1"])
    main(["train", "--data", str(feed), "--window", "8", "--out", str(bundle)])
    capsys.readouterr()
    code = main(["score", "--model", str(bundle), "--data", str(feed), "--window", "6"])
    assert code == ExitCode.FAILURE
    err = capsys.readouterr().err
    assert "cut into windows of 6 steps, but the model reads windows of 8" in err


def test_a_file_with_its_columns_reordered_scores_and_backtests_exactly_as_the_original(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Features are matched by name: the columns' order changes nothing, readings need no
    --window, and a renamed column is an error naming it."""
    monkeypatch.setenv("TANDEM_TRAIN_EPOCHS", "1")
    feed, bundle = tmp_path / "feed.csv", tmp_path / "b"
    main(["generate", "--out", str(feed), "--steps", "600", "--keys", "2", "--channels", "3"])
    main(["train", "--data", str(feed), "--window", "4", "--out", str(bundle)])
    frame = pd.read_csv(feed)
    channels = [c for c in frame.columns if c.startswith("ch")]
    reordered = tmp_path / "reordered.csv"
    frame[[*reversed(channels), *(c for c in frame.columns if c not in channels)]].to_csv(
        reordered, index=False
    )
    scores = {}
    for name, data, window in (
        ("a", feed, ["--window", "4"]),
        ("b", reordered, []),
    ):
        out = tmp_path / f"{name}.csv"
        argv = ["score", "--model", str(bundle), "--data", str(data), *window]
        assert main([*argv, "--out", str(out)]) == ExitCode.OK
        scores[name] = pd.read_csv(out)
        argv = ["backtest", "--model", str(bundle), "--data", str(data), *window]
        assert main([*argv, "--out", str(tmp_path / f"report-{name}")]) == ExitCode.OK
    pd.testing.assert_frame_equal(scores["a"], scores["b"])
    alerts = [pd.read_csv(tmp_path / f"report-{n}" / "alerts.csv") for n in "ab"]
    for table in alerts:  # ids name the file: feed.csv/0/64
        for column in ("alert_id", "event_id"):
            table[column] = table[column].str.partition("/")[2]
    assert len(alerts[0]) > 0
    pd.testing.assert_frame_equal(alerts[0], alerts[1])
    capsys.readouterr()

    renamed = tmp_path / "renamed.csv"
    frame.rename(columns={channels[1]: "pressure"}).to_csv(renamed, index=False)
    argv = ["score", "--model", str(bundle), "--data", str(renamed)]
    assert main(argv) == ExitCode.FAILURE
    assert f"renamed? 'pressure' → '{channels[1]}'" in capsys.readouterr().err


def test_members_fusion_and_a_backtest_of_it_through_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two members trained on channel groups, fused late with kinds learned, backtested: the
    alerts carry the member parts and a kind."""
    monkeypatch.setenv("TANDEM_FUSION_EPOCHS", "3")
    monkeypatch.setenv("TANDEM_CALIBRATION_WARMUP", "300")
    config = ["--config", str(small_config(tmp_path))]
    feed = tmp_path / "feed.csv"
    generate = ["generate", "--out", str(feed), "--steps", "4000", "--keys", "1"]
    assert main([*generate, "--anomaly-rate", "0.08"]) == ExitCode.OK
    data = [*config, "--data", str(feed), "--window", "8", "--train-fraction", "0.45"]
    for name, channels in (("left", "ch0,ch1"), ("right", "ch2,ch3")):
        argv = ["train", *data, "--features", channels, "--no-kinds"]
        assert main([*argv, "--out", str(tmp_path / name)]) == ExitCode.OK
    members = ["--member", f"left={tmp_path / 'left'}", "--member", f"right={tmp_path / 'right'}"]
    fused = tmp_path / "fused"
    argv = ["train", *data, "--detector", "fusion-late", *members, "--out", str(fused)]
    assert main(argv) == ExitCode.OK
    out = capsys.readouterr().out
    assert "fuser" in out and "anomaly kinds" in out
    manifest = json.loads((fused / "bundle.json").read_text())
    assert manifest["kind"] == "fusion-late" and manifest["window_length"] == 32
    assert [m["name"] for m in manifest["members"]] == ["left", "right"]
    assert manifest["members"][0]["feature_names"][:2] == ["ch0[t-7]", "ch1[t-7]"]
    assert manifest["normalisation"]["parts"] == ["left", "right", "joint"]
    assert manifest["spec"]["epochs"] == 3 and manifest["kinds"]["names"]

    # Three epochs do not separate this feed's anomalies; a 1 % target rate makes alerts to read.
    monkeypatch.setenv("TANDEM_CALIBRATION_TARGET_RATE", "0.01")
    report = tmp_path / "report"
    argv = ["backtest", *config, "--data", str(feed), "--window", "8", "--model", str(fused)]
    assert main([*argv, "--out", str(report)]) == ExitCode.OK
    alerts = pd.read_csv(report / "alerts.csv")
    assert len(alerts) > 0
    assert {"part_left", "part_right", "part_joint", "kind", "kind_confidence"} <= set(alerts)
    assert set(alerts["kind"]) <= set(manifest["kinds"]["names"])


def test_a_member_reading_features_the_stream_lacks_fails_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = ["--config", str(small_config(tmp_path))]
    wide, narrow = tmp_path / "wide.csv", tmp_path / "narrow.csv"
    main(["generate", "--out", str(wide), "--steps", "600", "--keys", "1", "--channels", "4"])
    main(["generate", "--out", str(narrow), "--steps", "600", "--keys", "1", "--channels", "2"])
    member = tmp_path / "member"
    argv = ["train", *config, "--data", str(wide), "--window", "4", "--features", "ch2,ch3"]
    assert main([*argv, "--out", str(member)]) == ExitCode.OK
    capsys.readouterr()
    argv = ["train", *config, "--data", str(narrow), "--window", "4", "--detector", "fusion-concat"]
    argv += ["--member", f"a={member}", "--member", f"b={member}", "--out", str(tmp_path / "f")]
    assert main(argv) == ExitCode.FAILURE
    err = capsys.readouterr().err
    assert "member 'a' reads feature 'ch2[t-3]'" in err and "do not carry" in err


def test_members_must_fit_the_detector_kind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The kind's member count and its [fusion] settings are checked before any training."""
    feed = tmp_path / "feed.csv"
    main(["generate", "--out", str(feed), "--steps", "300", "--keys", "1"])
    train = ["train", "--data", str(feed), "--window", "4", "--out", str(tmp_path / "b")]
    capsys.readouterr()
    assert main([*train, "--member", f"a={tmp_path}"]) == ExitCode.CONFIG
    assert "--member is for fusion detectors" in capsys.readouterr().err
    fusion = [*train, "--detector", "fusion-late", "--member", f"a={tmp_path}"]
    assert main(fusion) == ExitCode.CONFIG
    assert "fusion-late fuses two autoencoders: give --member twice" in capsys.readouterr().err
    config = tmp_path / "weights.toml"
    config.write_text("[fusion]\nmode = 'weighted'\nweights = [1.0, 2.0]\n")
    concat = [*train, "--config", str(config), "--detector", "fusion-concat"]
    concat += ["--member", f"a={tmp_path}", "--member", f"b={tmp_path}"]
    assert main(concat) == ExitCode.CONFIG
    assert "[fusion] for --detector fusion-concat:" in capsys.readouterr().err


def test_progress_is_a_bar_on_a_terminal_and_events_elsewhere() -> None:
    """Training and backtests share one bar; off a terminal each logs its own events."""
    from streamer.cli.progress import ScoringProgress, TrainingProgress

    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=100, color_system=None)
    progress = TrainingProgress(10, terminal)
    progress.set_model(keras.Sequential(name="ae1"))
    progress.on_train_begin()
    progress.on_epoch_end(0, {"loss": 0.5, "val_loss": 0.25})
    progress.on_train_end()
    with ScoringProgress(terminal, 300) as advance:
        advance(300)
    drawn = screen.getvalue()
    assert "training ae1" in drawn and "1/1 loss 0.5  held-out 0.25" in drawn
    assert "scoring" in drawn and "300/300" in drawn

    log_only = io.StringIO()
    quiet = Console(file=log_only, force_terminal=False)
    level = structlog.get_config()["wrapper_class"]  # the epoch events are debug
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with capture_logs() as events:
            progress = TrainingProgress(10, quiet)
            progress.set_model(keras.Sequential(name="ae2"))
            progress.on_train_begin()
            progress.on_epoch_end(0, {"loss": 0.5})
            progress.on_train_end()
            with ScoringProgress(quiet, 100) as advance:
                for _ in range(4):
                    advance(25)
    finally:
        structlog.configure(wrapper_class=level)
    assert log_only.getvalue() == ""
    assert [e["event"] for e in events] == ["epoch_trained", *["backtest_progress"] * 4]
    assert events[0]["model"] == "ae2" and events[-1]["records"] == 100


def small_config(directory: Path) -> Path:
    """A config whose autoencoders fit windows of a few features, trained for 3 epochs."""
    path = directory / "small.toml"
    path.write_text(
        "[train]\nepochs = 3\n[train.ae1]\nhidden = [8]\nlatent = 4\n"
        "[train.ae2]\nhidden = [4]\nlatent = 2\n"
    )
    return path


@pytest.mark.parametrize("command", ["train", "score"])
def test_a_missing_data_file_is_a_usage_error_naming_it(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    absent = tmp_path / "absent.csv"
    given = {"train": ["--out", str(tmp_path / "b")], "score": ["--model", str(tmp_path / "b")]}
    assert main([command, "--data", str(absent), *given[command]]) == ExitCode.CONFIG
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"tandem: {absent}: no such file" and "Traceback" not in err


def test_score_shows_a_stamp_beyond_any_calendar_as_a_dash(
    tiny_bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The daemon accepts any int64 ``ts``; so must the table of the highest scores."""
    monkeypatch.setenv("COLUMNS", "200")  # the whole table on one line per row
    data = tmp_path / "odd.csv"
    frame = pd.DataFrame({f"x{i}": [0.1 * i, 30.0] for i in range(8)})
    frame.insert(0, "ts", [1_764_000_000_123, 2**63 - 1])
    frame.to_csv(data, index=False)
    assert main(["score", "--model", str(tiny_bundle), "--data", str(data)]) == ExitCode.OK
    rows = [line for line in capsys.readouterr().out.splitlines() if "│ default " in line]
    assert len(rows) == 2, "one row per window (no key column: key default)"
    assert any("│ 2025-11-24 16:00:00 │" in row for row in rows)
    assert any("│                   - │" in row for row in rows)


@pytest.mark.parametrize("command", ["score", "backtest", "run"])
def test_a_missing_model_directory_is_a_usage_error_naming_it(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, absent = tmp_path / "windows.csv", tmp_path / "no-such-bundle"
    pd.DataFrame({"x0": [0.0], "x1": [1.0]}).to_csv(data, index=False)
    given = {"score": ["--data", str(data)], "backtest": ["--data", str(data)], "run": []}
    assert main([command, "--model", str(absent), *given[command]]) == ExitCode.CONFIG
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"tandem: {absent}: no such model bundle directory (--model)"
    assert "Traceback" not in err
