"""The alerts topic read back, on either client, for ``tandem alerts``.

A viewer belongs to no consumer group and commits nothing, so it leaves nothing behind on the
broker: kafka-python subscribes without a group; librdkafka, which needs a ``group.id`` even so,
assigns itself every partition of the topic and never joins the group it names. Both read
``read_committed``, so alerts of aborted transactions never show, and both log
``alerts_following`` once they hold the topic's partitions (the demo waits for it before it
replays).
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import Any

import orjson
import structlog
from kafka import KafkaConsumer

from streamer.client_config import kafka_python_options
from streamer.config import KafkaConfig

log = structlog.get_logger(__name__)

POLL_S = 0.5
"""How long one poll waits for records; the idle limit is checked between polls."""
TOPIC_RETRY_S = 1.0
"""How often librdkafka's viewer asks again for a topic that does not exist yet."""


def read_alerts(
    kafka: KafkaConfig, from_beginning: bool, idle_s: float | None
) -> Generator[dict[str, Any]]:
    """Alert records as they arrive (from the oldest with ``from_beginning``, else from now),
    parsed; ends after ``idle_s`` seconds without one (never when None). Closing the generator
    closes the client."""
    values = _rdkafka_values if kafka.client == "librdkafka" else _kafka_python_values
    stream = values(kafka, from_beginning)
    try:
        last = time.monotonic()
        while idle_s is None or time.monotonic() - last < idle_s:
            for value in next(stream):
                last = time.monotonic()
                yield orjson.loads(value)
    finally:
        stream.close()


def _kafka_python_values(kafka: KafkaConfig, from_beginning: bool) -> Generator[list[bytes]]:
    """Each poll's record values (possibly none), through kafka-python."""
    consumer = KafkaConsumer(
        kafka.alerts_topic,
        **kafka_python_options(
            KafkaConsumer,
            kafka.client_options(),
            group_id=None,  # a viewer commits nothing: no consumer group to leave behind
            enable_auto_commit=False,
            auto_offset_reset="earliest" if from_beginning else "latest",
            isolation_level="read_committed",
        ),
    )
    try:
        following = False
        while True:
            batches = consumer.poll(timeout_ms=int(POLL_S * 1000))
            if not following and consumer.assignment():
                following = True
                for partition in consumer.assignment():  # where it reads from, settled now
                    consumer.position(partition)
                log.info("alerts_following", partitions=len(consumer.assignment()))
            yield [record.value for records in batches.values() for record in records]
    finally:
        consumer.close()


def _rdkafka_values(kafka: KafkaConfig, from_beginning: bool) -> Generator[list[bytes]]:
    """Each poll's record values (possibly none), through librdkafka: every partition of the
    topic assigned once the topic exists, at its start or its end."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    from streamer.broker.librdkafka import assigning_consumer, end_offset, topic_partitions

    topic, wait_s = kafka.alerts_topic, kafka.request_timeout_ms / 1000
    consumer = assigning_consumer(kafka, "viewer")
    try:
        partitions = topic_partitions(consumer, topic, POLL_S * 4)
        while not partitions:
            yield []
            time.sleep(TOPIC_RETRY_S)
            partitions = topic_partitions(consumer, topic, POLL_S * 4)
        # Not from the beginning: each partition's end now, so "following" means from here.
        consumer.assign(
            [
                TopicPartition(
                    topic,
                    p,
                    OFFSET_BEGINNING if from_beginning else end_offset(consumer, topic, p, wait_s),
                )
                for p in partitions
            ]
        )
        log.info("alerts_following", partitions=len(partitions))
        while True:
            messages = consumer.consume(num_messages=1000, timeout=POLL_S)
            yield [value for m in messages if m.error() is None and (value := m.value())]
    finally:
        consumer.close()
