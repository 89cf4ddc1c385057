"""Same input, same alerts, whatever happens: a daemon killed with SIGKILL again and again (during
its start-up, after it scored its first batch, and after its fetch process was killed and
restarted by the daemon) and restarted as a supervisor would, alerts exactly what a run that never
crashed alerts: the same alert ids with the same scores, in both delivery modes (exactly once
with transactions).

The kill points are random on purpose (seeded, so a failure names its seed); the delays before a
kill are part of the fault, not waits for an event. ``TANDEM_CHAOS_KILLS`` (default 3) sets how
many kills a run makes."""

from __future__ import annotations

import os
import random
import signal
import time
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest

from streamer.cli.main import ExitCode, main
from tests.integration.daemons import (
    Daemon,
    Setup,
    calm_feed,
    committed,
    produce_in_background,
    wait_committed,
)
from tests.integration.test_daemon_faults import alerts_in, assert_one_id_per_window

KILLS = int(os.environ.get("TANDEM_CHAOS_KILLS", "3"))
TOTAL = 3000
ANOMALIES = list(range(400, TOTAL, 173))
STARTUP_KILL_S = (1.0, 6.0)
"""A start-up kill lands this long after the process starts: before its model is loaded (the
import of Keras alone takes several seconds), or while it joins the group."""
FIRST_BATCH_WAIT_S = 180.0
"""How long a daemon may take to score its first batch on a loaded machine: start-up, a group
join, and with transactions, the broker's abort of the killed daemon's transaction (30 s)."""


@pytest.mark.parametrize(
    ("client", "transactional"),
    [("kafka-python", False), ("kafka-python", True), ("librdkafka", True)],
    ids=["at-least-once", "exactly-once", "librdkafka-exactly-once"],
)
def test_random_kills_change_no_alert(
    setup: Setup, client: str, transactional: bool, tmp_path: Path
) -> None:
    setup.max_records = 32
    setup.transactional, setup.client = transactional, client
    setup.calibration = (
        'method = "spot"\ntarget_rate = 0.001\nwindow = 1000\nwarmup = 150\nrefresh = 20\n'
        "per_key = true\ncheckpoint_interval_s = 2\n"
    )
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    windows = calm_feed(TOTAL, anomalies=ANOMALIES)
    per_s = 360 / KILLS  # a stream that lasts about as long as the kills take
    sender = produce_in_background(
        setup.bootstrap, setup.input_topic, windows, 0, TOTAL, per_s=per_s
    )
    kills = []
    for n in range(KILLS):
        daemon = Daemon(setup, f"killed-{n}")
        fetcher = "fetch process" if client == "kafka-python" else "daemon"  # librdkafka: none
        how = ("start-up", "daemon", fetcher)[n % 3]
        if how == "start-up":
            time.sleep(rng.uniform(*STARTUP_KILL_S))
            daemon.kill()
        else:
            _wait_for_work(setup, daemon, after=0)
            time.sleep(rng.uniform(0.0, 3.0))
            if how == "fetch process":  # the daemon starts another, and goes on
                scored = daemon.count("batch_scored")
                os.kill(daemon.events("fetch_process_started")[0]["pid"], signal.SIGKILL)
                daemon.wait_for("fetch_process_restarted", timeout_s=FIRST_BATCH_WAIT_S)
                _wait_for_work(setup, daemon, after=scored)
                time.sleep(rng.uniform(0.0, 3.0))
            daemon.kill()
        kills.append((how, _committed_total(setup)))
    sender.join()

    final = Daemon(setup, "final")
    try:
        final.wait_for("partitions_assigned", timeout_s=FIRST_BATCH_WAIT_S)
        wait_committed(setup, TOTAL, [final], timeout_s=FIRST_BATCH_WAIT_S + 120)
    finally:
        assert final.terminate() == 0, final.tail()

    out = tmp_path / "clean"
    config = str(setup.write_config())
    args = ["backtest", "--config", config, "--topic", setup.input_topic, "--out", str(out)]
    assert main(args) == ExitCode.OK
    clean = pd.read_csv(out / "alerts.csv")
    clean_scores = dict(zip(clean["alert_id"], clean["score"], strict=True))
    assert len(clean_scores) >= len(ANOMALIES), "each anomaly alerted in a clean run"

    isolation = "read_committed" if transactional else "read_uncommitted"
    alerts = alerts_in(setup.bootstrap, setup.alerts_topic, len(clean_scores), isolation)
    scores: dict[str, set[float]] = defaultdict(set)
    for alert in alerts:
        scores[alert["alert_id"]].add(alert["score"])
    context = f"seed {seed}, kills (how, committed by then): {kills}"
    assert set(scores) == set(clean_scores), context
    assert all(found == {clean_scores[i]} for i, found in scores.items()), context
    assert_one_id_per_window(alerts)
    if transactional:
        assert len(alerts) == len(scores), f"exactly once: no alert repeated ({context})"


def _wait_for_work(setup: Setup, daemon: Daemon, after: int) -> None:
    """Wait until ``daemon`` scored a batch beyond its first ``after``, or holds partitions
    when the whole stream is committed already (nothing is left to score)."""
    deadline = time.monotonic() + FIRST_BATCH_WAIT_S
    while daemon.count("batch_scored") <= after:
        if daemon.count("partitions_assigned") and _committed_total(setup) >= TOTAL:
            return
        assert daemon.alive(), daemon.tail()
        assert time.monotonic() < deadline, f"no batch in {FIRST_BATCH_WAIT_S} s:\n{daemon.tail()}"
        time.sleep(0.2)


def _committed_total(setup: Setup) -> int:
    try:
        return sum(committed(setup.bootstrap, setup.group, setup.input_topic).values())
    except Exception:  # the broker busy with a rebalance: only for the failure message
        return -1
