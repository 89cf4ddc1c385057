"""``tandem run`` while it starts, as a real process against the real broker: a stop request in
any phase of its start-up ends it with status 0, and a missing input topic is waited for (logged,
reported by ``/health/ready``) until it appears, then scored."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streamer.broker.admin import NO_TIME_RETENTION, TopicSpec, create_topics, delete_topics
from tests.conftest import Broker
from tests.integration.daemons import Daemon, Setup, feed, health, produce, wait_committed

START_S = 120.0
"""Time for a phase of start-up to begin on a loaded 2-core machine (TensorFlow's import alone
can take 10 s there)."""


@pytest.fixture
def setup(
    kafka_broker: Broker, make_topic: Callable[..., str], tiny_bundle: Path, tmp_path: Path
) -> Setup:
    """A deployment whose input topic does not exist yet (``create_input`` makes it)."""
    return Setup(
        kafka_broker.bootstrap,
        input_topic=f"test.start.{uuid.uuid4().hex[:8]}",
        alerts_topic=make_topic(),
        dead_letter_topic=make_topic(),
        bundle=tiny_bundle,
        workdir=tmp_path,
    )


@pytest.fixture
def create_input(kafka_broker: Broker, setup: Setup) -> Any:
    """Create the setup's input topic when called; delete it when the test ends."""
    options = kafka_broker.client_options()
    made: list[str] = []

    def create() -> None:
        create_topics(options, [TopicSpec(setup.input_topic, 2, configs=NO_TIME_RETENTION)])
        made.append(setup.input_topic)

    yield create
    delete_topics(options, made)


def assert_stopped_cleanly(daemon: Daemon) -> None:
    status = daemon.terminate()
    assert status == 0, f"exit status {status}:\n{daemon.tail()}"
    events = [e["event"] for e in daemon.events()]
    assert "stopping" in events and events[-1] == "daemon_stopped", daemon.tail()


@pytest.mark.parametrize(
    ("phase", "topic_exists"),
    [("daemon_starting", True), ("broker_ready", True), ("input_topic_missing", False)],
    ids=["importing", "loading-the-model", "waiting-for-the-topic"],
)
def test_a_stop_request_during_start_up_exits_0(
    setup: Setup, create_input: Callable[[], None], phase: str, topic_exists: bool
) -> None:
    """Before, SIGTERM in the seconds it imports TensorFlow killed it (status -15): the
    handlers were installed only after those imports."""
    if topic_exists:
        create_input()
    daemon = Daemon(setup, "daemon")
    try:
        daemon.wait_for(phase, timeout_s=START_S)
    finally:
        assert_stopped_cleanly(daemon)


@pytest.mark.parametrize("client", ["kafka-python", "librdkafka"])
def test_a_stop_request_while_the_broker_is_unreachable_exits_0_at_once(
    setup: Setup, client: str
) -> None:
    """Not after ``--broker-wait-s`` (300 s) with status 3."""
    setup.bootstrap, setup.client = "127.0.0.1:1", client
    daemon = Daemon(setup, "daemon")
    try:
        daemon.wait_for("broker_unreachable", timeout_s=START_S)
    finally:
        assert_stopped_cleanly(daemon)


@pytest.mark.parametrize("client", ["kafka-python", "librdkafka"])
def test_a_missing_input_topic_is_waited_for_then_scored(
    setup: Setup, create_input: Callable[[], None], client: str
) -> None:
    """Before, the daemon exited after 30 s (``TopicError``): a restart loop under a
    supervisor. On librdkafka, asking whether the topic exists must not create it."""
    setup.client = client
    daemon = Daemon(setup, "daemon")
    try:
        daemon.wait_for("input_topic_missing", timeout_s=START_S)
        missing = daemon.events("input_topic_missing")[0]
        assert missing["topic"] == setup.input_topic and missing["waited_s"] >= 0
        port = daemon.events("metrics_server_started")[0]["port"]
        code, ready = health(port, "/health/ready")
        assert code == 503, ready
        assert f"input topic {setup.input_topic!r} does not exist" in ready["reason"]
        assert health(port, "/health/live")[0] == 200, "waiting is not a stalled loop"
        assert daemon.alive()

        create_input()
        daemon.wait_for("input_topic_found", timeout_s=START_S)
        total = 300
        produce(setup.bootstrap, setup.input_topic, feed(total), 0, total)
        wait_committed(setup, total, [daemon])
        assert daemon.scored() == total
        assert health(port, "/health/ready")[0] == 200
    finally:
        assert_stopped_cleanly(daemon)
