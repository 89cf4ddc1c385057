"""Prometheus metrics and a live/ready health endpoint, served on ``[metrics].port``.

An operator must see, without reading logs, how many records came in, how many
were bad (dead-lettered) or alerted, how big batches are, where the time of a batch goes (per
stage), how far behind the consumer is (lag per partition), which threshold is in force and
which model version produced the scores. ``Metrics`` holds those series in its own
``CollectorRegistry`` (never the process-global one, so tests can build many);
``Health`` is what an orchestrator's probes ask: *live* (the run loop still turns) and *ready*
(the model is loaded and the consumer assigned); ``MetricsServer`` serves both over HTTP in a
daemon thread so a slow scrape never blocks a batch.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import structlog
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from streamer.errors import ConfigError
from streamer.records import BatchReport

log = structlog.get_logger(__name__)

OUTCOMES = ("scored", "dead_letter")
"""Values of the ``outcome`` label on ``tandem_records_total``."""

STAGES = ("decode", "score", "calibrate", "alerts", "produce", "checkpoint", "commit")
"""The run loop's stages (keys of ``BatchReport.seconds``), pre-created so they read 0."""

BATCH_RECORD_BUCKETS = (1.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0)
"""Upper bounds of ``tandem_batch_records``, in records per batch."""

STAGE_SECONDS_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
"""Upper bounds of ``tandem_stage_seconds``, in seconds: 100 µs (decode of a small batch) to 30 s
(a checkpoint or a flush waiting on a slow broker)."""


SHUTDOWN_POLL_S = 0.05
"""How often, in seconds, the server thread checks for ``stop``: bounds how long ``stop`` waits."""


