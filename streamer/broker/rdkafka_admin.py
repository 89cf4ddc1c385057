"""What the daemon asks of the cluster about its topics, on librdkafka: whether the broker
answers, whether the input topic exists, and the output topics created when missing. With these,
a daemon on librdkafka opens no kafka-python connection, so a cluster only librdkafka's own
mechanisms reach (OAUTHBEARER with OIDC, say) serves it whole. The kafka-python versions, with
the reasoning they share, are in ``streamer.broker.admin``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from streamer.broker.admin import BrokerInfo, TopicSpec
from streamer.broker.librdkafka import log_error, rdkafka_options, topic_partitions
from streamer.config import KafkaConfig
from streamer.errors import AuthenticationError, BrokerUnavailableError, TopicError

log = structlog.get_logger(__name__)

LEADER_POLL_S = 0.2
"""How often a created topic's partitions are asked for their leaders."""


def probe_broker(kafka: KafkaConfig, timeout_s: float = 5.0) -> BrokerInfo:
    """One metadata request, described; ``BrokerUnavailableError`` if it is not answered, and
    ``AuthenticationError`` if the broker refused the credentials (librdkafka tells the two
    apart, so a refusal is never waited out as an absent broker). librdkafka does not tell the
    broker's version: ``api_version`` says so."""
    refused: list[KafkaError] = []

    def noted(error: KafkaError) -> None:
        if error.code() == KafkaError._AUTHENTICATION:
            refused.append(error)
        else:
            log_error(error)

    settings: dict[str, Any] = {**rdkafka_options(kafka), "error_cb": noted}
    admin = AdminClient(settings)
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as error:
        admin.poll(0.1)  # serves the error callbacks waiting, a refusal among them
        if refused:
            raise AuthenticationError(
                f"the broker refused the credentials of [kafka] (sasl_plain_username "
                f"{kafka.sasl_plain_username!r}, mechanism {kafka.sasl_mechanism}): "
                f"{refused[0].str()}"
            ) from None
        raise BrokerUnavailableError(
            f"the broker did not answer a metadata request: {error.args[0].str()}"
        ) from error
    return BrokerInfo(
        bootstrap=list(kafka.bootstrap_servers),
        cluster_id=metadata.cluster_id,
        controller_id=metadata.controller_id,
        brokers=[f"{b.host}:{b.port}" for b in metadata.brokers.values()],
        api_version="unknown (librdkafka)",
        topic_count=len(metadata.topics),
    )


class TopicChecker:
    """Asks whether a topic exists, one metadata request for that topic only (librdkafka's
    admin client never creates a topic by asking about it)."""

    def __init__(self, kafka: KafkaConfig, timeout_s: float = 10.0) -> None:
        self.admin, self.timeout_s = AdminClient(rdkafka_options(kafka)), timeout_s

    def exists(self, name: str) -> bool:
        """Whether ``name`` exists with partitions; ``BrokerUnavailableError`` when the
        broker does not answer."""
        try:
            return bool(topic_partitions(self.admin, name, self.timeout_s))
        except KafkaException as error:
            raise BrokerUnavailableError(
                f"the broker did not answer a metadata request: {error.args[0].str()}"
            ) from error


def create_topics(
    kafka: KafkaConfig, specs: Sequence[TopicSpec], timeout_s: float = 30.0
) -> list[str]:
    """Create the topics that do not exist yet (listed first: a cluster may grant DESCRIBE but
    not CREATE) and wait until each created one has a leader for every partition. Returns the
    names created; ``TopicError`` on a refusal or a timeout."""
    admin = AdminClient(rdkafka_options(kafka))
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as error:
        raise TopicError(f"could not list the topics: {error.args[0].str()}") from error
    missing = [spec for spec in specs if spec.name not in existing]
    created: list[str] = []
    if missing:
        answers = admin.create_topics(
            [
                NewTopic(
                    spec.name,
                    num_partitions=spec.partitions,
                    replication_factor=spec.replication_factor,
                    config=dict(spec.configs),
                )
                for spec in missing
            ],
            operation_timeout=timeout_s,
            request_timeout=timeout_s,
        )
        for name, answer in answers.items():
            try:
                answer.result()
                created.append(name)
            except KafkaException as error:
                if error.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue  # created meanwhile by someone else (another daemon of the group)
                raise TopicError(
                    f"could not create topic {name!r}: {error.args[0].str()}"
                ) from error
        _wait_for_leaders(admin, [spec.name for spec in missing], timeout_s)
    if created:
        log.info("topics_created", topics=created)
    return created


def _wait_for_leaders(admin: Any, names: Sequence[str], timeout_s: float) -> None:
    """Until every partition of each of ``names`` has a leader; ``TopicError`` after
    ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    waiting = list(names)
    while waiting:
        try:
            metadata = admin.list_topics(timeout=max(deadline - time.monotonic(), 0.5))
            topics = metadata.topics
            waiting = [
                name
                for name in waiting
                if name not in topics
                or topics[name].error is not None
                or not topics[name].partitions
                or any(p.leader < 0 for p in topics[name].partitions.values())
            ]
        except KafkaException:
            pass  # asked again below, until the deadline
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise TopicError(f"topics not ready within {timeout_s:g}s: {waiting}")
        time.sleep(LEADER_POLL_S)
