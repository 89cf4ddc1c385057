"""Metrics, health and the HTTP endpoint that serves them, on an ephemeral port (no broker)."""

from __future__ import annotations

import json
import math
import socket
import urllib.request
from collections.abc import Iterator
from urllib.error import HTTPError

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from structlog.testing import capture_logs

from streamer.errors import ConfigError
from streamer.metrics import Health, Metrics, MetricsServer
from streamer.records import BatchReport


def fetch(port: int, path: str) -> tuple[int, str, bytes]:
    """Status, content type and body of ``GET path``; error statuses are returned, not raised."""
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except HTTPError as error:
        with error:
            return error.code, error.headers["Content-Type"], error.read()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics("cascade", "2024-06-01.3", "evt")


@pytest.fixture
def clock() -> list[float]:
    """A settable monotonic clock, in seconds: ``clock[0] = t``."""
    return [1000.0]


@pytest.fixture
def health(clock: list[float]) -> Health:
    return Health(stall_s=5.0, clock=lambda: clock[0])


@pytest.fixture
def server(metrics: Metrics, health: Health) -> Iterator[MetricsServer]:
    served = MetricsServer(metrics, health, "127.0.0.1", 0)
    served.start()
    yield served
    served.stop()


def report(records: int, scored: int, alerts: int, dead: int, **seconds: float) -> BatchReport:
    return BatchReport(
        records=records, scored=scored, alerts=alerts, dead_letters=dead, seconds=seconds
    )


def test_observe_batch_counts_records_alerts_batches_and_stage_seconds(metrics: Metrics) -> None:
    value = metrics.registry.get_sample_value
    assert value("tandem_records_total", {"outcome": "scored"}) == 0
    assert value("tandem_stage_seconds_count", {"stage": "commit"}) == 0

    metrics.observe_batch(report(100, 97, 2, 3, decode=0.002, score=0.5, commit=0.01))
    metrics.observe_batch(report(20, 20, 1, 0, decode=0.004, score=0.25))

    assert value("tandem_records_total", {"outcome": "scored"}) == 117
    assert value("tandem_records_total", {"outcome": "dead_letter"}) == 3
    assert value("tandem_alerts_total") == 3
    assert value("tandem_batches_total") == 2
    assert value("tandem_batch_records_count") == 2
    assert value("tandem_batch_records_sum") == 120
    assert value("tandem_batch_records_bucket", {"le": "16.0"}) == 0
    assert value("tandem_batch_records_bucket", {"le": "64.0"}) == 1
    assert value("tandem_batch_records_bucket", {"le": "256.0"}) == 2
    assert value("tandem_stage_seconds_count", {"stage": "decode"}) == 2
    assert value("tandem_stage_seconds_sum", {"stage": "decode"}) == pytest.approx(0.006)
    assert value("tandem_stage_seconds_sum", {"stage": "score"}) == pytest.approx(0.75)
    assert value("tandem_stage_seconds_count", {"stage": "commit"}) == 1
    assert value("tandem_stage_seconds_count", {"stage": "produce"}) == 0
    stamp = value("tandem_last_batch_timestamp_seconds")
    assert stamp is not None and stamp > 1.6e9


def test_model_info_threshold_and_simple_counters(metrics: Metrics) -> None:
    value = metrics.registry.get_sample_value
    labels = {"name": "cascade", "version": "2024-06-01.3", "calibrator": "evt"}
    assert value("tandem_model_info", labels) == 1
    warming = value("tandem_threshold")
    assert warming is not None and math.isnan(warming)
    metrics.set_threshold(4.25)
    assert value("tandem_threshold") == 4.25
    metrics.count_checkpoint()
    metrics.count_checkpoint()
    metrics.count_delivery_failure()
    assert value("tandem_checkpoints_total") == 2
    assert value("tandem_delivery_failures_total") == 1


def test_each_metrics_owns_its_registry() -> None:
    first, second = Metrics("a", "1", "evt"), Metrics("b", "2", "quantile")
    first.count_checkpoint()
    assert first.registry.get_sample_value("tandem_checkpoints_total") == 1
    assert second.registry.get_sample_value("tandem_checkpoints_total") == 0