class Metrics:
    """Every series tandem exports, in a registry of its own (``registry``).

    The run loop calls ``observe_batch`` once per batch, ``set_lag`` after each poll and
    ``set_threshold`` after calibrating; the sinks and checkpoint call the ``count_*`` methods.
    Safe to call from one writer thread while the server thread reads ``exposition``.
    """

    def __init__(self, model_name: str, model_version: str, calibrator: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.records = Counter(
            "tandem_records_total",
            "Records consumed, by outcome: scored, or dead_letter (could not be decoded).",
            ["outcome"],
            registry=r,
        )
        self.alerts = Counter("tandem_alerts_total", "Alerts produced.", registry=r)
        self.batches = Counter("tandem_batches_total", "Batches processed.", registry=r)
        self.batch_records = Histogram(
            "tandem_batch_records",
            "Records per batch.",
            buckets=BATCH_RECORD_BUCKETS,
            registry=r,
        )
        self.stage_seconds = Histogram(
            "tandem_stage_seconds",
            "Wall-clock seconds one batch spent in each stage of the run loop.",
            ["stage"],
            buckets=STAGE_SECONDS_BUCKETS,
            registry=r,
        )
        self.consumer_lag = Gauge(
            "tandem_consumer_lag_records",
            "Records between the committed position and the end of each assigned partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.threshold = Gauge(
            "tandem_threshold",
            "The global alert threshold in force, in score units; NaN while warming up.",
            registry=r,
        )
        self.model_info = Gauge(
            "tandem_model_info",
            "The model and calibrator producing scores; always 1, the labels carry the value.",
            ["name", "version", "calibrator"],
            registry=r,
        )
        self.last_batch_timestamp = Gauge(
            "tandem_last_batch_timestamp_seconds",
            "Unix time, in seconds, at which the last batch finished.",
            registry=r,
        )
        self.checkpoints = Counter(
            "tandem_checkpoints_total", "Calibrator checkpoints saved.", registry=r
        )
        self.fetch_restarts = Counter(
            "tandem_fetch_process_restarts_total",
            "Times the daemon restarted its fetch process after finding it gone.",
            registry=r,
        )
        self.keys_evicted = Counter(
            "tandem_keys_evicted_total",
            "Keys whose state was dropped to stay within [calibration].max_keys, by state: "
            "thresholds (the calibrator's), events (an open event or cooldown), readings (a "
            "readings input's buffer), memory (its memory of normal windows, [memory].max_keys).",
            ["state"],
            registry=r,
        )
        for state in ("thresholds", "events", "readings", "memory"):
            self.keys_evicted.labels(state=state)
        self.delivery_failures = Counter(
            "tandem_delivery_failures_total",
            "Produced messages (alerts, dead letters) the broker did not acknowledge.",
            registry=r,
        )
        self.model_changes = Counter(
            "tandem_model_changes_total",
            "New bundles found at [model].bundle while running, by outcome: swapped in, or "
            "refused (could not be loaded or checked; the running model stays).",
            ["outcome"],
            registry=r,
        )
        for outcome in ("swapped", "refused"):
            self.model_changes.labels(outcome=outcome)
        for outcome in OUTCOMES:
            self.records.labels(outcome=outcome)
        for stage in STAGES:
            self.stage_seconds.labels(stage=stage)
        self._model = (model_name, model_version, calibrator)
        self.model_info.labels(*self._model).set(1)
        self.threshold.set(float("nan"))
        self._totals: dict[Counter, int] = {}
        self._lag_lock = threading.Lock()
        self._lag_partitions: set[tuple[str, str]] = set()

    def set_model(self, name: str, version: str) -> None:
        """A new model scores from the next batch: ``tandem_model_info`` names it alone."""
        self.model_info.remove(*self._model)
        self._model = (name, version, self._model[2])
        self.model_info.labels(*self._model).set(1)
        self.model_changes.labels(outcome="swapped").inc()

    def count_model_refused(self) -> None:
        self.model_changes.labels(outcome="refused").inc()

    def observe_batch(self, report: BatchReport) -> None:
        """Count one batch: records by outcome, alerts, its size and each stage's seconds."""
        self.records.labels(outcome="scored").inc(report.scored)
        self.records.labels(outcome="dead_letter").inc(report.dead_letters)
        self.alerts.inc(report.alerts)
        self.batches.inc()
        self.batch_records.observe(report.records)
        for stage, seconds in report.seconds.items():
            self.stage_seconds.labels(stage=stage).observe(seconds)
        self.last_batch_timestamp.set(time.time())

    def set_lag(self, lag: Mapping[tuple[str, int], int]) -> None:
        """Replace the lag per ``(topic, partition)``, in records.

        Partitions absent from ``lag`` (revoked in a rebalance) are removed from the gauge, so a
        partition this process no longer owns does not report a stale lag forever.
        """
        current = {(topic, str(partition)): value for (topic, partition), value in lag.items()}
        with self._lag_lock:
            for topic, partition in self._lag_partitions - current.keys():
                self.consumer_lag.remove(topic, partition)
            for (topic, partition), value in current.items():
                self.consumer_lag.labels(topic=topic, partition=partition).set(value)
            self._lag_partitions = set(current)

    def set_threshold(self, value: float) -> None:
        """Record the global threshold in force, in score units (NaN while the calibrator warms)."""
        self.threshold.set(value)

    def count_checkpoint(self) -> None:
        """Count one saved calibrator checkpoint."""
        self.checkpoints.inc()

    def count_fetch_restarts(self, total: int) -> None:
        """Bring the restart counter to ``total``, the fetch process restarts so far."""
        self._count_to(self.fetch_restarts, total)

    def count_evictions(self, total: int, state: str = "thresholds") -> None:
        """Bring the eviction counter of ``state`` (thresholds, events, readings, memory) to
        ``total``, the keys whose state of that kind was dropped so far."""
        self._count_to(self.keys_evicted.labels(state=state), total)

    def _count_to(self, counter: Any, total: int) -> None:
        """Raise ``counter`` to ``total``, a running total kept elsewhere (by the source or
        the calibrator), by what it gained since the last call."""
        counted = self._totals.get(counter, 0)
        if total > counted:
            counter.inc(total - counted)
            self._totals[counter] = total

    def count_delivery_failure(self) -> None:
        """Count one produced message the broker did not acknowledge."""
        self.delivery_failures.inc()

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format (``CONTENT_TYPE_LATEST``)."""
        return generate_latest(self.registry)


class Health:
    """Liveness and readiness, shared between the run loop (writer) and the server (reader).

    *Live* means the run loop called ``beat`` within the last ``stall_s`` seconds: a loop stuck in
    a call that never returns stops beating and the orchestrator restarts the process.
    Construction counts as a beat, so startup has ``stall_s`` seconds of grace. *Ready* means
    ``mark_ready`` was called more recently than ``mark_not_ready`` and the loop is live.
    ``clock`` is a monotonic clock in seconds (injectable for tests); ``now`` arguments use it.
    """

    def __init__(self, stall_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_s = stall_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last_beat = clock()
        self._ready = False
        self._reason = "starting"

    def mark_ready(self, reason: str) -> None:
        """Declare the process ready (model loaded, partitions assigned); ``reason`` says why."""
        with self._lock:
            changed = not self._ready
            self._ready, self._reason = True, reason
        if changed:
            log.info("health_ready", reason=reason)

    def mark_not_ready(self, reason: str) -> None:
        """Declare the process not ready (e.g. rebalancing, shutting down); ``reason`` says why."""
        with self._lock:
            changed = self._ready or reason != self._reason
            self._ready, self._reason = False, reason
        if changed:
            log.info("health_not_ready", reason=reason)

    def beat(self) -> None:
        """Record that the run loop completed an iteration; called once per iteration."""
        now = self._clock()
        with self._lock:
            self._last_beat = now

    def seconds_since_beat(self, now: float | None = None) -> float:
        """Seconds since the last ``beat`` (or construction), by ``clock``."""
        at = self._clock() if now is None else now
        with self._lock:
            return max(0.0, at - self._last_beat)

    def live(self, now: float | None = None) -> bool:
        """True while the last beat is at most ``stall_s`` seconds old."""
        return self.seconds_since_beat(now) <= self.stall_s

    def ready(self, now: float | None = None) -> bool:
        """True when marked ready and live: a stalled loop is not ready either."""
        with self._lock:
            marked = self._ready
        return marked and self.live(now)

    def status(self, now: float | None = None) -> dict[str, Any]:
        """``live``, ``ready``, ``reason``, ``seconds_since_beat``: the health endpoints' body."""
        at = self._clock() if now is None else now
        with self._lock:
            reason = self._reason
        return {
            "live": self.live(at),
            "ready": self.ready(at),
            "reason": reason,
            "seconds_since_beat": round(self.seconds_since_beat(at), 3),
        }


class _Handler(BaseHTTPRequestHandler):
    """``/metrics``, ``/health/live`` and ``/health/ready``; 404 for anything else."""

    def __init__(self, metrics: Metrics, health: Health, *args: Any, **kwargs: Any) -> None:
        self.metrics, self.health = metrics, health
        super().__init__(*args, **kwargs)  # handles the request, so attributes go first

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/metrics":
            self._send(HTTPStatus.OK, CONTENT_TYPE_LATEST, self.metrics.exposition())
        elif path in ("/health/live", "/health/ready"):
            status = self.health.status()
            ok = status["live"] if path == "/health/live" else status["ready"]
            code = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
            self._send(code, "application/json", json.dumps(status).encode())
        else:
            self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n")

    def _send(self, code: HTTPStatus, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics_http_request", client=self.client_address[0], message=format % args)


class MetricsServer:
    """Serves ``metrics`` and ``health`` over HTTP from a daemon thread.

    ``port`` 0 binds an ephemeral port (tests); the bound one is ``port`` after ``start``.
    """

    def __init__(self, metrics: Metrics, health: Health, host: str, port: int) -> None:
        self.metrics, self.health = metrics, health
        self.host, self._requested_port = host, port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound TCP port; only known once started."""
        if self._server is None:
            raise RuntimeError("MetricsServer.port is known only after start(); call start()")
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Bind ``host:port`` and serve from a daemon thread. A port that is taken (or a host
        that is not this machine's) is a ``ConfigError`` naming the setting to change: the
        operator must act, and the CLI exits with its configuration status."""
        if self._server is not None:
            raise RuntimeError("MetricsServer already started; call stop() before starting again")
        handler = partial(_Handler, self.metrics, self.health)
        address = f"{self.host}:{self._requested_port}"
        try:
            server = ThreadingHTTPServer((self.host, self._requested_port), handler)
        except OSError as error:
            raise ConfigError(
                f"cannot serve metrics and health on {address}: {error.strerror or error}; "
                "set [metrics].port (TANDEM_METRICS_PORT) to a free port (0: any), or fix "
                "[metrics].host, or set [metrics].enabled = false"
            ) from None
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL_S},
            name="tandem-metrics",
            daemon=True,
        )
        self._thread.start()
        log.info("metrics_server_started", host=self.host, port=self.port)

    def stop(self) -> None:
        """Stop serving and release the port; does nothing if not started."""
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()
        self._server, self._thread = None, None
        log.info("metrics_server_stopped", host=self.host)
