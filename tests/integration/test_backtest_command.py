"""A backtest predicts the daemon: one labelled file replayed into a topic and read by the daemon,
then backtested from the topic and from the file, gives the same alert event records (the default
mode) with the same scores."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
from kafka import KafkaProducer

from detectors.cascade import CascadeDetector
from streamer.broker.daemon import build_pipeline
from streamer.cli.main import ExitCode, main
from streamer.config import TandemConfig
from tests.conftest import Broker, read_topic
from tests.streamer.backtest.test_run import ANOMALOUS_ROWS, CALIBRATION, windows_frame

WINDOWS = 1200


@pytest.mark.parametrize("client", ["kafka-python", "librdkafka"])
def test_backtests_of_the_topic_and_of_the_file_flag_what_the_daemon_flagged(
    kafka_broker: Broker,
    make_topic: Callable[..., str],
    tiny_bundle: Path,
    tiny_detector: CascadeDetector,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    client: str,
) -> None:
    """``client``: the one the topic's backtest reads with (the daemon reads with
    kafka-python's)."""
    data = tmp_path / "windows.csv"
    windows_frame(WINDOWS).to_csv(data, index=False)
    topic = make_topic()
    config = daemon_config(kafka_broker, make_topic, topic, 100, CALIBRATION)
    monkeypatch.setenv("TANDEM_KAFKA_BOOTSTRAP", kafka_broker.bootstrap)
    for key, value in CALIBRATION.items():
        monkeypatch.setenv(f"TANDEM_CALIBRATION_{key.upper()}", str(value))
    assert main(["replay", "--data", str(data), "--topic", topic]) == ExitCode.OK
    producer = KafkaProducer(**kafka_broker.client_options())
    producer.send(topic, key=b"s0", value=b"{oops").get(timeout=10)  # offset WINDOWS
    producer.close()

    pipeline = build_pipeline(config, tiny_detector, name="tiny")
    processed, alerted = 0, 0
    for _ in range(300):
        report = pipeline.runner.step()
        if report is not None:
            processed, alerted = processed + report.records, alerted + report.alerts
        if processed > WINDOWS:
            break
    pipeline.close()
    assert processed == WINDOWS + 1
    records = read_topic(kafka_broker, config.kafka.alerts_topic, lambda got: len(got) >= alerted)
    daemon = sorted((orjson.loads(r.value) for r in records), key=lambda a: a["at"]["offset"])
    assert len(daemon) == alerted > 0 and all(a["type"] != "window" for a in daemon), "events"

    model = ["--model", str(tiny_bundle)]
    monkeypatch.setenv("TANDEM_KAFKA_CLIENT", client)
    from_topic, from_file = tmp_path / "topic", tmp_path / "file"
    topic_args = ["backtest", "--topic", topic, *model, "--out", str(from_topic)]
    assert main([*topic_args, "--batch-size", "37"]) == ExitCode.OK
    assert main(["backtest", "--data", str(data), *model, "--out", str(from_file)]) == ExitCode.OK

    topic_alerts = pd.read_csv(from_topic / "alerts.csv")
    assert topic_alerts["alert_id"].tolist() == [a["alert_id"] for a in daemon]
    assert topic_alerts["type"].tolist() == [a["type"] for a in daemon]
    assert topic_alerts["score"].tolist() == [a["score"] for a in daemon], "exactly the same"
    assert topic_alerts["threshold"].tolist() == [a["threshold"] for a in daemon]
    assert topic_alerts["event_ts"].tolist() == [a["event_ts"] for a in daemon]
    report = orjson.loads((from_topic / "report.json").read_bytes())
    assert report["counts"]["dead_letters"] == 1
    assert report["dead_letters"]["first"][0]["source"] == f"{topic}/0/{WINDOWS}"
    assert report["metrics"]["events_detected"] == report["metrics"]["events"] == 5, (
        "the records' own labels reach the report"
    )
    windows = pd.read_parquet(from_topic / "windows.parquet").set_index("offset")
    assert (windows.loc[list(ANOMALOUS_ROWS), "event_id"] != "").all(), "each is in an event"

    file_alerts = pd.read_csv(from_file / "alerts.csv")
    assert file_alerts["offset"].tolist() == [a["source"]["offset"] for a in daemon], (
        "file row = replayed offset"
    )
    assert file_alerts["type"].tolist() == [a["type"] for a in daemon]
    assert file_alerts["score"].tolist() == [a["score"] for a in daemon]
    assert file_alerts["threshold"].tolist() == [a["threshold"] for a in daemon]


