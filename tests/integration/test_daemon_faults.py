"""``tandem run`` under the faults it must survive, as real processes against a real broker: a
``kill -9`` and restart, SIGTERM in the middle of a stream, a second daemon joining and leaving
the group. The broker itself going away and coming back is ``test_outages.py``'s."""

from __future__ import annotations

import re
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import Broker, read_topic
from tests.integration.daemons import (
    Daemon,
    Setup,
    committed,
    feed,
    key_of,
    produce,
    produce_in_background,
    wait_committed,
)


def alerts_in(
    bootstrap: str, topic: str, at_least: int, isolation_level: str = "read_uncommitted"
) -> list[dict[str, Any]]:
    broker = Broker(bootstrap, None, "")  # type: ignore[arg-type]  # only the address is used
    records = read_topic(
        broker, topic, lambda got: len(got) >= at_least, isolation_level=isolation_level
    )
    return [orjson.loads(record.value) for record in records]


def assert_one_id_per_window(alerts: list[dict[str, Any]]) -> None:
    """Repeats are allowed only as the same record: one id per window that produced one (a
    window produces at most one record: an event's opening, update or close)."""
    ids: dict[tuple[str, int], set[str]] = defaultdict(set)
    for alert in alerts:
        ids[(alert["key"], alert["event_ts"])].add(alert["alert_id"])
    assert all(len(found) == 1 for found in ids.values()), "a window alerted under two ids"


def assert_alerted(alerts: list[dict[str, Any]], indices: list[int]) -> None:
    """Each of ``indices`` opened an alert event (``Setup``'s events close at the first calm
    window, so each far-off anomaly opens its own)."""
    flagged = {(a["key"], a["event_ts"]) for a in alerts if a["type"] in ("opened", "window")}
    missing = [i for i in indices if (key_of(i), i) not in flagged]
    assert not missing, f"anomalies never alerted: {missing}"


@pytest.mark.parametrize(
    ("client", "transactional"),
    [("kafka-python", False), ("kafka-python", True), ("librdkafka", False), ("librdkafka", True)],
    ids=["at-least-once", "exactly-once", "librdkafka", "librdkafka-exactly-once"],
)
def test_kill_9_then_restart_loses_no_alert_and_resumes_thresholds(
    setup: Setup,
    client: str,
    transactional: bool,
    record_property: Callable[[str, object], None],
) -> None:
    """Warm-up is 2,000 scores; after the restart fewer than that arrive before the last two
    anomalies, so they are caught only if the thresholds were restored from the checkpoint.
    The keys' memories of normal windows are on, so they are checkpointed and restored too.
    With transactions, a read-committed subscriber sees every alert exactly once (the killed
    daemon's open transaction is aborted by the broker after its timeout, 30 s)."""
    setup.max_records = 16
    setup.transactional, setup.client = transactional, client
    setup.kafka = "session_timeout_ms = 10000\n"  # the killed member's partitions move sooner
    setup.memory = "enabled = true\n"
    setup.calibration = (
        'method = "spot"\ntarget_rate = 0.001\nwindow = 4000\nwarmup = 2000\nrefresh = 20\n'
        "checkpoint_interval_s = 0.2\n"
    )
    warm, stream, tail = 2400, 1600, 60
    total = warm + stream + tail
    in_stream = list(range(warm + 100, warm + stream, 200))
    in_tail = [warm + stream, warm + stream + 1]
    windows = feed(total, anomalies=in_stream + in_tail)

    first = Daemon(setup, "first")
    try:
        produce(setup.bootstrap, setup.input_topic, windows, 0, warm)
        wait_committed(setup, warm, [first])
        sender = produce_in_background(
            setup.bootstrap, setup.input_topic, windows, warm, warm + stream, per_s=200
        )
        wait_committed(setup, warm + 300, [first])
    finally:
        first.kill()
    killed = time.monotonic()
    sender.join()
    at_kill = sum(committed(setup.bootstrap, setup.group, setup.input_topic).values())
    assert at_kill < warm + stream, "the kill landed mid-stream"
    produce(setup.bootstrap, setup.input_topic, windows, warm + stream, total)
    assert total - at_kill < 2000, "fewer windows after the kill than a warm-up needs"

    second = Daemon(setup, "second")
    try:
        second.wait_owning(lambda owned: owned == 2, timeout_s=180)
        record_property("takeover_s", round(time.monotonic() - killed, 1))  # start-up included
        wait_committed(setup, total, [second])
    finally:
        assert second.terminate() == 0, second.tail()
    restored = second.events("calibrator_restored")
    assert {e["partition"] for e in restored} == {0, 1}
    # A batch's ``batch_scored`` line follows its commit: the killed daemon may have committed
    # its last batch (alerts delivered, state saved with it) without logging it.
    uncounted = setup.max_records
    assert first.scored() + second.scored() >= total - uncounted, "every window scored"
    isolation = "read_committed" if transactional else "read_uncommitted"
    alerts = alerts_in(
        setup.bootstrap, setup.alerts_topic, first.alerted() + second.alerted(), isolation
    )
    assert_alerted(alerts, in_stream + in_tail)
    assert_one_id_per_window(alerts)
    if transactional:
        ids = [a["alert_id"] for a in alerts]
        assert len(ids) == len(set(ids)), "exactly once: no alert repeated"


