"""Per-partition calibrator checkpoints: what each holds, when it is saved, how it is restored,
and how a runner hands a partition's thresholds to the next owner."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from structlog.testing import capture_logs

from calibration.quantile import RollingQuantile
from calibration.state import GLOBAL, entity_names
from detectors.cascade import CascadeDetector
from streamer.checkpoints import PartitionCheckpoints
from streamer.ingest.codec import JsonCodec, Limits
from streamer.records import SourceRecord, WindowBatch
from streamer.runner import Runner
from streamer.testing import ListSink, ListSource, MemoryStateStore
from tests.streamer.alerting import window_alerts


def calibrator() -> RollingQuantile:
    return RollingQuantile(0.99, window=200, warmup=50, refresh=10, per_key=True)


def records_and_batch(n: int, seed: int = 0) -> tuple[list[SourceRecord], WindowBatch]:
    """n records over partitions 0 (keys a, b) and 1 (key c), as a decoded batch."""
    keys = np.array(["a", "c", "b", "c"] * (n // 4))
    records = [
        SourceRecord("in", 0 if key != "c" else 1, i, key.encode(), b"", i)
        for i, key in enumerate(keys)
    ]
    batch = WindowBatch(
        records=records,
        keys=keys,
        ts_ms=np.arange(n, dtype=np.int64),
        windows=np.zeros((n, 1), dtype=np.float32),
        labels=np.full(n, -1, dtype=np.int8),
    )
    return records, batch


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_each_partition_saves_its_own_keys_and_offset() -> None:
    store, cal = MemoryStateStore(), calibrator()
    checkpoints = PartitionCheckpoints(store)
    records, batch = records_and_batch(400)
    cal.update(batch.keys, np.random.default_rng(0).exponential(size=400))
    assert checkpoints.after_batch(cal, batch, records)
    assert set(store.saved) == {("in", 0), ("in", 1)}
    assert sorted(entity_names(store.saved[("in", 0)].snapshot)) == [GLOBAL, "a", "b"]
    assert sorted(entity_names(store.saved[("in", 1)].snapshot)) == [GLOBAL, "c"]
    assert store.saved[("in", 0)].offset == 399 and store.saved[("in", 1)].offset == 400
    assert {s.generation for s in store.saved.values()} == {1}


def test_with_an_interval_saves_wait_and_a_forced_save_writes_only_what_changed() -> None:
    """A partition's first batch is saved at once (no offset is committed without a checkpoint
    to resume from); after that, saves wait for the interval."""
    store, cal, clock = MemoryStateStore(), calibrator(), FakeClock()
    checkpoints = PartitionCheckpoints(store, interval_s=10.0, clock=clock)
    records, batch = records_and_batch(8)
    cal.update(batch.keys, np.ones(8))
    assert checkpoints.after_batch(cal, batch, records)
    assert {p: s.generation for p, s in store.saved.items()} == {("in", 0): 1, ("in", 1): 1}
    assert not checkpoints.after_batch(cal, batch, records)
    assert {s.generation for s in store.saved.values()} == {1}
    clock.now = 10.0
    assert checkpoints.after_batch(cal, batch, records)
    assert set(store.saved) == {("in", 0), ("in", 1)}
    checkpoints.save(cal)
    assert store.journal[-1] == ("checkpoint", {}), "nothing changed since the last save"


def test_an_event_that_opened_forces_a_save_of_its_partition_only() -> None:
    store, cal, clock = MemoryStateStore(), calibrator(), FakeClock()
    checkpoints = PartitionCheckpoints(store, interval_s=10.0, clock=clock)
    records, batch = records_and_batch(8)
    cal.update(batch.keys, np.ones(8))
    checkpoints.after_batch(cal, batch, records)  # the first batch: saved at once
    assert checkpoints.after_batch(cal, batch, records, force={("in", 1)})
    generations = {p: s.generation for p, s in store.saved.items()}
    assert generations == {("in", 0): 1, ("in", 1): 2}, "the other waits for its interval"
    clock.now = 10.0
    assert checkpoints.after_batch(cal, batch, records)
    assert set(store.saved) == {("in", 0), ("in", 1)}


def test_restore_resumes_thresholds_and_keeps_the_global_state_when_asked() -> None:
    store, cal = MemoryStateStore(), calibrator()
    records, batch = records_and_batch(400)
    scores = np.random.default_rng(1).exponential(size=400)
    cal.update(batch.keys, scores)
    PartitionCheckpoints(store).after_batch(cal, batch, records)

    fresh = calibrator()
    PartitionCheckpoints(store).restore(fresh, [("in", 1)], with_global=True)
    assert fresh.threshold("c") == cal.threshold("c")
    assert fresh.threshold() == cal.threshold()
    assert "a" not in fresh.keys, "another partition's keys stay out"

    busy = calibrator()
    busy.update(np.array(["z"] * 100), np.full(100, 50.0))
    own_global = busy.threshold()
    PartitionCheckpoints(store).restore(busy, [("in", 0)], with_global=False)
    assert busy.threshold() == own_global
    assert busy.threshold("a") == cal.threshold("a")


def make_runner(
    detector: CascadeDetector, records: list[SourceRecord], store: MemoryStateStore
) -> tuple[Runner, ListSource, ListSink]:
    source, alerts = ListSource(records, 64), ListSink("alerts")
    run = Runner(
        source,
        JsonCodec(Limits(8)),
        detector,
        calibrator(),
        alerts,
        ListSink("dead"),
        PartitionCheckpoints(store, interval_s=3600.0),
        window_alerts(detector),
    )
    return run, source, alerts


@pytest.fixture
def two_partition_feed() -> list[SourceRecord]:
    rng = np.random.default_rng(2)
    codec = JsonCodec(Limits(8))
    out = []
    for i in range(512):
        key = ("a", "b", "c", "d")[i % 4]
        partition = 0 if key in "ab" else 1
        window = rng.normal(size=8).astype(np.float32)
        out.append(SourceRecord("in", partition, i, key.encode(), codec.encode(key, i, window), i))
    return out


def test_a_revoked_partition_saves_its_state_and_its_next_owner_resumes_its_thresholds(
    tiny_detector: CascadeDetector, two_partition_feed: list[SourceRecord]
) -> None:
    store = MemoryStateStore()
    first, source, _ = make_runner(tiny_detector, two_partition_feed, store)
    while first.step() is not None:
        pass
    first_batch = {p: (s.offset, s.generation) for p, s in store.saved.items()}
    assert first_batch == {("in", 0): (62, 1), ("in", 1): (64, 1)}, "the interval has not passed"
    first.partitions_revoked([("in", 0), ("in", 1)])
    assert source.committed == {("in", 0): 510, ("in", 1): 512}
    assert store.saved[("in", 1)].offset == 512

    second, _, _ = make_runner(tiny_detector, [], store)
    second.partitions_assigned([("in", 1)])
    for key in ("c", "d"):
        assert second.calibrator.threshold(key) == first.calibrator.threshold(key)
    assert set(second.calibrator.keys) == {"c", "d"}


def test_a_batch_waiting_for_delivery_is_released_when_its_partitions_go(
    tiny_detector: CascadeDetector, two_partition_feed: list[SourceRecord]
) -> None:
    store = MemoryStateStore()
    run, source, alerts = make_runner(tiny_detector, two_partition_feed, store)
    run.step()
    alerts.fail = ConnectionError("broker gone")
    with pytest.raises(ConnectionError):
        run.step()
    assert run.pending is not None
    run.partitions_revoked([("in", 0), ("in", 1)])
    assert run.pending is None, "the next owner reads the uncommitted batch again"
    assert source.committed == {("in", 0): 62, ("in", 1): 64}


def test_a_runner_with_another_model_does_not_inherit_the_checkpointed_thresholds(
    tiny_detector: CascadeDetector, two_partition_feed: list[SourceRecord]
) -> None:
    """A checkpoint names its model's version: another model warms up afresh (logged), and its
    own first save supersedes the old checkpoint; the same model still resumes."""
    store = MemoryStateStore()
    first, _, _ = make_runner(tiny_detector, two_partition_feed, store)
    while first.step() is not None:
        pass
    first.partitions_revoked([("in", 0), ("in", 1)])
    old_generation = store.saved[("in", 1)].generation

    retrained = copy.copy(tiny_detector)
    retrained._version = "sha256:another"
    feed = [r for r in two_partition_feed if r.partition == 1]
    second, _, _ = make_runner(retrained, feed, store)
    with capture_logs() as logs:
        second.partitions_assigned([("in", 1)])
    foreign = [e for e in logs if e["event"] == "checkpoint_of_another_model"]
    assert len(foreign) == 1 and foreign[0]["checkpoint_model"] == tiny_detector.version
    assert foreign[0]["model"] == "sha256:another" and foreign[0]["log_level"] == "warning"
    assert set(second.calibrator.keys) == set(), "nothing inherited"
    second.step()
    saved = store.saved[("in", 1)]
    assert saved.generation == old_generation + 1, "the new model's checkpoint is the latest"

    third, _, _ = make_runner(retrained, [], store)
    third.partitions_assigned([("in", 1)])
    assert set(third.calibrator.keys) == {"c", "d"}, "the same model resumes its own state"