@pytest.mark.parametrize("client", ["kafka-python", "librdkafka"])
def test_a_range_of_offsets_or_times_reads_only_that_range(
    kafka_broker: Broker,
    make_topic: Callable[..., str],
    tiny_bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    client: str,
) -> None:
    data = tmp_path / "windows.csv"
    frame = windows_frame(400)
    frame.to_csv(data, index=False)
    topic = make_topic(partitions=2)
    monkeypatch.setenv("TANDEM_KAFKA_BOOTSTRAP", kafka_broker.bootstrap)
    monkeypatch.setenv("TANDEM_KAFKA_CLIENT", client)
    monkeypatch.setenv("TANDEM_CALIBRATION_WARMUP", "50")
    monkeypatch.setenv("TANDEM_CALIBRATION_WINDOW", "200")
    monkeypatch.setenv("TANDEM_CALIBRATION_REFRESH", "20")
    assert main(["replay", "--data", str(data), "--topic", topic]) == ExitCode.OK
    model = ["--model", str(tiny_bundle)]

    by_offset = tmp_path / "offsets"
    args = ["backtest", "--topic", topic, *model, "--from-offset", "10", "--to-offset", "60"]
    assert main([*args, "--out", str(by_offset)]) == ExitCode.OK
    report = orjson.loads((by_offset / "report.json").read_bytes())
    assert report["counts"]["windows"] == 2 * 50, "offsets 10..59 of both partitions"

    first, last = frame["ts"].iloc[100], frame["ts"].iloc[300]
    when = [pd.Timestamp(t, unit="ms", tz="UTC").isoformat() for t in (first, last)]
    by_time = tmp_path / "times"
    args = ["backtest", "--topic", topic, *model, "--from-time", when[0], "--to-time", when[1]]
    assert main([*args, "--out", str(by_time)]) == ExitCode.OK
    report = orjson.loads((by_time / "report.json").read_bytes())
    assert report["counts"]["windows"] == 200, "windows 100..299, one a second"
    curves = report["thresholds"].values()  # one per key: thresholds are per key by default
    stamps = [ts for curve in curves for ts, _ in curve] or [first]
    assert min(stamps) >= first and max(stamps) < last


