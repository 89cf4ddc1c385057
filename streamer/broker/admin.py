"""Talking to the cluster as an administrator: is it there, which version, make and drop topics.

The daemon, the demo, the tests and ``scripts/kafka.sh`` all ask "does the broker answer?" through
``probe_broker``, so there is one definition of ready: a metadata request answered.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import structlog
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError, SaslAuthenticationFailedError, TopicAlreadyExistsError

from streamer.client_config import kafka_python_options
from streamer.errors import (
    AuthenticationError,
    BrokerUnavailableError,
    StopRequestedError,
    TopicError,
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class BrokerInfo:
    """What a cluster said about itself in answer to a metadata request."""

    bootstrap: list[str]
    cluster_id: str | None
    controller_id: int | None
    brokers: list[str]
    api_version: str
    """Protocol level the client negotiated: ``"4.3"`` for an Apache Kafka 4.3 broker."""
    topic_count: int


NO_TIME_RETENTION = {"retention.ms": "-1"}
"""Topic configs for historical records: they keep their own (past) timestamps, which time-based
retention would delete at the broker's next retention check."""


@dataclass(frozen=True)
class TopicSpec:
    """A topic to create: its name, partition count and any topic-level configs (strings)."""

    name: str
    partitions: int = 1
    replication_factor: int = 1
    configs: Mapping[str, str] = field(default_factory=dict)


