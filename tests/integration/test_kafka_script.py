"""scripts/kafka.sh against the session broker: idempotent start, status, clear refusals."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.conftest import Broker, _script

EXTERNAL = bool(os.environ.get("TANDEM_KAFKA_BOOTSTRAP"))


def test_start_is_idempotent(kafka_broker: Broker) -> None:
    result = _script("start")
    assert result.returncode == 0
    expected = "starting nothing" if EXTERNAL else "already running"
    assert expected in result.stderr


def test_start_is_idempotent_in_a_narrow_terminal(kafka_broker: Broker) -> None:
    """``ps`` cuts its output to ``COLUMNS``: the broker's long java command line must still be
    recognised, or ``stop`` would call it not running and leave it behind."""
    result = _script("start", env={"COLUMNS": "40"})
    assert result.returncode == 0
    expected = "starting nothing" if EXTERNAL else "already running"
    assert expected in result.stderr


def test_status_reports_the_answering_broker(kafka_broker: Broker) -> None:
    result = _script("status")
    assert result.returncode == 0, result.stdout + result.stderr
    answer = json.loads(result.stdout.split(": ", 1)[1])
    assert answer["api_version"] == kafka_broker.info.api_version
    assert answer["cluster_id"] == kafka_broker.info.cluster_id
    assert _script("bootstrap").stdout.strip() == kafka_broker.bootstrap


def test_a_second_broker_on_a_taken_port_is_refused_with_a_reason(
    kafka_broker: Broker, tmp_path: Path
) -> None:
    _, port = kafka_broker.bootstrap.rsplit(":", 1)
    env = {"TANDEM_BROKER_HOME": str(tmp_path / "other"), "TANDEM_BROKER_PORT": port}
    result = _script("start", env=env, unset=("TANDEM_KAFKA_BOOTSTRAP",))
    assert result.returncode == 1
    assert f"port {port} is taken by another process" in result.stderr
