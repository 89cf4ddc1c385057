"""The sinks' producer: the caching partitioner places every key where kafka-python's default
partitioner (and so the Java client) would."""

from __future__ import annotations

import pytest
from kafka.partitioner.default import DefaultPartitioner

from streamer.broker.sinks import CachingPartitioner


class Cluster:
    """The two ``ClusterMetadata`` calls a partitioner makes, for one topic."""

    def __init__(self, partitions: int) -> None:
        self.partitions = set(range(partitions))

    def topics(self) -> set[str]:
        return {"alerts"}

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return self.partitions if topic == "alerts" else None

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return self.partitions


@pytest.mark.parametrize("partitions", [1, 3, 4, 12])
def test_keys_land_where_the_default_partitioner_puts_them(partitions: int) -> None:
    cluster, default, caching = Cluster(partitions), DefaultPartitioner(), CachingPartitioner()
    keys = [f"sensor-{i}".encode() for i in range(500)] + [b"", "Zürich".encode(), bytes(range(7))]
    for _ in range(2):  # the second pass answers from the cache
        for key in keys:
            expected = default.partition("alerts", key, key, None, None, cluster)
            assert caching.partition("alerts", key, key, None, None, cluster) == expected
    assert len(caching.hashes) == len(keys)


def test_the_cache_is_bounded_and_an_unknown_topic_is_refused() -> None:
    caching = CachingPartitioner()
    caching.MAX_KEYS = 10
    for i in range(25):
        caching.partition("alerts", None, str(i).encode(), None, None, Cluster(4))
    assert len(caching.hashes) <= 10
    with pytest.raises(ValueError, match="not found"):
        caching.partition("elsewhere", None, b"k", None, None, Cluster(4))
    assert caching.partition("alerts", None, None, None, None, Cluster(4)) in range(4)