def test_an_event_open_at_a_kill_9_is_neither_opened_again_nor_lost(setup: Setup) -> None:
    """One key's 120 windows in a row are anomalous; the daemon is killed while that event is
    open and restarted. Its records, repeats dropped by id, are one event: opened once (an
    opening delivered twice has one id), updates numbered without a gap, one close."""
    setup.max_records = 16
    setup.alerts = 'mode = "events"\nquiet = 4\nupdate_every = 16\n'
    setup.calibration = setup.calibration.replace(
        "checkpoint_interval_s = 0.5", "checkpoint_interval_s = 0.3"
    )
    warm, keys, long_key = 1600, 8, 3
    start = warm + 200 + long_key
    anomalous = [start + keys * k for k in range(120)]  # one key's next 120 windows
    total = anomalous[-1] + 400
    windows = feed(total, anomalies=anomalous)

    first = Daemon(setup, "first")
    try:
        produce(setup.bootstrap, setup.input_topic, windows, 0, warm)
        wait_committed(setup, warm, [first])
        sender = produce_in_background(
            setup.bootstrap, setup.input_topic, windows, warm, total, per_s=300
        )
        wait_committed(setup, anomalous[60], [first])
    finally:
        first.kill()
    sender.join()
    at_kill = sum(committed(setup.bootstrap, setup.group, setup.input_topic).values())
    assert at_kill < anomalous[-1], "the kill landed while the event was open"
    second = Daemon(setup, "second")
    try:
        wait_committed(setup, total, [second])
    finally:
        assert second.terminate() == 0, second.tail()
    records = alerts_in(setup.bootstrap, setup.alerts_topic, first.alerted() + second.alerted())
    story = {a["alert_id"]: a for a in records if a["key"] == key_of(start)}
    opened = [a for a in story.values() if a["type"] == "opened" and a["event_ts"] >= start]
    assert [a["event_ts"] for a in opened] == [start], "one event, opened at its first window"
    event_id = opened[0]["event_id"]
    own = [a for a in story.values() if a.get("event_id") == event_id]
    updates = sorted(int(a["alert_id"].rsplit(":u", 1)[1]) for a in own if a["type"] == "updated")
    assert updates == list(range(1, len(updates) + 1)) and len(updates) >= 2
    closed = [a for a in own if a["type"] == "closed"]
    assert len(closed) == 1 and closed[0]["event"]["last_flagged_ts"] == anomalous[-1]
    assert_one_id_per_window(records)


