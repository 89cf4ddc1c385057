"""Running ``tandem run`` as real processes in tests: config files, start/stop, feeds, and what
the group committed. Logs go to a file per process (JSON lines), read back with ``events``."""

from __future__ import annotations

import signal
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from kafka import KafkaProducer
from kafka.errors import KafkaError

from streamer.broker.admin import committed_offsets
from streamer.config import KafkaConfig
from streamer.demo.children import Child, child_environment
from streamer.errors import BrokerUnavailableError
from streamer.ingest.codec import JsonCodec, Limits

WIDTH = 8
"""Features per window of the tests' tiny bundle."""


@dataclass
class Setup:
    """One daemon deployment: topics, group, bundle, and calibration for a test."""

    bootstrap: str
    input_topic: str
    alerts_topic: str
    dead_letter_topic: str
    bundle: Path
    workdir: Path
    group: str = field(default_factory=lambda: f"daemon-{uuid.uuid4().hex[:8]}")
    max_records: int = 64
    transactional: bool = False
    calibration: str = (
        'method = "spot"\ntarget_rate = 0.001\nwindow = 2000\nwarmup = 600\nrefresh = 20\n'
        "per_key = true\ncheckpoint_interval_s = 0.5\n"
    )
    alerts: str = 'mode = "events"\nquiet = 1\n'
    """Events that close at the first calm window: each far-off anomaly opens its own."""
    stall_s: float = 60.0
    """``[metrics].stall_s``: how long without a loop iteration ``/health/live`` allows."""
    model: str = ""
    """More ``[model]`` settings (TOML lines)."""
    codec: str = ""
    """``[codec]`` settings (TOML lines)."""
    client: str = "kafka-python"
    """``[kafka].client``: kafka-python or librdkafka."""
    kafka: str = ""
    """More ``[kafka]`` settings (TOML lines)."""
    batch: str = ""
    """More ``[batch]`` settings (TOML lines)."""
    memory: str = ""
    """``[memory]`` settings (TOML lines)."""

    def write_config(self) -> Path:
        path = self.workdir / f"{self.group}.toml"
        path.write_text(
            f'[kafka]\nbootstrap = "{self.bootstrap}"\ninput_topic = "{self.input_topic}"\n'
            f'alerts_topic = "{self.alerts_topic}"\n'
            f'dead_letter_topic = "{self.dead_letter_topic}"\n'
            f'group_id = "{self.group}"\ntransactional = {str(self.transactional).lower()}\n'
            f'client = "{self.client}"\n{self.kafka}'
            f"[batch]\nmax_records = {self.max_records}\nmax_wait_ms = 100\n{self.batch}"
            f'[model]\nbundle = "{self.bundle}"\ndevice = "cpu"\n{self.model}'
            f"[calibration]\n{self.calibration}"
            f"[alerts]\n{self.alerts}"
            f"[codec]\n{self.codec}"
            f"[memory]\n{self.memory}"
            f"[metrics]\nport = 0\nstall_s = {self.stall_s}\n"
            f'[log]\nformat = "json"\n'
        )
        return path


class Daemon:
    """A ``tandem run`` subprocess (a ``Child``, as the demo runs it) with its log file,
    ``<workdir>/<name>.log``: its output, both streams in order, as JSON lines."""

    def __init__(self, setup: Setup, name: str) -> None:
        self.child = Child(
            [sys.executable, "-m", "streamer", "run", "--config", str(setup.write_config())],
            # the config file names the broker
            child_environment({}, unset=["TANDEM_KAFKA_BOOTSTRAP"]),
            Path.cwd(),
            setup.workdir / f"{name}.log",
            merge_output=True,
        )

    def _log(self) -> str:
        """The log so far; all of it once the process has exited."""
        if not self.child.running():
            self.child.drain()
        return self.child.log_path.read_text(encoding="utf-8")

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The events logged so far (``name``d ones only, when given)."""
        lines = self._log().split("\n")[:-1]  # the last: "", or a line still being written
        logged = [orjson.loads(line) for line in lines if line.startswith("{")]
        return [e for e in logged if name is None or e.get("event") == name]

    def tail(self, chars: int = 4000) -> str:
        return self._log()[-chars:]

    def alive(self) -> bool:
        return self.child.running()

    def wait_for(
        self,
        event: str,
        timeout_s: float = 90.0,
        where: Callable[..., bool] = bool,
        after: int = 0,
    ) -> None:
        """Wait until the log holds ``event`` (for which ``where(entry)`` holds) after its first
        ``after`` occurrences (``count(event)`` taken earlier: only a newer one will do)."""
        deadline = time.monotonic() + timeout_s
        while True:
            alive = self.alive()  # before reading: if it had exited, the log read is complete
            if any(where(e) for e in self.events(event)[after:]):
                return
            assert alive, f"daemon exited ({self.child.process.returncode}):\n{self.tail()}"
            assert time.monotonic() < deadline, f"no {event} in {timeout_s} s:\n{self.tail()}"
            time.sleep(0.2)

    def owned(self) -> set[str]:
        """The partitions (``topic/number``) it owns, as its assignment and revocation events
        tell: whole new assignments with kafka-python, increments with librdkafka's
        cooperative rebalancing."""
        owned: set[str] = set()
        for entry in self.events():
            if entry.get("event") == "partitions_assigned":
                owned |= set(entry["partitions"])
            elif entry.get("event") == "partitions_revoked":
                owned -= set(entry["partitions"])
        return owned

    def wait_owning(self, wanted: Callable[[int], bool], timeout_s: float = 90.0) -> None:
        """Wait until the number of partitions it owns satisfies ``wanted``."""
        deadline = time.monotonic() + timeout_s
        while not wanted(len(self.owned())):
            assert self.alive(), f"daemon exited:\n{self.tail()}"
            assert time.monotonic() < deadline, f"ownership not reached:\n{self.tail()}"
            time.sleep(0.2)

    def count(self, event: str) -> int:
        """How many ``event``s the log holds so far."""
        return len(self.events(event))

    def terminate(self, timeout_s: float = 60.0) -> int:
        """SIGTERM, then its exit status (killed after ``timeout_s``: then not 0)."""
        return self.child.stop(signal.SIGTERM, timeout_s)

    def kill(self) -> None:
        self.child.stop(signal.SIGKILL, timeout_s=30)

    def scored(self) -> int:
        return sum(e["records"] for e in self.events("batch_scored"))

    def alerted(self) -> int:
        return sum(e["alerts"] for e in self.events("batch_scored"))


def health(port: int, path: str) -> tuple[int, dict[str, Any]]:
    """A daemon's health endpoint's status code and JSON body (503 included)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, orjson.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, orjson.loads(error.read())


