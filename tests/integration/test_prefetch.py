"""The prefetching source against the real broker: its fetch process polls ahead, and still every
record comes once and in order, commits land, rewinds re-serve, rebalances reach the listener on
the daemon's thread, and neither process outlives the other."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Collection
from pathlib import Path

import pytest
from kafka import KafkaProducer

from streamer.broker import prefetch
from streamer.broker.admin import committed_offsets
from streamer.broker.prefetch import PrefetchingSource
from streamer.config import LogConfig, TandemConfig
from streamer.errors import FetchProcessError
from streamer.records import Partition, SourceRecord
from tests.conftest import Broker

TIMEOUT_S = 60.0


def configure(
    broker: Broker, topic: str, max_records: int = 64, session_timeout_ms: int = 45_000
) -> TandemConfig:
    kafka = {"input_topic": topic, "group_id": f"prefetch-{uuid.uuid4().hex[:8]}"}
    return broker.config(
        kafka={**kafka, "session_timeout_ms": session_timeout_ms},
        batch={"max_records": max_records, "max_wait_ms": 100, "prefetch": 2},
    )


def produce(broker: Broker, topic: str, count: int, partitions: int) -> None:
    producer = KafkaProducer(acks="all", **broker.client_options())
    for i in range(count):
        producer.send(topic, value=str(i).encode(), partition=i % partitions)
    producer.flush()
    producer.close()


def open_source(config: TandemConfig, listener: object = None) -> PrefetchingSource:
    source = PrefetchingSource(config.kafka, config.batch, LogConfig(level="warning"))
    source.listener = listener  # type: ignore[assignment]
    return source


def poll_until(
    source: PrefetchingSource, enough: Callable[[list[SourceRecord]], bool]
) -> list[SourceRecord]:
    got: list[SourceRecord] = []
    deadline = time.monotonic() + TIMEOUT_S
    while not enough(got):
        assert time.monotonic() < deadline, f"{len(got)} records after {TIMEOUT_S}s"
        got.extend(source.poll())
    return got


def by_partition(records: list[SourceRecord]) -> dict[int, list[int]]:
    offsets: dict[int, list[int]] = {}
    for record in records:
        offsets.setdefault(record.partition, []).append(record.offset)
    return offsets


def test_every_record_comes_once_in_order_and_commits_land(
    kafka_broker: Broker, make_topic: Callable[..., str]
) -> None:
    topic = make_topic(partitions=3)
    produce(kafka_broker, topic, 900, partitions=3)
    config = configure(kafka_broker, topic)
    source = open_source(config)
    try:
        got: list[SourceRecord] = []
        deadline = time.monotonic() + TIMEOUT_S
        while len(got) < 900 and time.monotonic() < deadline:
            batch = source.poll()
            assert len(batch) <= 64
            source.commit(batch)
            got.extend(batch)
        assert by_partition(got) == {p: list(range(300)) for p in range(3)}
        assert all(
            r.topic == topic and r.value == str(3 * r.offset + r.partition).encode() for r in got
        )
        assert set(source.lag()) == {(topic, p) for p in range(3)}
    finally:
        source.close()
    assert source.process.returncode == 0
    committed = committed_offsets(kafka_broker.client_options(), config.kafka.group_id, topic)
    assert committed == {0: 300, 1: 300, 2: 300}, "the last commits land by the time close returns"


def test_a_rewind_serves_the_batch_again_and_refetches_what_was_fetched_ahead(
    kafka_broker: Broker, make_topic: Callable[..., str]
) -> None:
    topic = make_topic(partitions=2)
    produce(kafka_broker, topic, 1000, partitions=2)
    source = open_source(configure(kafka_broker, topic, max_records=50))
    try:
        first = poll_until(source, lambda got: len(got) > 0)
        failed = poll_until(source, lambda got: len(got) > 0)
        time.sleep(1.0)  # the fetch process has fetched the next batches ahead by now
        source.rewind(failed)
        rest = poll_until(source, lambda got: len(first) + len(got) >= 1000)
    finally:
        source.close()
    assert set(failed) <= set(rest), "the failed batch comes again"
    assert by_partition(first + rest) == {0: list(range(500)), 1: list(range(500))}, (
        "nothing fetched ahead of the rewind is lost or served twice"
    )


class Recorder:
    """A listener that notes each call and the thread it came on."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[Partition], bool]] = []

    def partitions_revoked(self, partitions: Collection[Partition]) -> None:
        self.calls.append(("revoked", list(partitions), _on_main_thread()))

    def partitions_assigned(self, partitions: Collection[Partition]) -> None:
        self.calls.append(("assigned", list(partitions), _on_main_thread()))


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def test_rebalances_reach_the_listener_on_the_daemons_thread(
    kafka_broker: Broker, make_topic: Callable[..., str]
) -> None:
    topic = make_topic(partitions=2)
    config = configure(kafka_broker, topic)
    first, second = Recorder(), Recorder()
    one = open_source(config, first)
    stop = threading.Event()

    def other_daemon() -> None:  # as a second daemon would, polling on its own
        two = open_source(config, second)
        try:
            while not stop.is_set():
                two.poll()
        finally:
            two.close()

    other = threading.Thread(target=other_daemon, name="other-daemon")
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not any(call[0] == "assigned" and len(call[1]) == 2 for call in first.calls):
            assert time.monotonic() < deadline, first.calls
            one.poll()
        other.start()
        while not (
            first.calls[-1][0] == "assigned"
            and len(first.calls[-1][1]) == 1
            and second.calls
            and second.calls[-1][0] == "assigned"
            and len(second.calls[-1][1]) == 1
        ):
            assert time.monotonic() < deadline, (first.calls, second.calls)
            one.poll()
    finally:
        stop.set()
        if other.is_alive():
            other.join()
        one.close()
    assert ("revoked", [(topic, 0), (topic, 1)], True) in first.calls, (
        "the revocation came to the first daemon's listener, on its thread"
    )
    assert {p for call in (first.calls[-1], second.calls[-1]) for p in call[1]} == {
        (topic, 0),
        (topic, 1),
    }
    assert all(on_main for _, _, on_main in first.calls)


