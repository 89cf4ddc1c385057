"""The harness itself, against the real broker: keyed records through a consumer group with manual
commits lose nothing, duplicate nothing, and a second member resumes at the committed offsets."""

from __future__ import annotations

import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from tests.conftest import Broker

N_RECORDS = 10_000
N_PARTITIONS = 4


def produce_keyed(broker: Broker, topic: str) -> dict[int, int]:
    """Send N_RECORDS values ``0..N-1`` keyed over 37 entities; return records per partition."""
    producer = KafkaProducer(acks="all", linger_ms=10, **broker.client_options())
    futures = [
        producer.send(topic, key=f"entity-{i % 37}".encode(), value=str(i).encode())
        for i in range(N_RECORDS)
    ]
    producer.flush()
    producer.close()
    return dict(Counter(future.get(timeout=10).partition for future in futures))


def group_consumer(broker: Broker, topic: str, group_id: str) -> KafkaConsumer:
    return KafkaConsumer(
        topic,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=500,
        **broker.client_options(),
    )


def test_group_with_manual_commits_loses_nothing_and_resumes_at_committed_offsets(
    kafka_broker: Broker, make_topic: Callable[..., str]
) -> None:
    topic = make_topic(partitions=N_PARTITIONS)
    per_partition = produce_keyed(kafka_broker, topic)
    assert sorted(per_partition) == list(range(N_PARTITIONS)), "keys should spread over partitions"
    group_id = f"harness-{uuid.uuid4().hex[:8]}"
    partitions = [TopicPartition(topic, p) for p in range(N_PARTITIONS)]

    # First member: commit after every batch until about half is done, then read one more batch
    # and leave without committing it, as a process that dies between processing and commit.
    first = group_consumer(kafka_broker, topic, group_id)
    committed_values: list[int] = []
    deadline = time.monotonic() + 60
    while len(committed_values) < N_RECORDS // 2 and time.monotonic() < deadline:
        batch = first.poll(timeout_ms=500)
        committed_values += [int(r.value) for records in batch.values() for r in records]
        if batch:
            first.commit()
    uncommitted: list[int] = []
    while not uncommitted and time.monotonic() < deadline:
        batch = first.poll(timeout_ms=500)
        uncommitted = [int(r.value) for records in batch.values() for r in records]
    committed = {tp: first.committed(tp) or 0 for tp in partitions}
    first.close()
    assert len(committed_values) >= N_RECORDS // 2 and uncommitted
    assert sum(committed.values()) == len(committed_values)

    # Second member of the same group: starts exactly where the commits left off.
    second = group_consumer(kafka_broker, topic, group_id)
    first_offset: dict[int, int] = {}
    resumed: list[int] = []
    key_offsets: dict[bytes, list[int]] = defaultdict(list)
    deadline = time.monotonic() + 60
    while len(committed_values) + len(resumed) < N_RECORDS and time.monotonic() < deadline:
        for tp, records in second.poll(timeout_ms=500).items():
            first_offset.setdefault(tp.partition, records[0].offset)
            resumed += [int(r.value) for r in records]
            for r in records:
                key_offsets[r.key].append(int(r.value))
        if resumed:
            second.commit()
    end_offsets = second.end_offsets(partitions)
    positions = {tp: second.position(tp) for tp in partitions}
    second.close()

    for tp in partitions:
        if committed[tp] < end_offsets[tp]:
            assert first_offset[tp.partition] == committed[tp], f"partition {tp.partition}"
        else:
            assert tp.partition not in first_offset
        assert positions[tp] == end_offsets[tp]
    assert set(uncommitted) <= set(resumed), "the uncommitted batch must be delivered again"
    everything = committed_values + resumed
    assert len(everything) == N_RECORDS, "no record lost or duplicated"
    assert sorted(everything) == list(range(N_RECORDS))
    for values in key_offsets.values():
        assert values == sorted(values), "one entity's records stay in order on one partition"
