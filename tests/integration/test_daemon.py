"""``tandem run`` as a process against the real broker: it scores what arrives, and SIGTERM stops
it cleanly with every processed window committed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest
from kafka import KafkaProducer

from streamer.broker.admin import committed_offsets
from streamer.ingest.codec import JsonCodec, Limits
from tests.conftest import Broker, read_topic

N = 1500


def committed(broker: Broker, group: str, topic: str) -> int:
    return sum(committed_offsets(broker.client_options(), group, topic).values())


@pytest.fixture(params=["tiny", "tiny-fusion"])
def bundle(request: pytest.FixtureRequest) -> Path:
    """The daemon runs every detector kind unchanged: a cascade and a late fusion."""
    fixture = "tiny_bundle" if request.param == "tiny" else "tiny_fusion_bundle"
    path: Path = request.getfixturevalue(fixture)
    return path


def test_the_daemon_scores_the_stream_and_stops_cleanly_on_sigterm(
    kafka_broker: Broker, make_topic: Callable[..., str], bundle: Path, tmp_path: Path
) -> None:
    input_topic, alerts_topic = make_topic(partitions=2), make_topic()
    group = f"daemon-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "daemon.toml"
    config.write_text(
        f'[kafka]\ninput_topic = "{input_topic}"\nalerts_topic = "{alerts_topic}"\n'
        f'dead_letter_topic = "{make_topic()}"\ngroup_id = "{group}"\n'
        f"[batch]\nmax_records = 128\nmax_wait_ms = 100\n"
        f'[model]\nbundle = "{bundle}"\ndevice = "cpu"\n'
        f'[calibration]\nmethod = "spot"\ntarget_rate = 0.001\nwindow = 1000\nwarmup = 500\n'
        f"refresh = 20\n"
        f'[log]\nformat = "json"\n'
    )
    env = {
        **os.environ,
        "TANDEM_KAFKA_BOOTSTRAP": kafka_broker.bootstrap,
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    daemon = subprocess.Popen(
        [sys.executable, "-m", "streamer", "run", "--config", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        rng = np.random.default_rng(2)
        windows = rng.normal(0, 0.3, size=(N + 2, 8)).astype(np.float32)
        windows[[N, N + 1]] += 30.0
        codec = JsonCodec(Limits(8))
        producer = KafkaProducer(acks="all", **kafka_broker.client_options())
        # Normal windows first, then (once they are committed, so warm-up is over whatever the
        # partition order) two anomalies.
        for first, last in ((0, N), (N, N + 2)):
            for i in range(first, last):
                key = f"s{i % 4}"
                producer.send(input_topic, key=key.encode(), value=codec.encode(key, i, windows[i]))
            producer.flush()
            deadline = time.monotonic() + 120
            while (
                committed(kafka_broker, group, input_topic) < last and time.monotonic() < deadline
            ):
                assert daemon.poll() is None, daemon.communicate()[1][-3000:]
                time.sleep(0.5)
            assert committed(kafka_broker, group, input_topic) == last
        producer.close()
        daemon.send_signal(signal.SIGTERM)
        _, stderr = daemon.communicate(timeout=60)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert daemon.returncode == 0, stderr[-3000:]
    logged = [orjson.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    events = [line["event"] for line in logged]
    alerted = sum(line.get("alerts", 0) for line in logged if line["event"] == "batch_scored")
    assert "daemon_started" in events and "stopping" in events and events[-1] == "daemon_stopped"
    scored = [line for line in logged if line["event"] == "batch_scored"]
    assert scored and all(
        (line.get("input_topic"), line.get("group")) == (input_topic, group) for line in scored
    ), "every event of the daemon carries its input topic and group (bound log context)"
    records = read_topic(kafka_broker, alerts_topic, lambda got: len(got) >= alerted)
    alerts = [orjson.loads(record.value) for record in records]
    assert len(alerts) == alerted
    flagged = {(a["key"], a["event_ts"]) for a in alerts}
    expected = {(f"s{N % 4}", N), (f"s{(N + 1) % 4}", N + 1)}
    assert expected <= flagged, f"{alerted} alerts logged; read {len(alerts)}"
    assert all(
        a["model"]["name"] == bundle.name and a["calibrator"]["method"] == "spot" for a in alerts
    )
    parts = {"ae1", "ae2"} if bundle.name == "tiny" else {"left", "right", "joint"}
    assert all(set(a["parts"]) == parts for a in alerts)


def test_an_unreachable_broker_is_retried_then_reported_with_exit_code_3(tiny_bundle: Path) -> None:
    env = {**os.environ, "TANDEM_KAFKA_BOOTSTRAP": "127.0.0.1:1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamer",
            "--log-format",
            "json",
            "run",
            "--model",
            str(tiny_bundle),
            "--broker-wait-s",
            "3",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 3, result.stderr[-2000:]
    assert '"event":"broker_unreachable"' in result.stderr
    assert "no broker answered at ['127.0.0.1:1']" in result.stderr