def test_a_dead_fetch_process_is_restarted_and_one_that_keeps_dying_stops_the_daemon(
    kafka_broker: Broker, make_topic: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed, the fetch process is replaced: its partitions are revoked for the listener (which
    saves their state), the new one is assigned them and serves from the last commit. Killed
    more than ``MAX_RESTARTS`` times in ``RESTART_PERIOD_S``, it stops the daemon."""
    monkeypatch.setattr(prefetch, "MAX_RESTARTS", 2)
    topic = make_topic(partitions=2)
    produce(kafka_broker, topic, 200, partitions=2)
    listener = Recorder()
    # A killed fetch process's membership lapses after the session timeout, and only then does
    # its successor get the partitions: 10 s (as the kill -9 tests) instead of 45 s per kill.
    config = configure(kafka_broker, topic, session_timeout_ms=10_000)
    source = open_source(config, listener)
    try:
        first = poll_until(source, lambda got: len(got) >= 64)
        source.commit(first[:10])
        committed = {(r.topic, r.partition): r.offset + 1 for r in first[:10]}
        group, options = config.kafka.group_id, kafka_broker.client_options()
        deadline = time.monotonic() + TIMEOUT_S
        while {
            (topic, p): o for p, o in committed_offsets(options, group, topic).items()
        } != committed:
            assert time.monotonic() < deadline, "the commit did not land"
            time.sleep(0.1)
        for restarts in (1, 2):
            source.process.kill()
            served: list[
                SourceRecord
            ] = []  # by the new process (the old one's sent are read first)
            deadline = time.monotonic() + TIMEOUT_S
            while source.restarted < restarts or len({r.partition for r in served}) < 2:
                assert time.monotonic() < deadline, f"{len(served)} records after {TIMEOUT_S}s"
                batch = source.poll()
                served += batch if source.restarted == restarts else []
            calls = [call[:2] for call in listener.calls if call[1]]
            lost = calls.index(("revoked", [(topic, 0), (topic, 1)]), len(calls) - 3)
            assert calls[lost + 1 :] == [("assigned", [(topic, 0), (topic, 1)])]
            starts = {(r.topic, r.partition): r.offset for r in reversed(served)}
            assert starts == {p: committed.get(p, 0) for p in starts}, "from the last commit"
        source.process.kill()
        deadline = time.monotonic() + TIMEOUT_S
        with pytest.raises(FetchProcessError, match="2 restarts in"):
            while time.monotonic() < deadline:
                source.poll()
    finally:
        source.close()


ORPHAN = """
import os, sys, time
from streamer.config import BatchConfig, KafkaConfig, LogConfig
from streamer.broker import prefetch
from streamer.broker.prefetch import PrefetchingSource
source = PrefetchingSource(
    KafkaConfig(bootstrap=sys.argv[1], input_topic=sys.argv[2], group_id=sys.argv[3]),
    BatchConfig(max_records=10, max_wait_ms=100),
    LogConfig(level="warning"),
)
print("PID", source.process.pid, flush=True)
time.sleep(600)
"""


def test_the_fetch_process_exits_when_the_daemon_is_killed(
    kafka_broker: Broker, make_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = make_topic()
    daemon = subprocess.Popen(
        [sys.executable, "-c", ORPHAN, kafka_broker.bootstrap, topic, f"o-{uuid.uuid4().hex[:6]}"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert daemon.stdout is not None
    line = ""
    while not line.startswith("PID "):
        line = daemon.stdout.readline()
        assert line, "the daemon exited before starting its fetch process"
    fetcher = int(line.split()[1])
    daemon.send_signal(signal.SIGKILL)
    daemon.wait()
    deadline = time.monotonic() + TIMEOUT_S
    while _alive(fetcher):
        assert time.monotonic() < deadline, "the fetch process outlived its daemon"
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped by init, does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    state = next(line for line in status.splitlines() if line.startswith("State:"))
    return "zombie" not in state
