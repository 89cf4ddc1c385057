"""Topic administration with ``[kafka].client``'s admin client: the broker probed, a topic asked
after, missing topics created. kafka-python's are in ``streamer.broker.admin``, librdkafka's in
``streamer.broker.rdkafka_admin`` (imported only when configured: confluent-kafka is an extra)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial

from streamer.broker import admin
from streamer.broker.admin import BrokerInfo, TopicSpec
from streamer.config import KafkaConfig


def create_topics(kafka: KafkaConfig, specs: Sequence[TopicSpec]) -> list[str]:
    """Create those of ``specs`` that are missing; the names created."""
    if kafka.client == "librdkafka":
        from streamer.broker import rdkafka_admin

        return rdkafka_admin.create_topics(kafka, specs)
    return admin.create_topics(kafka.client_options(), specs)


def prober(kafka: KafkaConfig) -> Callable[[float], BrokerInfo]:
    """One probe of the broker within the seconds it is given (``admin.wait_for_broker``)."""
    if kafka.client == "librdkafka":
        from streamer.broker import rdkafka_admin

        return partial(rdkafka_admin.probe_broker, kafka)
    return partial(admin.probe_broker, kafka.client_options())


@contextmanager
def topic_checker(kafka: KafkaConfig) -> Iterator[Callable[[str], bool]]:
    """Whether a topic exists: kafka-python's ``KafkaError`` or ``BrokerUnavailableError``
    when the broker does not answer."""
    if kafka.client == "librdkafka":
        from streamer.broker.rdkafka_admin import TopicChecker

        yield TopicChecker(kafka).exists
        return
    with admin.admin_client(kafka.client_options(), timeout_s=10.0) as client:
        yield partial(admin.topic_exists, client)