class _Refusals(logging.Handler):
    """The credential refusals kafka-python logs while it bootstraps.

    kafka-python 3.0 raises only "Unable to bootstrap" (a timeout) when the broker refuses the
    SASL credentials; the refusal itself (``SaslAuthenticationFailedError``) is an argument of
    the warning it logs for each failed bootstrap connection. Its ``kafka`` logger is held at
    WARNING or below (``streamer.logging``), so that warning always reaches this handler.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[SaslAuthenticationFailedError] = []

    def emit(self, record: logging.LogRecord) -> None:
        arguments = record.args if isinstance(record.args, tuple) else ()
        self.seen.extend(a for a in arguments if isinstance(a, SaslAuthenticationFailedError))


@contextmanager
def admin_client(client_options: Mapping[str, Any], timeout_s: float) -> Iterator[KafkaAdminClient]:
    """An admin client; ``BrokerUnavailableError`` if bootstrapping takes over ``timeout_s``,
    ``AuthenticationError`` if the broker refused the credentials meanwhile (not retriable:
    waiting longer cannot fix a password)."""
    timeout_ms = max(int(timeout_s * 1000), 1000)
    options = {
        **kafka_python_options(KafkaAdminClient, client_options),
        "request_timeout_ms": timeout_ms,
        "bootstrap_timeout_ms": timeout_ms,
    }
    refusals = _Refusals()
    kafka_log = logging.getLogger("kafka")
    kafka_log.addHandler(refusals)
    try:
        admin = KafkaAdminClient(**options)
    except KafkaError as error:
        servers = options.get("bootstrap_servers")
        if refusals.seen:
            raise AuthenticationError(
                f"the broker refused the credentials of [kafka] (sasl_plain_username"
                f" {options.get('sasl_plain_username')!r}, mechanism"
                f" {options.get('sasl_mechanism')}, at {servers}): {refusals.seen[0]}"
            ) from error
        raise BrokerUnavailableError(
            f"no broker answered at {servers} within {timeout_s:g}s: {error!r}"
        ) from error
    finally:
        kafka_log.removeHandler(refusals)
    try:
        yield admin
    finally:
        admin.close()


def probe_broker(client_options: Mapping[str, Any], timeout_s: float = 5.0) -> BrokerInfo:
    """Send one metadata request and describe the answer; ``BrokerUnavailableError`` if none."""
    with admin_client(client_options, timeout_s) as admin:
        try:
            cluster = admin.describe_cluster()
            topics = admin.list_topics()
            brokers = cluster.get("brokers", [])
            version = (
                admin.get_broker_version_data(brokers[0]["broker_id"]).broker_version_str
                if brokers
                else "unknown"
            )
        except KafkaError as error:
            raise BrokerUnavailableError(
                f"the broker did not answer a metadata request: {error!r}"
            ) from error
    return BrokerInfo(
        bootstrap=list(client_options.get("bootstrap_servers", [])),
        cluster_id=cluster.get("cluster_id"),
        controller_id=cluster.get("controller_id"),
        brokers=[f"{b['host']}:{b['port']}" for b in brokers],
        api_version=version,
        topic_count=len(topics),
    )


def wait_for_broker(
    client_options: Mapping[str, Any],
    timeout_s: float,
    first_backoff_s: float = 0.5,
    max_backoff_s: float = 10.0,
    stop: threading.Event | None = None,
    probe: Callable[[float], BrokerInfo] | None = None,
) -> BrokerInfo:
    """Probe until the broker answers, backing off exponentially and logging each miss.

    Raises ``BrokerUnavailableError`` once ``timeout_s`` has passed without an answer, and
    ``StopRequestedError`` as soon as ``stop`` is set (between probes of at most 2 s): a daemon
    told to stop while the broker is away must not sit out the whole wait. ``probe``: asks
    once within the seconds it is given (default: ``probe_broker`` with ``client_options``;
    librdkafka's is ``streamer.broker.rdkafka_admin.probe_broker``).
    """
    if probe is None:
        probe = partial(probe_broker, client_options)
    deadline = time.monotonic() + timeout_s
    backoff = first_backoff_s
    attempt = 1
    while True:
        if stop is not None and stop.is_set():
            raise StopRequestedError()
        remaining = deadline - time.monotonic()
        try:
            return probe(min(max(remaining, 0.5), 2.0))
        except BrokerUnavailableError as error:
            remaining = deadline - time.monotonic()
            pause = max(min(backoff, max_backoff_s, remaining), 0.0)
            log.warning(
                "broker_unreachable",
                attempt=attempt,
                retry_in_s=round(pause, 2) if remaining > 0 else None,
                error=str(error),
            )
            if remaining <= 0:
                raise
            if stop is None:
                time.sleep(pause)
            elif stop.wait(pause):
                raise StopRequestedError() from None
            backoff *= 2
            attempt += 1


def create_topics(
    client_options: Mapping[str, Any], specs: Sequence[TopicSpec], timeout_s: float = 30.0
) -> list[str]:
    """Create the topics that do not exist yet and wait until each created one has a leader for
    every partition.

    The topics are listed first and only the missing ones are asked for: a locked-down cluster
    grants a daemon DESCRIBE on its topics but not CREATE, so asking to create one that exists
    would fail there. Returns the names that were created (existing ones are left as they are).
    """
    created: list[str] = []
    with admin_client(client_options, timeout_s) as admin:
        try:
            existing = set(admin.list_topics())
        except KafkaError as error:
            raise TopicError(f"could not list the topics: {error!r}") from error
        missing = [spec for spec in specs if spec.name not in existing]
        for spec in missing:
            request = {
                spec.name: {
                    "num_partitions": spec.partitions,
                    "replication_factor": spec.replication_factor,
                    "configs": dict(spec.configs),
                }
            }
            try:
                admin.create_topics(request, timeout_ms=int(timeout_s * 1000))
                created.append(spec.name)
            except TopicAlreadyExistsError:
                continue  # created meanwhile by someone else (another daemon of the group)
            except KafkaError as error:
                raise TopicError(f"could not create topic {spec.name!r}: {error!r}") from error
        try:
            admin.wait_for_topics([spec.name for spec in missing], timeout_ms=int(timeout_s * 1000))
        except KafkaError as error:
            raise TopicError(f"topics not ready within {timeout_s:g}s: {error!r}") from error
    if created:
        log.info("topics_created", topics=created)
    return created


def topic_exists(admin: KafkaAdminClient, name: str) -> bool:
    """Whether the cluster has topic ``name`` with partitions, as far as this client may see: one
    metadata request for that topic only (never one that would create it)."""
    described = admin.describe_topics([name])
    return any(
        topic.get("name") == name and topic.get("error_code") == 0 and topic.get("partitions")
        for topic in described
    )


def delete_topics(
    client_options: Mapping[str, Any], names: Sequence[str], timeout_s: float = 30.0
) -> None:
    """Delete topics; names that do not exist are ignored."""
    if not names:
        return
    with admin_client(client_options, timeout_s) as admin:
        existing = set(admin.list_topics())
        doomed = [name for name in names if name in existing]
        if doomed:
            admin.delete_topics(doomed, timeout_ms=int(timeout_s * 1000))
            log.info("topics_deleted", topics=doomed)


def committed_offsets(
    client_options: Mapping[str, Any], group: str, topic: str, timeout_s: float = 10.0
) -> dict[int, int]:
    """The offset ``group`` has committed per partition of ``topic`` (partitions it has not
    committed are missing)."""
    with admin_client(client_options, timeout_s) as admin:
        offsets = admin.list_group_offsets(group).get(group, {})
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


def read_to_end(
    client_options: Mapping[str, Any], topic: str, timeout_s: float = 30.0
) -> Iterator[Any]:
    """Every record now in ``topic`` (all partitions, up to the ends they had when reading
    began), oldest first per partition, as kafka-python ``ConsumerRecord``s; committed records
    only (aborted transactions skipped). Raises ``TopicError`` if the end is not reached within
    ``timeout_s``."""
    consumer = KafkaConsumer(
        **kafka_python_options(
            KafkaConsumer,
            client_options,
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
    )
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            return
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(p) < ends[p] for p in partitions):
            if time.monotonic() > deadline:
                raise TopicError(f"could not read {topic} to its end in {timeout_s:g} s")
            for records in consumer.poll(timeout_ms=500).values():
                yield from records
    finally:
        consumer.close()