def test_set_lag_replaces_the_partition_set(metrics: Metrics) -> None:
    def lag(topic: str, partition: int) -> float | None:
        labels = {"topic": topic, "partition": str(partition)}
        return metrics.registry.get_sample_value("tandem_consumer_lag_records", labels)

    metrics.set_lag({("feed", 0): 10, ("feed", 1): 20, ("other", 0): 5})
    assert (lag("feed", 0), lag("feed", 1), lag("other", 0)) == (10, 20, 5)

    metrics.set_lag({("feed", 1): 7, ("feed", 2): 1})
    assert lag("feed", 0) is None
    assert lag("other", 0) is None
    assert (lag("feed", 1), lag("feed", 2)) == (7, 1)

    metrics.set_lag({})
    assert b"tandem_consumer_lag_records{" not in metrics.exposition()


def test_health_live_follows_beats_and_ready_follows_marks(
    health: Health, clock: list[float]
) -> None:
    assert health.live()
    assert not health.ready()
    assert health.status()["reason"] == "starting"
    health.mark_ready("partitions assigned")
    assert health.ready()
    assert health.live(now=1005.0)
    assert not health.live(now=1005.5)
    clock[0] = 1010.0
    assert not health.live()
    assert not health.ready()
    health.beat()
    assert health.status() == {
        "live": True,
        "ready": True,
        "reason": "partitions assigned",
        "seconds_since_beat": 0.0,
    }
    health.mark_not_ready("rebalancing")
    assert not health.ready()
    assert health.status()["reason"] == "rebalancing"


def test_server_serves_metrics_in_the_prometheus_text_format(
    server: MetricsServer, metrics: Metrics
) -> None:
    metrics.observe_batch(report(5, 4, 1, 1, decode=0.001))
    code, content_type, body = fetch(server.port, "/metrics")
    assert code == 200
    assert content_type == CONTENT_TYPE_LATEST
    text = body.decode()
    assert 'tandem_records_total{outcome="scored"} 4.0' in text
    assert 'tandem_records_total{outcome="dead_letter"} 1.0' in text
    assert "tandem_model_info{" in text


def test_live_is_200_after_a_beat_and_503_when_stalled(
    server: MetricsServer, health: Health, clock: list[float]
) -> None:
    health.beat()
    code, content_type, body = fetch(server.port, "/health/live")
    assert (code, content_type) == (200, "application/json")
    assert json.loads(body)["live"] is True
    clock[0] += 6.0
    code, _, body = fetch(server.port, "/health/live")
    assert code == 503
    assert json.loads(body) == {
        "live": False,
        "ready": False,
        "reason": "starting",
        "seconds_since_beat": 6.0,
    }


def test_ready_is_503_until_marked_ready(server: MetricsServer, health: Health) -> None:
    code, _, body = fetch(server.port, "/health/ready")
    assert code == 503
    assert json.loads(body)["ready"] is False
    health.mark_ready("model loaded")
    code, _, body = fetch(server.port, "/health/ready")
    assert code == 200
    assert json.loads(body)["reason"] == "model loaded"


@pytest.mark.parametrize("path", ["/", "/metric", "/health", "/health/live/x", "/favicon.ico"])
def test_other_paths_are_404(server: MetricsServer, path: str) -> None:
    assert fetch(server.port, path)[0] == 404


def test_start_logs_and_stop_releases_the_port(metrics: Metrics, health: Health) -> None:
    served = MetricsServer(metrics, health, "127.0.0.1", 0)
    with pytest.raises(RuntimeError, match="start"):
        _ = served.port
    with capture_logs() as events:
        served.start()
    port = served.port
    assert port > 0
    started = [e for e in events if e["event"] == "metrics_server_started"]
    assert started == [
        {"event": "metrics_server_started", "host": "127.0.0.1", "port": port, "log_level": "info"}
    ]
    with capture_logs() as requests:
        assert fetch(port, "/metrics")[0] == 200
    assert any(e["event"] == "metrics_http_request" for e in requests)
    served.stop()
    served.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT, not LISTEN
        probe.bind(("127.0.0.1", port))
        probe.listen()


def test_a_port_already_taken_is_a_config_error_naming_the_setting(
    metrics: Metrics, health: Health
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        served = MetricsServer(metrics, health, "127.0.0.1", port)
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port}: .*set \\[metrics\\].port"):
            served.start()
    served.stop()  # nothing was started: nothing to stop
