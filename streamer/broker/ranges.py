"""A topic's records read by assignment, without a consumer group, on ``[kafka].client``: the
range a backtest or a retraining reads (``open_range``) and a whole topic read to its end
(``read_to_end``: the checkpoints on the state topic). kafka-python's reader is
``streamer.broker.range_source``, librdkafka's ``streamer.broker.rdkafka_range``; librdkafka's is
imported only when asked for (it is an optional extra)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from streamer.broker import admin
from streamer.broker.range_source import RangeBound, TopicRangeSource
from streamer.config import KafkaConfig
from streamer.errors import TopicError

WHOLE_TOPIC_BATCH = 10_000
"""Records per poll when a whole topic is read to its end."""


def open_range(
    kafka: KafkaConfig, topic: str, start: RangeBound, end: RangeBound, batch_size: int
) -> Any:
    """A finite source over ``topic`` from ``start`` to ``end`` (``streamer.backtest.run.
    FiniteSource``), read with ``[kafka].client``."""
    if kafka.client == "librdkafka":
        from streamer.broker.rdkafka_range import RdkafkaRangeSource

        return RdkafkaRangeSource(kafka, topic, start, end, batch_size)
    return TopicRangeSource(kafka.client_options(), topic, start, end, batch_size)


def read_to_end(kafka: KafkaConfig, topic: str, timeout_s: float = 30.0) -> Iterator[Any]:
    """Every committed record now in ``topic`` (up to the ends it had when reading began),
    oldest first per partition, each with ``key``, ``value`` and ``headers``; nothing when the
    topic does not exist. Raises ``TopicError`` when the end is not reached (kafka-python:
    within ``timeout_s``; librdkafka: no record for ``timeout_s``)."""
    if kafka.client != "librdkafka":
        yield from admin.read_to_end(kafka.client_options(), topic, timeout_s)
        return
    from streamer.broker.rdkafka_range import RdkafkaRangeSource

    try:
        source = RdkafkaRangeSource(
            kafka,
            topic,
            RangeBound(),
            RangeBound(),
            WHOLE_TOPIC_BATCH,
            timeout_s=timeout_s,
            settle=False,
        )
    except TopicError:
        return  # no such topic: nothing in it
    try:
        while records := source.poll():
            yield from records
    finally:
        source.close()