@pytest.mark.parametrize("client", ["kafka-python", "librdkafka"])
def test_sigterm_mid_stream_commits_exactly_what_was_alerted(setup: Setup, client: str) -> None:
    setup.max_records, setup.client = 16, client
    total = 6000
    anomalies = list(range(1300, total, 400))
    windows = feed(total, anomalies=anomalies)
    daemon = Daemon(setup, "daemon")
    try:
        produce(setup.bootstrap, setup.input_topic, windows, 0, total)
        wait_committed(setup, 2000, [daemon])
        # The anomalies are all one key's, on one partition, which a loaded machine may have
        # read less of than the other: 2,128 windows in, none of them reached once.
        daemon.wait_for("batch_scored", where=lambda e: e["alerts"] > 0)
        port = daemon.events("metrics_server_started")[0]["port"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=5) as ready:
            assert ready.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as metrics:
            exposition = metrics.read().decode()
        scored = re.search(r'^tandem_records_total\{outcome="scored"\} (\S+)$', exposition, re.M)
        assert scored is not None and float(scored.group(1)) >= 2000
        assert re.search(r"^tandem_consumer_lag_records\{partition=", exposition, re.M)
    finally:
        assert daemon.terminate() == 0, daemon.tail()
    offsets = committed(setup.bootstrap, setup.group, setup.input_topic)
    assert sum(offsets.values()) == daemon.scored() < total, "stopped mid-stream, batch finished"
    events = [e["event"] for e in daemon.events()]
    assert events.index("stopping") < events.index("daemon_stopped")
    alerts = alerts_in(setup.bootstrap, setup.alerts_topic, daemon.alerted())
    assert len(alerts) == daemon.alerted() > 0
    for alert in alerts:
        source = alert.get("at", alert["source"])  # an event record: the window that made it
        assert source["offset"] < offsets[source["partition"]], "no alert beyond the commit"


@pytest.mark.parametrize("client", ["kafka-python", "librdkafka"])
def test_two_daemons_share_the_partitions_and_hand_over_calibrator_state(
    kafka_broker: Broker,
    make_topic: Callable[..., str],
    tiny_bundle: Path,
    tmp_path: Path,
    client: str,
    record_property: Callable[[str, object], None],
) -> None:
    """The second daemon takes partitions over with their state, then leaves and hands them
    back; how long the first took to own all four again is recorded (``handover_s``)."""
    setup = Setup(
        kafka_broker.bootstrap,
        input_topic=make_topic(partitions=4),
        alerts_topic=make_topic(partitions=4),
        dead_letter_topic=make_topic(),
        bundle=tiny_bundle,
        workdir=tmp_path,
        client=client,
    )
    warm, more, tail = 2400, 800, 16
    total = warm + more + tail
    last = list(range(warm + more, total))
    windows = feed(total, anomalies=last)
    first = Daemon(setup, "first")
    second: Daemon | None = None
    try:
        first.wait_owning(lambda owned: owned == 4)
        produce(setup.bootstrap, setup.input_topic, windows, 0, warm)
        wait_committed(setup, warm, [first])
        second = Daemon(setup, "second")
        second.wait_owning(lambda owned: owned > 0, timeout_s=180)
        first.wait_owning(lambda owned: 0 < owned < 4)
        produce(setup.bootstrap, setup.input_topic, windows, warm, warm + more)
        wait_committed(setup, warm + more, [first, second])
        assert first.scored() + second.scored() == warm + more, "each window scored once"
        taken = sorted(second.owned())
        assert second.terminate() == 0, second.tail()
        left = time.monotonic()
        first.wait_owning(lambda owned: owned == 4)
        record_property("handover_s", round(time.monotonic() - left, 1))
        produce(setup.bootstrap, setup.input_topic, windows, warm + more, total)
        wait_committed(setup, total, [first])
    finally:
        code = first.terminate()
        if second is not None and second.alive():
            second.kill()
    assert code == 0, first.tail()
    handed = {
        f"{e['topic']}/{e['partition']}": e
        for e in first.events("calibrator_restored")
        if f"{e['topic']}/{e['partition']}" in taken
    }
    offsets = committed(setup.bootstrap, setup.group, setup.input_topic)
    carried = {name for name in taken if offsets.get(int(name.rsplit("/", 1)[1]), 0) > 0}
    assert carried, "the second daemon had partitions with data"
    assert set(handed) == carried, "the state of every partition with data the second daemon had"
    assert all(e["keys"] > 0 for e in handed.values())
    alerts = alerts_in(setup.bootstrap, setup.alerts_topic, first.alerted() + second.alerted())
    assert_alerted(alerts, last[:8])  # each key's second anomaly is in the event its first opened
    assert_one_id_per_window(alerts)
