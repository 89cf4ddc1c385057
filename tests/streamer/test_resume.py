"""A crash costs no learning (``streamer.resume``): a runner restored from checkpoints older than
the group's commit replays the records between, learning them again without delivering them
again; one restored from a checkpoint newer than the commit skips what it already learned. Either
way the alerts, their ids and the thresholds at the end are a clean run's, none delivered twice."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import pytest

from calibration.quantile import RollingQuantile
from detectors.cascade import CascadeDetector
from streamer.alerts import Alert
from streamer.checkpoints import PartitionCheckpoints
from streamer.ingest.codec import JsonCodec, Limits
from streamer.records import Partition, SourceRecord
from streamer.resume import Resumption
from streamer.runner import Runner
from streamer.testing import ListSink, ListSource, MemoryStateStore
from tests.streamer.alerting import window_alerts

PARTITIONS = [("in", 0), ("in", 1)]
Mode = Literal["events", "windows"]


def feed(n: int = 1600) -> list[SourceRecord]:
    """``n`` windows of the tiny model's kind for keys a, b (partition 0) and c, d (1), with a
    far-off burst now and then; offsets count per partition."""
    tiny = np.random.default_rng(0)  # the tiny bundle's two factors (tests/conftest.py)
    tiny.normal(size=(2000, 2))
    rng = np.random.default_rng(7)
    windows = rng.normal(size=(n, 2)) @ tiny.normal(size=(2, 8)) + rng.normal(0, 0.05, (n, 8))
    for start in range(150, n, 500):
        windows[start : start + 9] += rng.normal(0, 2, size=(9, 8))
    codec, counts, out = JsonCodec(Limits(8)), [0, 0], []
    for i in range(n):
        key = "abcd"[i % 4]
        partition = 0 if key in "ab" else 1
        value = codec.encode(key, i, windows[i].astype(np.float32))
        out.append(SourceRecord("in", partition, counts[partition], key.encode(), value, i))
        counts[partition] += 1
    return out


def runner(
    detector: CascadeDetector,
    source: ListSource,
    store: MemoryStateStore,
    mode: Mode,
    interval_s: float = 3600.0,
) -> tuple[Runner, ListSink]:
    calibrator = RollingQuantile(0.99, window=300, warmup=100, refresh=10, per_key=True)
    calibrator.start_from(detector.held_out_scores)
    alerts = ListSink("alerts")
    run = Runner(
        source,
        JsonCodec(Limits(8)),
        detector,
        calibrator,
        alerts,
        ListSink("dead"),
        PartitionCheckpoints(store, interval_s=interval_s),
        window_alerts(detector, mode, quiet=3),
    )
    return run, alerts


def resumed_source(records: list[SourceRecord], committed: Mapping[Partition, int]) -> ListSource:
    """A source over ``records`` positioned at ``committed``, as a consumer of the group is after
    its assignment: what is below the commit was served, the rest comes next."""
    below = [r for r in records if r.offset < committed.get((r.topic, r.partition), 0)]
    source = ListSource(below + [r for r in records if r not in below], 64)
    source.cursor = len(below)
    return source


def run_out(run: Runner) -> None:
    while run.step() is not None:
        pass


def ids(alerts: list[Alert]) -> list[str]:
    return [a.alert_id for a in alerts]


@pytest.mark.parametrize("mode", ["events", "windows"])
def test_a_crash_after_commits_the_checkpoint_missed_replays_them_quietly(
    tiny_detector: CascadeDetector, mode: Mode
) -> None:
    records = feed()
    clean_source = ListSource(records, 64)
    clean, clean_alerts = runner(tiny_detector, clean_source, MemoryStateStore(), mode)
    run_out(clean)
    assert len(clean_alerts.items) > 5

    store = MemoryStateStore()
    crashed_source = ListSource(records, 64)
    crashed, crashed_alerts = runner(tiny_detector, crashed_source, store, mode)
    for _ in range(14):  # ~900 records; checkpoints: each partition's first batch, and events
        crashed.step()
    committed = dict(crashed_source.committed)
    behind = {p: store.saved[p].offset for p in PARTITIONS if store.saved[p].offset < committed[p]}
    assert behind, "the checkpoints miss some of what was committed"

    source = resumed_source(records, committed)
    resumed, resumed_alerts = runner(tiny_detector, source, store, mode)
    resumed.partitions_assigned(PARTITIONS)
    run_out(resumed)
    assert ("seek", behind) in source.journal
    delivered = ids(crashed_alerts.items) + ids(resumed_alerts.items)
    assert delivered == ids(clean_alerts.items), "the same alerts, once each, in order"
    assert [a.body["score"] for a in crashed_alerts.items + resumed_alerts.items] == [
        a.body["score"] for a in clean_alerts.items
    ]
    for key in "abcd":
        assert resumed.calibrator.threshold(key) == clean.calibrator.threshold(key)
    assert source.committed == clean_source.committed
    commits = [offset for event, offset in source.journal if event == "commit" and offset]
    assert min(commits) >= min(committed.values()) - 1, "no commit moved back"


def test_a_crash_between_a_checkpoint_and_its_commit_skips_what_was_learned(
    tiny_detector: CascadeDetector,
) -> None:
    records = feed()
    clean_source = ListSource(records, 64)
    clean, clean_alerts = runner(tiny_detector, clean_source, MemoryStateStore(), "events")
    run_out(clean)

    store = MemoryStateStore()
    crashed_source = ListSource(records, 64)
    crashed, crashed_alerts = runner(tiny_detector, crashed_source, store, "events", 0.0)
    for _ in range(9):
        crashed.step()
    committed_before_last = dict(crashed_source.committed)
    crashed.step()  # delivered and checkpointed; its commit is lost in the crash
    assert all(store.saved[p].offset > committed_before_last[p] for p in PARTITIONS)

    source = resumed_source(records, committed_before_last)
    resumed, resumed_alerts = runner(tiny_detector, source, store, "events", 0.0)
    resumed.partitions_assigned(PARTITIONS)
    run_out(resumed)
    assert ids(crashed_alerts.items) + ids(resumed_alerts.items) == ids(clean_alerts.items)
    for key in "abcd":
        assert resumed.calibrator.threshold(key) == clean.calibrator.threshold(key)
    assert source.committed == clean_source.committed


def test_a_plan_seeks_back_skips_ahead_or_leaves_a_batch_alone() -> None:
    resumption = Resumption()
    assert resumption.idle
    resumption.restored(("t", 0), 5)
    resumption.restored(("t", 1), 12)
    resumption.restored(("t", 2), 3)
    batch = [SourceRecord("t", p, o, b"k", b"", 0) for p, o in [(0, 9), (1, 10), (2, 3), (1, 12)]]
    plan = resumption.plan(batch)
    assert plan.seek == {("t", 0): 5}
    assert plan.skipped == [batch[1]] and plan.process == [batch[2], batch[3]]
    assert resumption.replayed("t", 0, 8) and not resumption.replayed("t", 0, 9)
    replay = [SourceRecord("t", 0, o, b"k", b"", 0) for o in range(5, 11)]
    assert resumption.to_commit(replay) == replay[4:], "only from the commit on"
    assert not resumption.replaying() and resumption.idle
    resumption.restored(("t", 0), 20)
    resumption.forget([("t", 0)])
    assert resumption.idle
