"""``tandem alerts`` against the real broker: duplicates dropped, filters applied, both formats."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest
from kafka import KafkaProducer

from streamer.cli.main import ExitCode, main
from tests.conftest import Broker


def alert(alert_id: str, key: str, score: float) -> bytes:
    return orjson.dumps(
        {
            "alert_id": alert_id,
            "key": key,
            "event_ts": 1_764_000_000_000,
            "detected_ts": 1_764_000_000_050,
            "score": score,
            "threshold": 4.0,
            "parts": {"ae1": score / 2, "ae2": score / 2},
            "top_features": [{"name": "temp[t-0]", "index": 3, "share": 0.61}],
            "source": {"topic": "windows", "partition": 0, "offset": 1},
            "model": {"name": "m", "version": "sha256:" + "0" * 64},
            "calibrator": {"method": "spot", "target_rate": 0.0001},
        }
    )


@pytest.fixture
def alerts_topic(kafka_broker: Broker, make_topic: Callable[..., str]) -> str:
    topic = make_topic()
    producer = KafkaProducer(acks="all", **kafka_broker.client_options())
    for alert_id, key, score in [
        ("windows/0/1", "pump-1", 5.0),
        ("windows/0/2", "pump-2", 9.5),
        ("windows/0/1", "pump-1", 5.0),  # redelivered after a crash: same id
        ("windows/0/3", "pump-1", 12.0),
    ]:
        producer.send(topic, key=key.encode(), value=alert(alert_id, key, score))
    producer.flush()
    producer.close()
    return topic


def run(kafka_broker: Broker, topic: str, *extra: str, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("TANDEM_KAFKA_BOOTSTRAP", kafka_broker.bootstrap)
    monkeypatch.setenv("TANDEM_KAFKA_ALERTS_TOPIC", topic)
    return main(["alerts", "--from-beginning", "--no-follow", "--idle-s", "4", *extra])


def test_duplicates_are_dropped_and_filters_apply(
    kafka_broker: Broker,
    alerts_topic: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(kafka_broker, alerts_topic, monkeypatch=monkeypatch) == ExitCode.OK
    shown = [orjson.loads(line)["alert_id"] for line in capsys.readouterr().out.splitlines()]
    assert shown == ["windows/0/1", "windows/0/2", "windows/0/3"]

    assert (
        run(
            kafka_broker,
            alerts_topic,
            "--key",
            "pump-1",
            "--min-score",
            "6",
            monkeypatch=monkeypatch,
        )
        == 0
    )
    assert [orjson.loads(line)["alert_id"] for line in capsys.readouterr().out.splitlines()] == [
        "windows/0/3"
    ]


def test_table_format(
    kafka_broker: Broker,
    alerts_topic: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(kafka_broker, alerts_topic, "--format", "table", monkeypatch=monkeypatch) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("time (UTC)") and len(lines) == 4
    assert "pump-2" in lines[2] and "9.50" in lines[2] and "temp[t-0] (61%)" in lines[2]
