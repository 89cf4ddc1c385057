"""The sinks' producer: the caching partitioner places every key where kafka-python's default
partitioner (and so the Java client) would; dead letters too large to send are cut to fit."""

from __future__ import annotations

import pytest
from kafka.partitioner.default import DefaultPartitioner

from streamer.broker.sinks import (
    FRAMING_BYTES,
    CachingPartitioner,
    Fitted,
    fit_dead_letter,
)
from streamer.records import DeadLetter, SourceRecord


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


LIMIT = 1_048_576


def sent_bytes(fitted: Fitted) -> int:
    key, value, headers = fitted
    return len(key or b"") + len(value or b"") + sum(len(n) + len(v) + 8 for n, v in headers)


def letter(key: bytes, value: bytes, headers: tuple[tuple[str, bytes], ...] = ()) -> DeadLetter:
    record = SourceRecord("in", 0, 7, key, value, 0, headers)
    return DeadLetter(record, "not JSON: expected a value at byte 0")


def test_a_dead_letter_that_fits_is_sent_as_it_came() -> None:
    small = letter(b"sensor-1", b"{bad", (("seq", b"1"),))
    assert fit_dead_letter(small, LIMIT) == (b"sensor-1", b"{bad", small.headers())


def test_a_record_the_broker_took_is_cut_to_fit_with_its_reason_headers() -> None:
    """A 1,048,400-byte record fits the broker, not the producer once the reason is added: it
    failed on every retry and halted the pipeline. Its value is cut; the reason stays."""
    big = letter(b"sensor-1", b"x" * 1_048_400, (("seq", b"1"),))
    key, value, headers = fitted = fit_dead_letter(big, LIMIT)
    assert sent_bytes(fitted) <= LIMIT - FRAMING_BYTES
    assert key == b"sensor-1" and value is not None and big.record.value is not None
    assert big.record.value.startswith(value) and len(value) > 1_000_000
    named = dict(headers)
    assert named["tandem.error"] == big.reason.encode() and named["seq"] == b"1"
    assert named["tandem.truncated"] == b"value=1048400"


def test_a_key_too_large_to_send_is_cut_too() -> None:
    huge = letter(b"k" * 2_000_000, b"{}", (("seq", b"1"),))
    key, value, headers = fitted = fit_dead_letter(huge, LIMIT)
    assert sent_bytes(fitted) <= LIMIT - FRAMING_BYTES
    assert value == b"" and key is not None and len(key) > 1_000_000
    assert dict(headers)["tandem.truncated"] == b"value=2,headers=1,key=2000000"
    assert "seq" not in dict(headers) and "tandem.source" in dict(headers)
