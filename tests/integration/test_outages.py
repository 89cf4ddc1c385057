"""The broker stopped under a running daemon and started again, mid-stream: the daemon survives
by itself, says so on its health endpoints, resumes within seconds of the broker's return, and
alerts exactly what a clean backtest of the topic alerts, once each. Stopped while the broker
is down again, it exits 0 without waiting for the producer's delivery timeout.

Each variant (kafka-python with and without its fetch process, exactly-once on kafka-python,
and librdkafka) runs against a private broker (this test stops it) on its own port and log
directory. ``TANDEM_OUTAGES`` (default 1) sets how many outages a run makes; their lengths
alternate 20 s and 60 s, starting where the variant says (60 s for inline, 20 s for the others,
so a default run has both). The floor run sets it to 10 (docs/delivery.md has its figures).
``TANDEM_OUTAGE_REPORT`` names a JSON-lines file each run appends its measurements to."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
from kafka.errors import KafkaError

from streamer.broker.admin import TopicSpec, create_topics, wait_for_broker
from streamer.cli.main import ExitCode, main
from streamer.config import KafkaConfig
from streamer.errors import BrokerUnavailableError
from tests.conftest import _script
from tests.integration.daemons import (
    Daemon,
    Setup,
    calm_feed,
    committed,
    health,
    produce,
    wait_committed,
)
from tests.integration.test_daemon_faults import alerts_in

OUTAGES = int(os.environ.get("TANDEM_OUTAGES", "1"))
OUTAGE_S = (20.0, 60.0)
"""How long the broker stays down: the scenario, not a wait for an event. 20 s outages killed
the daemon in most runs, through the fetch process asking the absent broker for a position to
compute the lag; 60 s outlasts the session timeout, so the group is rebuilt after it."""
STALL_S = 10.0
"""``[metrics].stall_s`` of the daemon under test: half the shorter outage, so a run loop silent
while it waits for the absent broker shows as a failed ``/health/live``, and twice what a batch
of 16 windows takes on a loaded machine."""
CHUNK = 2500
"""Windows sent before each outage; the broker stops once the daemon is into them."""
RESUME_WAIT_S = 240.0
"""How long the daemon may take to score again after the broker is back, on a loaded machine:
the broker's own start-up and group coordinator load, a rejoin, and backoff of up to 30 s."""
LIBRDKAFKA_IDLE_COMMIT = pytest.mark.xfail(
    strict=False,
    reason="on librdkafka, the group's committed offsets sometimes stayed behind after the "
    "broker returned (4 of 7 runs before the idle source checked the group's offsets; the "
    "check has not yet met the failure: 4 runs of 4 outages since, none needed it)",
)
PORT = int(os.environ.get("TANDEM_OUTAGE_PORT", "19492"))
"""The private broker's port (another one runs this test beside a suite that uses 19492)."""


