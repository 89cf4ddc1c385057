"""Backtests without a broker: the run loop over a file source, sweeps, the report's files, and
the ``tandem backtest`` command on a file."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import numpy as np
import orjson
import pandas as pd
import pytest

from detectors.cascade import CascadeDetector
from streamer.backtest.labels import attach_labels
from streamer.backtest.run import Backtest, run_backtest
from streamer.backtest.sources import FileSource
from streamer.backtest.summary import summarise, sweep_table
from streamer.backtest.sweep import parse_sweep, run_sweep
from streamer.backtest.write import alerts_frame, write_report
from streamer.cli.main import ExitCode, main
from streamer.config import AlertsConfig, CalibrationConfig
from streamer.errors import ConfigError
from streamer.ingest.codec import JsonCodec, Limits
from streamer.ingest.tables import WindowTable, load_windows

START_MS = 1_764_000_000_000
CALIBRATION = {
    "method": "quantile",
    "quantile": 0.995,
    "window": 400,
    "warmup": 200,
    "refresh": 16,
    "from_held_out": False,  # a warm-up: the tests below count on its first 200 windows
}
ANOMALOUS_ROWS = (930, 931, 932, 1050, 1110)


def windows_frame(n: int = 1200) -> pd.DataFrame:
    """n windows of 8 features in time order, 3 keys round robin, labelled anomalies (the
    tiny model's two latent factors, broken) after the calibration warm-up."""
    tiny = np.random.default_rng(0)  # the tiny bundle's two factors (tests/conftest.py)
    tiny.normal(size=(2000, 2))
    rng = np.random.default_rng(5)
    base = rng.normal(size=(n, 2)) @ tiny.normal(size=(2, 8))
    values = base + rng.normal(0, 0.05, size=base.shape)
    labels = np.zeros(n, dtype=int)
    for row in (r for r in ANOMALOUS_ROWS if r < n):
        values[row] += rng.normal(0, 3, size=8)
        labels[row] = 1
    frame = pd.DataFrame(values.round(5), columns=[f"x{i}" for i in range(8)])
    frame.insert(0, "ts", START_MS + 1000 * np.arange(n))
    frame.insert(0, "key", [f"s{i % 3}" for i in range(n)])
    frame["label"] = labels
    return frame


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "windows.csv"
    windows_frame().to_csv(path, index=False)
    return path


def backtest(
    table: WindowTable,
    detector: CascadeDetector,
    batch_size: int,
    mode: Literal["events", "windows"] = "windows",
    **calibration: object,
) -> Backtest:
    config = CalibrationConfig.model_validate({**CALIBRATION, **calibration})
    source = FileSource(table, JsonCodec(Limits(8)), "windows.csv", batch_size)
    return run_backtest(
        source,
        JsonCodec(Limits(8)),
        detector,
        config,
        {"name": "tiny", "version": "1"},
        "file",
        alerting=AlertsConfig(mode=mode, quiet=4),
    )


def test_events_mode_tells_each_anomaly_once_in_any_batches(
    data_file: Path, tiny_detector: CascadeDetector
) -> None:
    table = load_windows(data_file)
    small, large = (backtest(table, tiny_detector, n, mode="events") for n in (7, 500))
    assert [dict(a, detected_ts=0) for a in small.alerts] == [
        dict(a, detected_ts=0) for a in large.alerts
    ]
    opened = [a for a in small.alerts if a["type"] == "opened"]
    flagged = small.windows[small.windows["flag"]]
    assert 0 < len(opened) < len(flagged)
    assert set(flagged["event_id"]) == {a["event_id"] for a in opened}, "each flag is in one"
    np.testing.assert_array_equal(small.windows["event_id"], large.windows["event_id"])


def test_the_same_windows_flag_the_same_alerts_in_any_batches(
    data_file: Path, tiny_detector: CascadeDetector
) -> None:
    table = load_windows(data_file)
    small, large = backtest(table, tiny_detector, 7), backtest(table, tiny_detector, 500)
    assert len(small.windows) == len(large.windows) == len(table)
    assert small.alerts, "the broken windows alert"
    assert [a["alert_id"] for a in small.alerts] == [a["alert_id"] for a in large.alerts]
    assert [a["score"] for a in small.alerts] == [a["score"] for a in large.alerts]
    assert [a["threshold"] for a in small.alerts] == [a["threshold"] for a in large.alerts]
    flagged_rows = {int(a["alert_id"].rsplit("/", 1)[1]) for a in small.alerts}
    assert set(ANOMALOUS_ROWS) <= flagged_rows
    assert small.alerts[0]["alert_id"].startswith("windows.csv/0/")
    np.testing.assert_array_equal(small.windows["flag"], large.windows["flag"])
    assert small.windows["flag"].sum() == len(small.alerts)


def test_a_sweep_at_the_runs_own_setting_reproduces_its_flags(
    data_file: Path, tiny_detector: CascadeDetector
) -> None:
    run = backtest(load_windows(data_file), tiny_detector, 64)
    settings = parse_sweep("calibration.quantile=0.995,0.9", run.calibration)
    same, looser = run_sweep(run.windows, settings, run.prior)
    np.testing.assert_array_equal(same.flags.flags, run.windows["flag"].to_numpy())
    np.testing.assert_array_equal(same.flags.thresholds, run.windows["threshold"].to_numpy())
    assert looser.flags.flags.sum() > 3 * same.flags.flags.sum()
    assert looser.setting.calibration.quantile == 0.9 and looser.setting.name == "quantile=0.9"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("calibration.quantile=2", "quantile=2"),
        ("calibration.nonsense=1,2", "KEY one of"),
        ("target_rate", "expected calibration.KEY"),
        ("calibration.checkpoint_interval_s=1,2", "does not change"),
        ("alerts.update_every=1,2", "KEY one of quiet, cooldown"),
        ("alerts.quiet=", "KEY one of quiet, cooldown"),
        ("alerts.quiet=4,0", "alerts.quiet=0"),
        ("alerts.cooldown=-1", "alerts.cooldown=-1"),
    ],
)
def test_a_bad_sweep_is_refused_naming_the_setting(text: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        parse_sweep(text, CalibrationConfig())


def test_a_window_the_codec_refuses_is_a_dead_letter_with_its_row(
    tmp_path: Path, tiny_detector: CascadeDetector
) -> None:
    frame = windows_frame(300)
    frame.loc[17, "x3"] = 1e13  # beyond [codec].max_abs_value
    path = tmp_path / "windows.csv"
    frame.to_csv(path, index=False)
    run = backtest(load_windows(path), tiny_detector, 100)
    assert [letter.record.position for letter in run.dead_letters] == ["windows.csv/0/17"]
    assert run.dead_letters[0].reason == "field 'features' value 3 is 1e+13, beyond ±1e+12"
    assert len(run.windows) == 299 and 17 not in run.windows["offset"].tolist()
    report = summarise(run)
    assert report["counts"]["dead_letters"] == 1
    assert report["dead_letters"]["first"][0]["source"] == "windows.csv/0/17"


def test_the_report_files_say_what_the_backtest_found(
    data_file: Path, tiny_detector: CascadeDetector, tmp_path: Path
) -> None:
    table = load_windows(data_file)
    run = backtest(table, tiny_detector, 128)
    run.sweep = run_sweep(
        run.windows, parse_sweep("quantile=0.995,0.99", run.calibration), run.prior
    )
    assert attach_labels(run, table, None) is None
    report = summarise(run)
    paths = write_report(tmp_path / "out", run, report, None)
    names = ["report.json", "alerts.csv", "report.html", "windows.parquet"]
    assert [p.name for p in paths] == names

    saved = orjson.loads(paths[0].read_bytes())
    assert saved["counts"]["windows"] == 1200 and saved["counts"]["alerts"] == len(run.alerts)
    assert saved["counts"]["alert_records"] == len(run.alerts)
    assert saved["events"] == {
        "mode": "windows",
        "alerts": len(run.alerts),
        "alert_records": len(run.alerts),
    }
    metrics = saved["metrics"]
    assert metrics["events"] == 5, "keys alternate: 930, 931 and 932 are of three keys"
    assert metrics["anomalous_windows"] == len(ANOMALOUS_ROWS)
    assert [row["setting"] for row in saved["sweep"]] == ["quantile=0.995", "quantile=0.99"]
    assert saved["sweep"][0]["alerts"] == saved["counts"]["alerts"]
    assert {row["key"] for row in saved["per_key"]} == {"s0", "s1", "s2"}

    windows = pd.read_parquet(paths[3])
    assert len(windows) == 1200 and windows["flag"].sum() == len(run.alerts)
    assert list(windows.columns) == [
        "partition", "offset", "key", "ts", "time_utc", "label", "score", "ae1", "ae2",
        "threshold", "surprise", "flag", "event_id",
    ]  # fmt: skip
    assert (windows["time_utc"] == pd.to_datetime(windows["ts"], unit="ms", utc=True)).all()
    flagged = windows[windows["flag"]]
    alerts = pd.read_csv(paths[1])
    assert alerts["offset"].tolist() == flagged["offset"].tolist()
    np.testing.assert_allclose(alerts["score"], flagged["score"], rtol=1e-6)
    quiet = dataclasses.replace(run, alerts=[])
    assert list(alerts_frame(quiet).columns) == list(alerts.columns), "one header, alerts or not"
    assert sorted(saved["thresholds"]) == ["s0", "s1", "s2"], "a curve per key (per_key default)"
    assert all(saved["thresholds"].values()), "the threshold curves are there"

    alerts = pd.read_csv(paths[1])
    assert alerts["alert_id"].tolist() == [a["alert_id"] for a in run.alerts]
    assert alerts["score"].tolist() == [a["score"] for a in run.alerts]
    labelled = alerts.set_index("alert_id")["label"]
    for row in ANOMALOUS_ROWS:
        assert labelled[f"windows.csv/0/{row}"] == 1

    html = paths[2].read_text()
    assert html.count("<img ") == 3, "timeline, score parts, blame"
    assert "event F1" in html and "Sweep" in html and "windows.csv/0/930" in html
    assert "Highest-scoring alerts" in html and "one alert record per flagged window" in html


def test_the_report_counts_and_lists_the_alert_events(
    data_file: Path, tiny_detector: CascadeDetector, tmp_path: Path
) -> None:
    table = load_windows(data_file)
    full = backtest(table, tiny_detector, 64, mode="events", quantile=0.97)
    last_flag = int(full.windows["offset"][full.windows["flag"]].max())
    table = table.select(np.arange(len(table)) <= last_flag + 1)  # an event is still open
    run = backtest(table, tiny_detector, 64, mode="events", quantile=0.97)
    assert attach_labels(run, table, None) is None
    run.sweep = run_sweep(
        run.windows, parse_sweep("alerts.quiet=1,4,16", run.calibration), run.prior
    )
    report = summarise(run)
    events, by_type = report["events"], pd.Series([a["type"] for a in run.alerts])
    assert report["counts"]["alert_records"] == len(run.alerts)
    assert report["counts"]["alerts"] == run.windows["flag"].sum(), "alerts: flagged windows"
    assert (events["mode"], events["quiet"], events["cooldown"]) == ("events", 4, 0)
    assert events["count"] == (by_type == "opened").sum() > 5
    assert events["closed"] == (by_type == "closed").sum() > 0
    assert events["open_at_end"] == events["count"] - events["closed"] > 0

    labels = events["against_labels"]
    metrics = report["metrics"]
    assert labels["on_anomalies"] + labels["false_alarms"] + labels["unlabelled"] == events["count"]
    assert labels["anomalies"] == metrics["events"] == 5
    assert metrics["events_detected"] <= labels["anomalies_caught"], "no cooldown: flags are in"
    assert labels["false_alarms"] > 0 and labels["most_events_on_one_anomaly"] == 1

    listed = events["list"]
    assert len(listed) == min(50, events["count"])
    peaks = [entry["peak_score"] for entry in listed]
    assert peaks == sorted(peaks, reverse=True)
    latest = {a["event_id"]: a for a in run.alerts}
    for entry in listed:
        record = latest[entry["event_id"]]
        members = run.windows[run.windows["event_id"] == entry["event_id"]]
        assert entry["key"] == record["key"] == members["key"].iloc[0]
        assert entry["windows"] == len(members) and entry["flagged"] == members["flag"].sum()
        assert entry["peak_score"] == members["score"].max()
        assert (
            entry["opened_utc"]
            == pd.Timestamp(record["event"]["opened_ts"], unit="ms", tz="UTC").isoformat()
        )
        assert entry["top_features"] == record["top_features"]
        assert entry["closed"] == (record["type"] == "closed")
        if entry["closed"]:
            assert entry["windows"] == record["event"]["windows"]
            assert entry["flagged"] == record["event"]["flagged"]
            assert (entry["peak_score"], entry["threshold"]) == (
                record["score"],
                record["threshold"],
            )
        else:
            assert entry["windows"] >= record["event"]["windows"], "records lag an open event"
        anomalous = (members["label"] == 1).any()
        assert entry["verdict"] == ("anomaly" if anomalous else "false alarm")

    html = write_report(tmp_path / "out", run, report, None)[2].read_text()
    assert "<h2>Alert events</h2>" in html and "Highest-scoring alerts" not in html
    assert f"{events['count']:,} events opened" in html
    assert listed[0]["event_id"] in html and ">false alarm<" in html and ">closed<" in html
    assert "<th>false-alarm events</th>" in html and "alerts.quiet=16" in html


def test_a_sweep_of_alert_settings_counts_their_events(
    data_file: Path, tiny_detector: CascadeDetector
) -> None:
    table = load_windows(data_file)
    run = backtest(table, tiny_detector, 64, mode="events", quantile=0.97)
    settings = parse_sweep("alerts.quiet=4,1,64", run.calibration)
    settings += parse_sweep("calibration.quantile=0.97", run.calibration)
    settings += parse_sweep("alerts.cooldown=0,30", run.calibration)
    run.sweep = run_sweep(run.windows, settings, run.prior)
    report = summarise(run)
    rows = {row["setting"]: row for row in report["sweep"]}
    assert list(rows) == [
        "alerts.quiet=4", "alerts.quiet=1", "alerts.quiet=64", "quantile=0.97",
        "alerts.cooldown=0", "alerts.cooldown=30",
    ]  # fmt: skip
    own = {key: report["events"][key] for key in ("count", "closed", "open_at_end")}
    own["against_labels"] = report["events"]["against_labels"]
    for name in ("alerts.quiet=4", "quantile=0.97", "alerts.cooldown=0"):
        assert rows[name]["events"] == {"quiet": 4, "cooldown": 0, **own}, name
        assert rows[name]["alerts"] == report["counts"]["alerts"]
    counts = [rows[f"alerts.quiet={q}"]["events"]["count"] for q in (1, 4, 64)]
    assert counts[0] > counts[1] > counts[2] >= 1, "a longer quiet joins events"
    assert rows["alerts.cooldown=30"]["events"]["count"] < own["count"]
    assert rows["alerts.quiet=64"]["events"]["quiet"] == 64

    header, cells = sweep_table(report["sweep"])
    assert header[3:6] == ["events", "on anomalies", "false-alarm events"]
    assert cells[0][3] == str(own["count"])
    assert cells[0][4] == str(own["against_labels"]["on_anomalies"])


def test_labels_from_a_file_of_time_ranges_replace_the_column(
    data_file: Path, tiny_detector: CascadeDetector, tmp_path: Path
) -> None:
    table = load_windows(data_file)
    run = backtest(table, tiny_detector, 128)
    ranges = tmp_path / "ranges.csv"
    first, last = START_MS + 930_000, START_MS + 932_000
    ranges.write_text(f"start,end,key\n{first},{last},s0\n")
    assert attach_labels(run, table, str(ranges)) is not None
    labelled = run.windows[run.windows["label"] == 1]
    assert labelled["offset"].tolist() == [930], "only s0's window in the range"


def test_backtest_command_on_a_file(
    data_file: Path, tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in CALIBRATION.items():
        monkeypatch.setenv(f"TANDEM_CALIBRATION_{key.upper()}", str(value))
    out = tmp_path / "report"
    args = ["backtest", "--data", str(data_file), "--model", str(tiny_bundle), "--out", str(out)]
    assert main([*args, "--sweep", "calibration.quantile=0.99,0.999"]) == ExitCode.OK
    saved = orjson.loads((out / "report.json").read_bytes())
    assert saved["metrics"]["events_detected"] >= 3
    assert len(saved["sweep"]) == 2


def test_backtest_command_refuses_contradicting_sources(tiny_bundle: Path, data_file: Path) -> None:
    model = ["--model", str(tiny_bundle)]
    assert main(["backtest", *model]) == ExitCode.CONFIG
    assert main(["backtest", *model, "--data", str(data_file), "--topic", "t"]) == ExitCode.CONFIG
    assert main(["backtest", *model, "--data", str(data_file), "--sweep", "x=1"]) == ExitCode.CONFIG
    assert main(["backtest", *model, "--data", str(data_file), "--labels", "nope"]) == 2
    assert main(["backtest", *model, "--topic", "t", "--labels", "label"]) == ExitCode.CONFIG


@pytest.mark.parametrize("missing", ["data", "labels"])
def test_a_missing_data_or_labels_file_is_a_usage_error_naming_it(
    tiny_bundle: Path,
    data_file: Path,
    tmp_path: Path,
    missing: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    absent = tmp_path / "absent.csv"
    argv = ["backtest", "--model", str(tiny_bundle)]
    if missing == "data":
        argv += ["--data", str(absent)]
        said = f"{absent}: no such file"
    else:
        argv += ["--data", str(data_file), "--labels", str(absent)]
        said = f"--labels {absent}: no such file (nor a column of {data_file})"
    assert main(argv) == ExitCode.CONFIG
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"tandem: {said}" and "Traceback" not in err


def test_nab_scores_a_key_whose_clock_steps_back_in_its_row_order() -> None:
    from streamer.backtest.summary import nab_standard

    ts = np.array([0, 1000, 2000, 3000, 2500, 4000, 5000, 6000, 7000, 8000], dtype=np.int64)
    keys = np.full(len(ts), "k")
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 0, 0], dtype=np.int8)
    caught = nab_standard(keys, ts, labels == 1, labels, None)
    missed = nab_standard(keys, ts, np.zeros(len(ts), dtype=bool), labels, None)
    assert caught == 100.0 and missed == 0.0


def test_a_spot_warmup_too_short_for_its_tail_is_warned_about() -> None:
    """SPOT fits from 50 accepted scores at the least (``first_fit_after``); a shorter warm-up
    is warned about, unless the calibrator starts from held-out scores."""
    from structlog.testing import capture_logs

    from streamer.calibrators import build_calibrator

    prior = np.random.default_rng(0).exponential(size=118)
    with capture_logs() as logs:
        build_calibrator(CalibrationConfig(method="spot", warmup=20, refresh=64))
        build_calibrator(CalibrationConfig(method="quantile", warmup=20, refresh=64))
        build_calibrator(CalibrationConfig(method="spot", warmup=256, refresh=64))
        build_calibrator(CalibrationConfig(method="spot", warmup=20, refresh=64), prior)
    (warning,) = [event for event in logs if event["event"] == "calibration_warmup_short"]
    assert warning["warmup"] == 20 and warning["first_threshold_after"] == 50


@pytest.mark.parametrize("mode", ["windows", "events"])
def test_a_backtest_that_scored_nothing_still_writes_its_report(
    data_file: Path,
    tiny_detector: CascadeDetector,
    tmp_path: Path,
    mode: Literal["events", "windows"],
) -> None:
    table = load_windows(data_file)
    run = backtest(table.select(np.zeros(len(table), dtype=bool)), tiny_detector, 100, mode)
    run.sweep = run_sweep(run.windows, parse_sweep("alerts.quiet=2", run.calibration), run.prior)
    paths = write_report(tmp_path / "out", run, summarise(run), None)
    saved = orjson.loads(paths[0].read_bytes())
    assert saved["counts"]["windows"] == 0 and saved["sweep"][0]["events"]["count"] == 0
    assert saved["events"]["mode"] == mode and saved["events"].get("list", []) == []
    assert pd.read_parquet(paths[3]).empty
    assert "No window was scored" in paths[2].read_text()


def test_an_alert_stamped_at_the_end_of_int64_is_reported_without_a_time(
    tiny_detector: CascadeDetector, tmp_path: Path
) -> None:
    """The daemon accepts any int64 ``ts``; the report keeps it and leaves its time empty."""
    frame = windows_frame(300)
    frame.loc[299, "ts"] = 2**63 - 1
    frame.loc[299, "x0"] += 50.0
    frame.loc[299, "label"] = 1
    path = tmp_path / "windows.csv"
    frame.to_csv(path, index=False)
    table = load_windows(path)
    run = backtest(table, tiny_detector, 100, mode="events")
    assert run.windows["flag"].to_numpy()[-1], "the last window opens an event"
    assert attach_labels(run, table, None) is None
    paths = write_report(tmp_path / "out", run, summarise(run), None)
    listed = orjson.loads(paths[0].read_bytes())["events"]["list"]
    last = next(e for e in listed if e["opened_utc"] is None)
    assert last["last_flagged_utc"] is None and last["verdict"] == "anomaly"
    alerts = pd.read_csv(paths[1])
    assert alerts["time_utc"].isna().tolist() == (alerts["event_ts"] == 2**63 - 1).tolist()
    windows = pd.read_parquet(paths[3])
    assert windows["ts"].iloc[-1] == 2**63 - 1 and pd.isna(windows["time_utc"].iloc[-1])
    assert windows["time_utc"].iloc[:-1].notna().all()
    assert "<img " in paths[2].read_text()


def test_a_backtest_starts_from_the_models_held_out_scores(
    data_file: Path, tiny_detector: CascadeDetector
) -> None:
    """Every key is judged from its first window (no warm-up to wait for) by a threshold fitted
    on the bundle's held-out scores; ``from_held_out = false`` waits for the warm-up instead."""
    table = load_windows(data_file)
    run = backtest(table, tiny_detector, 64, from_held_out=True)
    np.testing.assert_array_equal(run.prior, tiny_detector.held_out_scores)
    assert len(run.prior) == 400
    assert np.isfinite(run.windows["threshold"]).all()
    waiting = backtest(table, tiny_detector, 64, from_held_out=False)
    assert np.isnan(waiting.windows["threshold"].to_numpy()[:200]).all()
