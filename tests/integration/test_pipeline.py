"""The pipeline end to end against the real broker: windows in, exactly the expected alerts and
dead letters out, offsets committed at N, and a restart resumes the thresholds."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import numpy as np
import orjson
import pytest
from kafka import KafkaProducer

from detectors.cascade import CascadeDetector
from streamer.broker.admin import committed_offsets
from streamer.broker.daemon import build_pipeline
from streamer.calibrators import build_calibrator
from streamer.config import TandemConfig
from streamer.ingest.codec import JsonCodec, Limits
from tests.conftest import Broker, read_topic

N = 1200
ANOMALIES = (N, N + 1, N + 2)
"""Sent after the N normal windows are processed: warm-up is over whatever the partition order."""
BAD = {150: b"{oops", 450: b'{"key": "s1", "features": [1, 2, 3]}'}


@pytest.fixture
def detector(tiny_detector: CascadeDetector) -> CascadeDetector:
    return tiny_detector


def configure(
    broker: Broker,
    make_topic: Callable[..., str],
    prefetch: int = 2,
    client: str = "kafka-python",
) -> TandemConfig:
    group = f"tandem-it-{uuid.uuid4().hex[:8]}"
    return broker.config(
        kafka={
            "input_topic": make_topic(partitions=3),
            "alerts_topic": make_topic(partitions=3),
            "dead_letter_topic": make_topic(),
            "group_id": group,
            "client": client,
        },
        batch={"max_records": 200, "max_wait_ms": 200, "prefetch": prefetch},
        alerts={"mode": "windows"},  # one alert per flagged window: each is checked
        calibration={
            "method": "quantile",
            "quantile": 0.999,
            "window": 500,
            "warmup": 300,
            "refresh": 20,
            "per_key": True,
        },
    )


def produce_feed(broker: Broker, topic: str, first: int, last: int) -> None:
    """Windows ``first``..``last - 1`` over 6 keys (a key stays on one partition); the ANOMALIES
    are far off, the BAD ones malformed."""
    rng = np.random.default_rng(1)
    windows = rng.normal(0, 0.3, size=(N + len(ANOMALIES), 8)).astype(np.float32)
    windows[list(ANOMALIES)] += 25.0
    codec = JsonCodec(Limits(8))
    producer = KafkaProducer(acks="all", **broker.client_options())
    for i in range(first, last):
        key = f"s{i % 6}"
        value = BAD.get(i, codec.encode(key, 1_764_000_000_000 + i, windows[i]))
        producer.send(topic, key=key.encode(), value=value, headers=[("seq", str(i).encode())])
    producer.flush()
    producer.close()


def seq_of(record) -> int:  # type: ignore[no-untyped-def]
    return int(dict(record.headers)["seq"])


@pytest.mark.parametrize(
    ("prefetch", "client"),
    [(2, "kafka-python"), (0, "kafka-python"), (0, "librdkafka")],
    ids=["fetch-process", "inline", "librdkafka"],
)
def test_windows_in_alerts_and_dead_letters_out_offsets_committed(
    kafka_broker: Broker,
    make_topic: Callable[..., str],
    detector: CascadeDetector,
    prefetch: int,
    client: str,
) -> None:
    config = configure(kafka_broker, make_topic, prefetch, client)
    built = build_pipeline(config, detector, name="tiny")
    runner, source = built.runner, built.source
    reports = []
    total = N + len(ANOMALIES)
    for first, last in ((0, N), (N, total)):
        produce_feed(kafka_broker, config.kafka.input_topic, first, last)
        for _ in range(200):
            report = runner.step()
            if report:
                reports.append(report)
            if sum(r.records for r in reports) >= last:
                break
    source.close()
    processed = sum(r.records for r in reports)
    assert processed == total

    dead = read_topic(
        kafka_broker, config.kafka.dead_letter_topic, lambda got: len(got) >= len(BAD)
    )
    assert sorted(seq_of(r) for r in dead) == sorted(BAD)
    for record in dead:
        headers = dict(record.headers)
        assert record.value == BAD[seq_of(record)]
        assert headers["tandem.stage"] == b"decode"
        assert headers["tandem.source"].decode().startswith(config.kafka.input_topic + "/")
    reasons = {seq_of(r): dict(r.headers)["tandem.error"].decode() for r in dead}
    assert "not valid JSON" in reasons[150] and "has 3 values; the model expects 8" in reasons[450]

    alerted = sum(report.alerts for report in reports)
    records = read_topic(kafka_broker, config.kafka.alerts_topic, lambda got: len(got) >= alerted)
    alerts = [orjson.loads(r.value) for r in records]
    assert len(alerts) == alerted
    assert len(alerts) >= len(ANOMALIES)
    assert len({a["alert_id"] for a in alerts}) == len(alerts)
    assert all(a["score"] > a["threshold"] for a in alerts)
    flagged_keys = {(a["key"], a["event_ts"] - 1_764_000_000_000) for a in alerts}
    for i in ANOMALIES:
        assert (f"s{i % 6}", i) in flagged_keys, f"injected anomaly {i} alerted"
    assert len(alerts) <= len(ANOMALIES) + 6, "few false alarms on the normal windows"

    committed = committed_offsets(
        kafka_broker.client_options(), config.kafka.group_id, config.kafka.input_topic
    )
    assert sum(committed[p] for p in range(3)) == total

    fresh = build_calibrator(config.calibration, detector.held_out_scores)
    built = build_pipeline(config, detector, name="tiny")
    second, source2 = built.runner, built.source
    deadline = time.monotonic() + 30
    while not second.calibrator.keys and time.monotonic() < deadline:
        assert second.step() is None, "everything was committed: nothing to read again"
    source2.close()
    keys = [f"s{k}" for k in range(6)]
    assert sorted(second.calibrator.keys) == keys, "assignment restored every partition's keys"
    for key in [None, *keys]:
        assert second.calibrator.threshold(key) == runner.calibrator.threshold(key), (
            f"the restart resumes the threshold of {key or 'the global state'}"
        )
    # Not what a fresh start gives: the held-out scores' threshold, before any window.
    assert not np.isnan(second.calibrator.threshold())
    assert second.calibrator.threshold() != fresh.threshold()


def test_a_record_too_large_to_dead_letter_whole_is_cut_and_the_stream_goes_on(
    kafka_broker: Broker, make_topic: Callable[..., str], detector: CascadeDetector
) -> None:
    """A 1,048,400-byte record the broker accepts, plus tandem's reason headers, is more than
    the producer sends: it used to fail on every retry and halt the pipeline. Its value is cut
    to fit, and everything after it is scored and committed."""
    config = configure(kafka_broker, make_topic, prefetch=0)
    built = build_pipeline(config, detector, name="tiny")
    runner, source = built.runner, built.source
    codec, topic = JsonCodec(Limits(8)), config.kafka.input_topic
    producer = KafkaProducer(acks="all", **kafka_broker.client_options())
    producer.send(topic, key=b"s0", value=b"x" * 1_048_400)
    for i in range(1, 50):
        window = np.zeros(8, np.float32)
        producer.send(topic, key=b"s0", value=codec.encode("s0", 1_764_000_000_000 + i, window))
    producer.flush()
    producer.close()
    processed = 0
    for _ in range(200):
        report = runner.step()
        processed += report.records if report else 0
        if processed >= 50:
            break
    source.close()
    assert processed == 50
    (dead,) = read_topic(kafka_broker, config.kafka.dead_letter_topic, lambda got: len(got) >= 1)
    headers = dict(dead.headers)
    assert headers["tandem.truncated"] == b"value=1048400"
    assert headers["tandem.error"] and len(dead.value) > 1_000_000
    committed = committed_offsets(kafka_broker.client_options(), config.kafka.group_id, topic)
    assert sum(committed.values()) == 50
