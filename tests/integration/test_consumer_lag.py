"""The consumer lag against the real broker, with and without the fetch process: the records
behind the end counted from the first not committed. The consumer's position runs ahead of the
commits (the fetch process polls batches ahead), so a lag taken from it read 0 with every record
still uncommitted."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from kafka import KafkaProducer

from streamer.broker.prefetch import PrefetchingSource
from streamer.broker.sources import KafkaSource
from streamer.config import LogConfig
from streamer.records import SourceRecord
from tests.conftest import Broker

TOTAL = 300
POLL_DEADLINE_S = 60.0
"""Joining the group and fetching 300 records, on a loaded 2-core machine."""


@pytest.mark.parametrize("prefetch", [2, 0], ids=["fetch-process", "inline"])
def test_the_lag_counts_every_record_not_yet_committed(
    kafka_broker: Broker, make_topic: Callable[..., str], prefetch: int
) -> None:
    topic = make_topic(partitions=1)
    producer = KafkaProducer(acks="all", **kafka_broker.client_options())
    for offset in range(TOTAL):
        producer.send(topic, value=str(offset).encode())
    producer.flush()
    producer.close()
    config = kafka_broker.config(
        kafka={"input_topic": topic, "group_id": f"lag-{uuid.uuid4().hex[:8]}"},
        batch={"max_records": 100, "max_wait_ms": 100, "prefetch": prefetch},
    )
    source: PrefetchingSource | KafkaSource = (
        PrefetchingSource(config.kafka, config.batch, LogConfig(level="warning"))
        if prefetch
        else KafkaSource(config.kafka, config.batch)
    )
    try:
        got: list[SourceRecord] = []
        deadline = time.monotonic() + POLL_DEADLINE_S
        while len(got) < TOTAL:
            assert time.monotonic() < deadline, f"{len(got)} records after {POLL_DEADLINE_S} s"
            got.extend(source.poll())
        assert source.lag() == {(topic, 0): TOTAL}, "all fetched, none committed: all behind"
        source.commit(got[:100])
        assert source.lag() == {(topic, 0): TOTAL - 100}
        source.commit(got)
        assert source.lag() == {(topic, 0): 0}
    finally:
        source.close()
