"""Exactly-once mode (``[kafka].transactional``) against the real broker: aborted output is
invisible to read-committed readers, and the pipeline commits alerts and offsets together."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import orjson
import pytest
from kafka import KafkaProducer

from detectors.cascade import CascadeDetector
from streamer.broker.daemon import build_pipeline
from streamer.broker.transactions import Transaction
from streamer.config import KafkaConfig
from tests.conftest import Broker, read_topic
from tests.integration.daemons import committed, feed, key_of, produce


def test_aborted_records_stay_invisible_and_committed_ones_appear_once(
    kafka_broker: Broker, make_topic: Callable[..., str]
) -> None:
    topic = make_topic()
    kafka = KafkaConfig(bootstrap=kafka_broker.bootstrap, transactional=True)
    producer = KafkaProducer(
        transactional_id=f"test-{uuid.uuid4().hex[:8]}", **kafka.client_options()
    )
    transaction = Transaction(producer)
    transaction.ensure_open()
    producer.send(topic, b"aborted")
    producer.flush()
    transaction.abort()
    transaction.ensure_open()
    producer.send(topic, b"committed")
    transaction.commit({}, None)
    producer.close()
    everything = read_topic(kafka_broker, topic, lambda got: len(got) >= 2)
    assert [r.value for r in everything] == [b"aborted", b"committed"]
    visible = read_topic(
        kafka_broker, topic, lambda got: len(got) >= 1, isolation_level="read_committed"
    )
    assert [r.value for r in visible] == [b"committed"]


@pytest.mark.parametrize("client", ["kafka-python", "librdkafka"])
def test_the_transactional_pipeline_commits_alerts_with_offsets(
    kafka_broker: Broker,
    make_topic: Callable[..., str],
    tiny_detector: CascadeDetector,
    client: str,
) -> None:
    config = kafka_broker.config(
        kafka={
            "input_topic": make_topic(partitions=2),
            "alerts_topic": make_topic(partitions=2),
            "dead_letter_topic": make_topic(),
            "group_id": f"txn-{uuid.uuid4().hex[:8]}",
            "transactional": True,
            "client": client,
        },
        batch={"max_records": 128, "max_wait_ms": 100},
        calibration={"method": "spot", "target_rate": 1e-3, "window": 2000, "warmup": 600},
    )
    kafka = config.kafka
    warm, total = 1600, 1610
    anomalies = list(range(warm, total, 3))
    windows = feed(total, anomalies=anomalies)
    pipeline = build_pipeline(config, tiny_detector, name="tiny")
    reports = []
    try:
        for first, last in ((0, warm), (warm, total)):
            produce(kafka_broker.bootstrap, kafka.input_topic, windows, first, last)
            deadline = time.monotonic() + 60
            while sum(r.records for r in reports) < last and time.monotonic() < deadline:
                report = pipeline.runner.step()
                if report is not None:
                    reports.append(report)
    finally:
        pipeline.close()
    assert (
        sum(committed(kafka_broker.bootstrap, kafka.group_id, kafka.input_topic).values()) == total
    )
    alerted = sum(r.alerts for r in reports)
    records = read_topic(
        kafka_broker,
        kafka.alerts_topic,
        lambda got: len(got) >= alerted,
        isolation_level="read_committed",
    )
    alerts = [orjson.loads(r.value) for r in records]
    assert len(alerts) == alerted
    flagged = {(a["key"], a["event_ts"]) for a in alerts}
    assert {(key_of(i), i) for i in anomalies} <= flagged
