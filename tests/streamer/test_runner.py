"""The run loop with list-backed source and sinks: the order of side effects, failures, batching."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.memory import Memory
from calibration.quantile import RollingQuantile
from detectors.cascade import CascadeDetector
from streamer.checkpoints import PartitionCheckpoints
from streamer.ingest.codec import JsonCodec, Limits
from streamer.records import SourceRecord
from streamer.runner import Runner
from streamer.testing import Journal, ListSink, ListSource, MemoryStateStore
from tests.streamer.alerting import window_alerts


@pytest.fixture
def detector(tiny_detector: CascadeDetector) -> CascadeDetector:
    return tiny_detector


def feed(n: int = 900) -> list[SourceRecord]:
    """n JSON windows over 3 keys with two injected anomalies and two bad records."""
    rng = np.random.default_rng(1)
    windows = rng.normal(size=(n, 8)).astype(np.float32)
    windows[[600, 700]] += 40.0
    codec = JsonCodec(Limits(window_length=8))
    records = [
        SourceRecord("feed", 0, i, f"k{i % 3}".encode(), codec.encode(f"k{i % 3}", i, w), i)
        for i, w in enumerate(windows)
    ]
    records[100] = SourceRecord("feed", 0, 100, b"k1", b"{broken", 100)
    records[200] = SourceRecord("feed", 0, 200, b"k2", b'{"features": [1, 2]}', 200)
    return records


def runner(
    detector: CascadeDetector, batch_size: int, journal: Journal, memory: Memory | None = None
) -> tuple[Runner, ListSource, ListSink, ListSink]:
    source = ListSource(feed(), batch_size, journal)
    alerts, dead = ListSink("alerts", journal), ListSink("dead", journal)
    calibrator = RollingQuantile(0.995, window=300, warmup=200, refresh=16, per_key=True)
    run = Runner(
        source,
        JsonCodec(Limits(8)),
        detector,
        calibrator,
        alerts,
        dead,
        PartitionCheckpoints(MemoryStateStore(journal)),
        window_alerts(detector),
        memory=memory,
    )
    return run, source, alerts, dead


def drain(run: Runner) -> None:
    while run.step() is not None:
        pass


def test_everything_ends_somewhere_and_commits_follow_flushes(detector: CascadeDetector) -> None:
    journal: Journal = []
    run, source, alerts, dead = runner(detector, 128, journal)
    drain(run)
    assert source.committed == {("feed", 0): 900}
    assert {a.alert_id for a in alerts.items} >= {"feed/0/600", "feed/0/700"}
    reasons = {letter.record.offset: letter.reason for letter in dead.items}
    assert set(reasons) == {100, 200}
    assert "not valid JSON" in reasons[100] and "has 2 values; the model expects 8" in reasons[200]
    events = [event for event, _ in journal]
    for batch_start in range(0, len(events), 4):
        assert events[batch_start : batch_start + 4] == [
            "alerts.flush",
            "dead.flush",
            "checkpoint",
            "commit",
        ]


def test_a_failed_flush_commits_nothing(detector: CascadeDetector) -> None:
    journal: Journal = []
    run, source, alerts, _ = runner(detector, 128, journal)
    run.step()
    alerts.fail = ConnectionError("broker gone")
    with pytest.raises(ConnectionError):
        run.step()
    assert source.committed == {("feed", 0): 128}, "the failed batch stays uncommitted"
    assert [event for event, _ in journal][-1] == "commit"


def test_a_batch_that_failed_delivery_is_delivered_again_unchanged(
    detector: CascadeDetector,
) -> None:
    """While the sinks fail, the same outcome is retried (the calibrator learns each record
    once), nothing new is polled, and the alerts in the end are those of an undisturbed run."""
    reference, _, expected, _ = runner(detector, 128, [])
    drain(reference)
    run, source, alerts, _ = runner(detector, 128, [])
    run.step()
    alerts.fail = ConnectionError("broker gone")
    for _ in range(3):
        with pytest.raises(ConnectionError):
            run.step()
    assert source.cursor == 256, "nothing polled while a batch waits for delivery"
    alerts.fail = None
    drain(run)
    assert source.committed == {("feed", 0): 900}
    assert [a.alert_id for a in alerts.items] == [a.alert_id for a in expected.items]


def test_a_batch_given_up_at_a_revocation_is_read_again_when_its_partition_comes_back(
    detector: CascadeDetector,
) -> None:
    """A revocation gives up the batch waiting for delivery; it must be rewound, not dropped:
    when the partition comes back to this runner (kafka-python keeps its position), the batch is
    read again and nothing is skipped."""
    reference, _, expected, _ = runner(detector, 128, [])
    drain(reference)
    run, source, alerts, _ = runner(detector, 128, [])
    run.step()
    alerts.fail = ConnectionError("broker gone")
    with pytest.raises(ConnectionError):
        run.step()
    alerts.fail = None
    alerts.pending.clear()  # what the failed flush held is gone with the producer's buffer
    run.partitions_revoked([("feed", 0)])
    assert run.pending is None and source.cursor == 128, "the given-up batch is served again"
    run.partitions_assigned([("feed", 0)])
    drain(run)
    assert source.committed == {("feed", 0): 900}
    assert {a.alert_id for a in alerts.items} >= {a.alert_id for a in expected.items}


def test_the_same_stream_in_other_batches_gives_the_same_alerts(detector: CascadeDetector) -> None:
    """Same alert ids whatever the batching (the calibrator refreshes at fixed counts). Scores
    agree to float32 precision, not bit for bit: XLA's matmuls differ slightly between the
    padded batch shapes."""
    outcomes = []
    for batch_size in (900, 128, 37):
        run, _, alerts, _ = runner(detector, batch_size, [])
        drain(run)
        outcomes.append(alerts.items)
    for other in outcomes[1:]:
        assert [a.alert_id for a in other] == [a.alert_id for a in outcomes[0]]
        for mine, theirs in zip(other, outcomes[0], strict=True):
            assert mine.body["score"] == pytest.approx(theirs.body["score"], rel=1e-5)
            assert mine.body["threshold"] == pytest.approx(theirs.body["threshold"], rel=1e-5)


def test_a_batch_that_failed_to_compute_is_served_again(detector: CascadeDetector) -> None:
    journal: Journal = []
    run, source, _, _ = runner(detector, 128, journal)
    score = run.detector.score
    run.detector.score = lambda windows: (_ for _ in ()).throw(MemoryError("device"))  # type: ignore[method-assign]
    with pytest.raises(MemoryError):
        run.step()
    assert journal[-1] == ("rewind", 0) and source.cursor == 0
    run.detector.score = score  # type: ignore[method-assign]
    drain(run)
    assert source.committed == {("feed", 0): 900}


def test_the_memory_caps_scores_in_any_batches_and_its_part_keeps_the_sum(
    detector: CascadeDetector,
) -> None:
    """Between scoring and calibrating, each key's memory caps a window's score at its
    novelty: the flags and scores are the same in batches of 7 and of 500, the injected
    anomalies still alert, and ``parts.memory`` (never positive) keeps the parts' sum."""
    from streamer.calibrators import build_memory
    from streamer.config import MemoryConfig

    runs = []
    for batch_size in (7, 500):
        journal: Journal = []
        config = MemoryConfig(enabled=True)
        memory = build_memory(config, detector.memory_seed, detector.feature_names)
        run, _, alerts, _ = runner(detector, batch_size, journal, memory)
        drain(run)
        runs.append(alerts.items)
    small, large = ([(a.alert_id, a.body["score"]) for a in items] for items in runs)
    assert small == large and {"feed/0/600", "feed/0/700"} <= {i for i, _ in small}
    for alert in runs[0]:
        parts = alert.body["parts"]
        assert parts["memory"] <= 0.0
        assert sum(parts.values()) == pytest.approx(alert.body["score"], rel=1e-5, abs=1e-5)
