"""generate → train → score through ``main(argv)``, on a small generated feed."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from streamer.cli import ExitCode, main


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
    assert "trained on windows of 32 features but the stream carries 24" in capsys.readouterr().err