@pytest.mark.parametrize("method", ["quantile", "likelihood"])
def test_with_four_partitions_any_fetch_interleaving_gives_the_same_alerts(
    method: str,
    kafka_broker: Broker,
    make_topic: Callable[..., str],
    tiny_bundle: Path,
    tiny_detector: CascadeDetector,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Eight keys on four partitions, keys warming up for most of the stream (judged by the
    bundle's held-out scores meanwhile, never by the other keys'): two daemons fetching in
    batches of 7 and of 100, a topic backtest and a file backtest (the file's row order, one
    more interleaving) flag the same windows with the same scores and thresholds, and the
    daemons and the topic backtest give the same alert ids. The same with ``method =
    "likelihood"``, whose keys learn every score, without the memory of normal windows: its
    keys' histories start from the model's held-out scores, which sit above the scores the
    memory lowers, so this stream's lone spikes do not lift a moving average of 10 scores past
    them (the quantile case runs with the memory)."""
    data = tmp_path / "windows.csv"
    frame = windows_frame(WINDOWS)
    frame["key"] = [f"s{i % 8}" for i in range(WINDOWS)]
    frame.to_csv(data, index=False)
    topic = make_topic(partitions=4)
    calibration = {
        **CALIBRATION,
        "method": method,
        "target_rate": 1e-3,
        "from_held_out": True,
        "per_key": True,
        "warmup": 64,
    }
    memory = {"enabled": method != "likelihood"}
    monkeypatch.setenv("TANDEM_KAFKA_BOOTSTRAP", kafka_broker.bootstrap)
    monkeypatch.setenv("TANDEM_MEMORY_ENABLED", str(memory["enabled"]).lower())
    for key, value in calibration.items():
        monkeypatch.setenv(f"TANDEM_CALIBRATION_{key.upper()}", str(value).lower())
    assert main(["replay", "--data", str(data), "--topic", topic]) == ExitCode.OK

    daemons = []
    for batch in (7, 100):
        config = daemon_config(kafka_broker, make_topic, topic, batch, calibration, memory)
        daemons.append(_daemon_alerts(kafka_broker, config, tiny_detector))
    ids = [sorted(a["alert_id"] for a in alerts) for alerts in daemons]
    assert ids[0] == ids[1] and len(ids[0]) > 0
    judged = [_judgements(alerts) for alerts in daemons]
    assert judged[0] == judged[1]
    anomalous = {"s2", "s6"} if method == "quantile" else {"s2"}  # one alert per onset
    assert {key for key, *_ in judged[0]} >= anomalous, "anomalies among them"

    model = ["--model", str(tiny_bundle)]
    from_topic, from_file = tmp_path / "topic", tmp_path / "file"
    topic_args = ["backtest", "--topic", topic, *model, "--out", str(from_topic)]
    assert main([*topic_args, "--batch-size", "37"]) == ExitCode.OK
    assert main(["backtest", "--data", str(data), *model, "--out", str(from_file)]) == ExitCode.OK
    topic_alerts = pd.read_csv(from_topic / "alerts.csv", dtype={"key": str})
    assert sorted(topic_alerts["alert_id"]) == ids[0]
    file_alerts = pd.read_csv(from_file / "alerts.csv", dtype={"key": str})
    for alerts in (topic_alerts, file_alerts):
        columns = ["key", "event_ts", "type", "score", "threshold"]
        assert sorted(alerts[columns].itertuples(index=False, name=None)) == judged[0]


def daemon_config(
    kafka_broker: Broker,
    make_topic: Callable[..., str],
    topic: str,
    batch: int,
    calibration: Mapping[str, Any],
    memory: Mapping[str, Any] | None = None,
) -> TandemConfig:
    """A daemon's config reading ``topic`` in a new group, in batches of ``batch``, alerting
    to a topic of its own (``memory``: the ``[memory]`` section, its defaults when None)."""
    return kafka_broker.config(
        kafka={
            "input_topic": topic,
            "alerts_topic": make_topic(),
            "dead_letter_topic": make_topic(),
            "group_id": f"tandem-it-{uuid.uuid4().hex[:8]}",
        },
        batch={"max_records": batch, "max_wait_ms": 50},
        calibration=calibration,
        memory=memory or {},
    )


def _daemon_alerts(
    kafka_broker: Broker, config: TandemConfig, detector: CascadeDetector
) -> list[dict[str, Any]]:
    """What a daemon built from ``config`` alerts on the whole input topic (WINDOWS records)."""
    pipeline = build_pipeline(config, detector, name="tiny")
    processed, alerted = 0, 0
    try:
        for _ in range(5000):  # ~180 batches of 7, and polls that find nothing while joining
            report = pipeline.runner.step()
            if report is not None:
                processed, alerted = processed + report.records, alerted + report.alerts
            if processed >= WINDOWS:
                break
    finally:
        pipeline.close()
    assert processed == WINDOWS
    records = read_topic(kafka_broker, config.kafka.alerts_topic, lambda got: len(got) >= alerted)
    return [orjson.loads(r.value) for r in records]


def _judgements(alerts: list[dict[str, Any]]) -> list[tuple[str, int, str, float, float]]:
    """Each alert record's key, window time, type, score and threshold, sorted."""
    return sorted((a["key"], a["event_ts"], a["type"], a["score"], a["threshold"]) for a in alerts)