@pytest.mark.timeout(300 + 150 * OUTAGES)  # each outage adds at most its 60 s and a resume
@pytest.mark.parametrize(
    ("client", "prefetch", "transactional", "first"),
    [
        pytest.param("kafka-python", 2, False, 0, id="fetch-process"),
        pytest.param("kafka-python", 0, False, 1, id="inline"),
        pytest.param("librdkafka", 2, False, 0, id="librdkafka", marks=LIBRDKAFKA_IDLE_COMMIT),
        pytest.param("kafka-python", 2, True, 0, id="exactly-once"),
    ],
)
def test_the_daemon_survives_broker_outages_and_alerts_as_a_clean_run(
    tiny_bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    client: str,
    prefetch: int,
    transactional: bool,
    first: int,
) -> None:
    """``first``: the index in ``OUTAGE_S`` of the first outage's length (so a default run,
    one outage per variant, has one of 60 s: the group outlives it on kafka-python)."""
    monkeypatch.delenv("TANDEM_KAFKA_BOOTSTRAP", raising=False)  # the backtest's: this broker
    env = {"TANDEM_BROKER_PORT": str(PORT), "TANDEM_BROKER_HOME": str(tmp_path / "kafka")}
    unset = ("TANDEM_KAFKA_BOOTSTRAP",)

    def broker(command: str) -> None:
        done = _script(command, env=env, unset=unset)
        assert done.returncode == 0, done.stderr

    broker("start")
    bootstrap = f"127.0.0.1:{PORT}"
    options = KafkaConfig(bootstrap=bootstrap).client_options()
    try:
        setup = Setup(
            bootstrap,
            "in",
            "alerts",
            "dead",
            tiny_bundle,
            tmp_path,
            max_records=16,
            stall_s=STALL_S,
            client=client,
            transactional=transactional,
            batch=f"prefetch = {prefetch}\n",
            calibration=(
                'method = "spot"\ntarget_rate = 0.001\nwindow = 1000\nwarmup = 150\n'
                "refresh = 20\nper_key = true\ncheckpoint_interval_s = 2\n"
            ),
        )
        create_topics(options, [TopicSpec("in", 2), TopicSpec("alerts", 2), TopicSpec("dead", 1)])
        total = CHUNK * (OUTAGES + 1)
        windows = calm_feed(total, anomalies=range(300, total, 173))
        measured: list[dict[str, Any]] = []
        daemon = Daemon(setup, "daemon")
        try:
            port: int | None = None
            for n in range(OUTAGES):
                start, end = n * CHUNK, (n + 1) * CHUNK
                produce(bootstrap, "in", windows, start, end)
                wait_committed(setup, start + 100, [daemon], timeout_s=RESUME_WAIT_S)
                port = port or daemon.events("metrics_server_started")[0]["port"]
                outage_s = OUTAGE_S[(first + n) % len(OUTAGE_S)]
                at_stop = _committed_total(setup)
                broker("stop")
                answers = _health_for(port, outage_s)
                assert daemon.alive(), daemon.tail()
                assert {live for live, _ in answers} == {200}, answers
                reasons = {reason for _, reason in answers}
                assert any(r.startswith("broker unreachable") for r in reasons), reasons
                broker("start")
                wait_for_broker(options, timeout_s=60)
                back = time.monotonic()
                resumed = _wait_resumed(setup, daemon, end)
                measured.append(
                    {
                        "outage_s": outage_s,
                        "committed_at_stop": at_stop - start,
                        "resume_s": None if resumed is None else round(resumed - back, 1),
                    }
                )
            produce(bootstrap, "in", windows, OUTAGES * CHUNK, total)
            wait_committed(setup, total, [daemon], timeout_s=RESUME_WAIT_S)
            alerted = daemon.alerted()
            broker("stop")  # a stop during an outage: the last checkpoint gives up after 10 s
        finally:
            stopping = time.monotonic()
            code = daemon.terminate()
        assert code == 0, daemon.tail()
        stop_s = round(time.monotonic() - stopping, 1)
        broker("start")
        wait_for_broker(options, timeout_s=60)

        out = tmp_path / "clean"
        config = str(setup.write_config())
        args = ["backtest", "--config", config, "--topic", "in", "--out", str(out)]
        assert main(args) == ExitCode.OK
        clean = pd.read_csv(out / "alerts.csv")
        isolation = "read_committed" if transactional else "read_uncommitted"
        alerts = alerts_in(bootstrap, "alerts", alerted, isolation)
        ids = [alert["alert_id"] for alert in alerts]
        _report(client, prefetch, transactional, measured, stop_s, len(ids), len(clean))
        assert len(clean) > OUTAGES, "each outage's stream has alerts"
        assert set(ids) == set(clean["alert_id"]), measured
        assert len(ids) == len(set(ids)), f"no alert repeated: {measured}"
        daemon_scores = {a["alert_id"]: a["score"] for a in alerts}
        assert daemon_scores == dict(zip(clean["alert_id"], clean["score"], strict=True))
    finally:
        _script("stop", env=env, unset=unset)


def _wait_resumed(setup: Setup, daemon: Daemon, end: int) -> float | None:
    """When (``time.monotonic()``) the group's committed total first grew after the broker came
    back; None when the chunk ending at ``end`` was all committed already (the outage came after
    it was done, so there was nothing to resume)."""
    before = _committed_total(setup)
    if before >= end:
        return None
    deadline = time.monotonic() + RESUME_WAIT_S
    while _committed_total(setup) <= before:
        assert daemon.alive(), daemon.tail()
        assert time.monotonic() < deadline, f"no commit {RESUME_WAIT_S} s after the outage"
        time.sleep(0.1)
    return time.monotonic()


def _committed_total(setup: Setup) -> int:
    """The group's committed total; -1 while the broker, just back, cannot say."""
    try:
        return sum(committed(setup.bootstrap, setup.group, setup.input_topic).values())
    except (KafkaError, BrokerUnavailableError):  # the admin client could not bootstrap yet
        return -1


def _health_for(port: int, seconds: float) -> list[tuple[int, str]]:
    """``/health/live``'s status and ``/health/ready``'s reason, twice a second for
    ``seconds``."""
    answers = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        live = health(port, "/health/live")[0]
        answers.append((live, health(port, "/health/ready")[1]["reason"]))
        time.sleep(0.5)
    return answers


def _report(
    client: str,
    prefetch: int,
    transactional: bool,
    measured: list[dict[str, Any]],
    stop_s: float,
    alerts: int,
    clean: int,
) -> None:
    """Append the run's figures to ``TANDEM_OUTAGE_REPORT``, when set."""
    path = os.environ.get("TANDEM_OUTAGE_REPORT")
    if path:
        line = {"client": client, "prefetch": prefetch, "transactional": transactional}
        line |= {"outages": measured}
        line |= {"stop_in_outage_s": stop_s, "alert_records": alerts, "clean_alerts": clean}
        with Path(path).open("ab") as out:
            out.write(orjson.dumps(line) + b"\n")
