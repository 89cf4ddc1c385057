"""``tandem alerts`` against the real broker, on both clients: duplicates dropped, filters
applied, both formats, and a viewer that follows from now sees only what comes after it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer

from streamer.broker import alert_reader
from streamer.cli.main import ExitCode, main
from streamer.config import KafkaConfig
from tests.conftest import Broker

CLIENTS = pytest.mark.parametrize("client", ["kafka-python", "librdkafka"])


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


def run(
    kafka_broker: Broker, topic: str, *extra: str, monkeypatch: pytest.MonkeyPatch, client: str
) -> int:
    monkeypatch.setenv("TANDEM_KAFKA_BOOTSTRAP", kafka_broker.bootstrap)
    monkeypatch.setenv("TANDEM_KAFKA_ALERTS_TOPIC", topic)
    monkeypatch.setenv("TANDEM_KAFKA_CLIENT", client)
    return main(["alerts", "--from-beginning", "--no-follow", "--idle-s", "4", *extra])


@CLIENTS
def test_duplicates_are_dropped_and_filters_apply(
    kafka_broker: Broker,
    alerts_topic: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    client: str,
) -> None:
    assert run(kafka_broker, alerts_topic, monkeypatch=monkeypatch, client=client) == ExitCode.OK
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
            client=client,
        )
        == 0
    )
    assert [orjson.loads(line)["alert_id"] for line in capsys.readouterr().out.splitlines()] == [
        "windows/0/3"
    ]


@CLIENTS
def test_table_format(
    kafka_broker: Broker,
    alerts_topic: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    client: str,
) -> None:
    assert (
        run(
            kafka_broker,
            alerts_topic,
            "--format",
            "table",
            monkeypatch=monkeypatch,
            client=client,
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("time (UTC)") and len(lines) == 4
    assert "pump-2" in lines[2] and "9.50" in lines[2] and "temp[t-0] (61%)" in lines[2]


class _Following:
    """Stands in for the reader's logger and tells when the viewer follows its partitions."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def info(self, event: str, **fields: Any) -> None:
        if event == "alerts_following":
            self.event.set()


@CLIENTS
def test_a_viewer_following_from_now_sees_only_later_alerts(
    kafka_broker: Broker,
    alerts_topic: str,
    monkeypatch: pytest.MonkeyPatch,
    client: str,
) -> None:
    """Three alerts are on the topic before the viewer starts; it shows only the one sent after
    it said it follows (the demo's order: follow, then replay)."""
    following = _Following()
    monkeypatch.setattr(alert_reader, "log", following)
    kafka = KafkaConfig(bootstrap=kafka_broker.bootstrap, alerts_topic=alerts_topic, client=client)

    def send_once_following() -> None:
        following.event.wait()
        producer = KafkaProducer(acks="all", **kafka_broker.client_options())
        producer.send(alerts_topic, key=b"pump-3", value=alert("windows/0/9", "pump-3", 7.0))
        producer.flush()
        producer.close()

    sender = threading.Thread(target=send_once_following, daemon=True)
    sender.start()
    stream = alert_reader.read_alerts(kafka, from_beginning=False, idle_s=None)
    try:
        first = next(stream)
    finally:
        stream.close()
        following.event.set()  # the sender ends even if the viewer failed before following
        sender.join()
    assert first["alert_id"] == "windows/0/9"