def feed(n: int, anomalies: Iterable[int] = (), keys: int = 8, seed: int = 3) -> np.ndarray:
    """``n`` windows (n, WIDTH) of calm noise with far-off ``anomalies`` (row indices)."""
    windows = np.random.default_rng(seed).normal(0, 0.3, size=(n, WIDTH)).astype(np.float32)
    windows[list(anomalies)] += 30.0
    return windows


def key_of(i: int, keys: int = 8) -> str:
    return f"s{i % keys}"


def produce(
    bootstrap: str,
    topic: str,
    windows: np.ndarray,
    first: int,
    last: int,
    per_s: float | None = None,
) -> None:
    """Send windows ``first``..``last - 1``, keyed ``s<i % 8>``, event time ``i``; at ``per_s``
    windows per second when given, else at once."""
    codec = JsonCodec(Limits(WIDTH))
    producer = KafkaProducer(acks="all", bootstrap_servers=bootstrap, linger_ms=5)
    started = time.monotonic()
    for i in range(first, last):
        key = key_of(i)
        producer.send(topic, key=key.encode(), value=codec.encode(key, i, windows[i]))
        if per_s is not None and (i - first) % 50 == 49:
            producer.flush()
            time.sleep(max(started + (i - first + 1) / per_s - time.monotonic(), 0.0))
    producer.flush()
    producer.close()


def produce_in_background(*args: Any, **kwargs: Any) -> threading.Thread:
    """``produce`` in a thread (join it before relying on what it sent)."""
    thread = threading.Thread(target=produce, args=args, kwargs=kwargs, daemon=True)
    thread.start()
    return thread


def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset per partition of ``topic`` (missing: nothing committed)."""
    return committed_offsets(KafkaConfig(bootstrap=bootstrap).client_options(), group, topic)


def wait_committed(
    setup: Setup, total: int, daemons: Iterable[Daemon], timeout_s: float = 120.0
) -> None:
    """Wait until the group committed ``total`` records of the input topic in all."""
    running = list(daemons)
    deadline = time.monotonic() + timeout_s
    while _committed_or_zero(setup) < total:
        for daemon in running:
            assert daemon.alive(), f"daemon exited:\n{daemon.tail()}"
        assert time.monotonic() < deadline, "not committed in time:\n" + "\n".join(
            d.tail(2000) for d in running
        )
        time.sleep(0.3)


def _committed_or_zero(setup: Setup) -> int:
    """The committed total, or 0 while the broker cannot say (say, just after its restart)."""
    try:
        return sum(committed(setup.bootstrap, setup.group, setup.input_topic).values())
    except (KafkaError, BrokerUnavailableError):  # the admin client could not bootstrap yet
        return 0


def calm_feed(n: int, anomalies: Iterable[int] = (), seed: int = 3) -> np.ndarray:
    """``n`` windows (n, WIDTH) like the tiny bundle's training data (its two latent factors
    plus noise; tests/conftest.py), so the bundle's held-out scores describe them, with
    ``anomalies`` (row indices) that break the factors."""
    tiny = np.random.default_rng(0)  # the tiny bundle's factors
    tiny.normal(size=(2000, 2))
    rng = np.random.default_rng(seed)
    windows = rng.normal(size=(n, 2)) @ tiny.normal(size=(2, WIDTH))
    windows += rng.normal(0, 0.05, size=windows.shape)
    for row in anomalies:
        windows[row] += rng.normal(0, 3, size=WIDTH)
    return windows.astype(np.float32)
