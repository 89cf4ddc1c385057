"""Shared fixtures: one real Kafka broker per test session, and uniquely named topics per test.

Tests under ``tests/integration/`` are marked ``integration`` and ask for ``kafka_broker`` (directly
or through ``make_topic``). The broker is the project's own Apache Kafka (``scripts/kafka.sh
start``), or the cluster named by ``TANDEM_KAFKA_BOOTSTRAP``. If it cannot be reached the fixture
FAILS with the script's output and the broker log's tail: an integration test never skips.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before anything imports TensorFlow

from streamer.broker.admin import (
    NO_TIME_RETENTION,
    BrokerInfo,
    TopicSpec,
    create_topics,
    delete_topics,
    probe_broker,
    wait_for_broker,
)
from streamer.config import KafkaConfig, TandemConfig
from streamer.errors import BrokerUnavailableError

REPO = Path(__file__).resolve().parents[1]
KAFKA_SCRIPT = REPO / "scripts" / "kafka.sh"
_BROKER_DESCRIPTION = pytest.StashKey[str]()


@dataclass(frozen=True)
class Broker:
    """The cluster the integration tests run against."""

    bootstrap: str
    info: BrokerInfo
    description: str

    def client_options(self) -> dict[str, Any]:
        return KafkaConfig(bootstrap=self.bootstrap).client_options()

    def config(self, **sections: Mapping[str, Any]) -> TandemConfig:
        """A config pointing at this broker; ``sections`` override others, e.g. ``batch={...}``."""
        kafka = {"bootstrap": self.bootstrap, **sections.pop("kafka", {})}
        return TandemConfig.model_validate({"kafka": kafka, **sections})


def _script(
    *args: str,
    timeout_s: float = 300,
    env: Mapping[str, str] | None = None,
    unset: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """Run scripts/kafka.sh with this interpreter as its Python, extra ``env``, minus ``unset``."""
    merged = {**os.environ, "TANDEM_PYTHON": sys.executable, **(env or {})}
    for name in unset:
        merged.pop(name, None)
    return subprocess.run(
        [str(KAFKA_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=merged,
        check=False,
    )


def _start_local_broker() -> tuple[str, str, bool]:
    """Start (or find running) the project's broker; return bootstrap, version, started_here."""
    was_running = _script("status").returncode == 0
    started = _script("start")
    if started.returncode != 0:
        log_tail = _script("logs").stdout[-6000:]
        pytest.fail(
            f"scripts/kafka.sh start failed (exit {started.returncode}); integration tests "
            f"cannot run.\n--- script output ---\n{started.stdout}{started.stderr}"
            f"\n--- broker log (tail) ---\n{log_tail}",
            pytrace=False,
        )
    bootstrap = _script("bootstrap").stdout.strip()
    version = _script("version").stdout.strip()
    return bootstrap, version, not was_running


@pytest.fixture(scope="session")
def kafka_broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    """The session's broker: started once, stopped at the end only if this session started it."""
    external = os.environ.get("TANDEM_KAFKA_BOOTSTRAP")
    started_here = False
    if external:
        bootstrap = external
        try:
            info = wait_for_broker(KafkaConfig(bootstrap=bootstrap).client_options(), 60)
        except BrokerUnavailableError as error:
            pytest.fail(
                f"TANDEM_KAFKA_BOOTSTRAP={external} does not answer: {error}", pytrace=False
            )
        description = f"external cluster at {bootstrap} (protocol {info.api_version})"
    else:
        bootstrap, version, started_here = _start_local_broker()
        info = probe_broker(KafkaConfig(bootstrap=bootstrap).client_options())
        description = (
            f"Apache Kafka {version} (KRaft, scripts/kafka.sh) at {bootstrap}, "
            f"protocol {info.api_version}, cluster {info.cluster_id}"
        )
    request.config.stash[_BROKER_DESCRIPTION] = description
    yield Broker(bootstrap=bootstrap, info=info, description=description)
    if started_here:
        _script("stop")


@pytest.fixture
def make_topic(
    kafka_broker: Broker, request: pytest.FixtureRequest
) -> Iterator[Callable[..., str]]:
    """Create topics named after the test plus a random suffix; delete them when the test ends.

    Without time-based retention unless ``configs`` says otherwise: test data carries past
    timestamps, which the broker's retention check (30 s after it starts) would delete."""
    created: list[str] = []
    options = kafka_broker.client_options()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:120]

    def make(partitions: int = 1, configs: Mapping[str, str] | None = None) -> str:
        name = f"test.{stem}.{uuid.uuid4().hex[:8]}"
        settings = {**NO_TIME_RETENTION, **(configs or {})}
        create_topics(options, [TopicSpec(name, partitions=partitions, configs=settings)])
        created.append(name)
        return name

    yield make
    delete_topics(options, created)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Undo ``configure_logging`` (the CLI calls it) so no test writes to another's stream."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small cascade on 8-feature windows (two latent factors plus noise), saved as the bundle
    ``<tmp>/tiny``: for tests of the stages around the detector, not of the detector itself."""
    import numpy as np

    from detectors.cascade import CascadeDetector
    from detectors.spec import AutoencoderSpec, CascadeSpec

    rng = np.random.default_rng(0)
    base = rng.normal(size=(2000, 2)) @ rng.normal(size=(2, 8))
    windows = (base + rng.normal(0, 0.05, size=base.shape)).astype(np.float32)
    ae1, ae2 = AutoencoderSpec(hidden=(6,), latent=3), AutoencoderSpec(hidden=(), latent=1)
    detector = CascadeDetector(
        CascadeSpec(ae1=ae1, ae2=ae2, epochs=5), feature_names=[f"x{i}" for i in range(8)]
    )
    path = tmp_path_factory.mktemp("bundles") / "tiny"
    detector.fit(windows).save(path)
    return path


@pytest.fixture(scope="session")
def tiny_fusion_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A late fusion of two small cascades, one on features x0-x3 and one on x4-x7 of the
    ``tiny_bundle``'s kind of windows, saved as ``<tmp>/tiny-fusion``: any detector kind must run
    in the daemon unchanged."""
    import numpy as np

    from detectors.cascade import CascadeDetector
    from detectors.fusion import FusionDetector
    from detectors.members import load_member
    from detectors.spec import AutoencoderSpec, CascadeSpec, FusionSpec

    rng = np.random.default_rng(0)
    base = rng.normal(size=(2000, 2)) @ rng.normal(size=(2, 8))
    windows = (base + rng.normal(0, 0.05, size=base.shape)).astype(np.float32)
    names = [f"x{i}" for i in range(8)]
    directory = tmp_path_factory.mktemp("fusion")
    spec = CascadeSpec(
        ae1=AutoencoderSpec(hidden=(4,), latent=2),
        ae2=AutoencoderSpec(hidden=(), latent=1),
        epochs=5,
    )
    members = []
    for name, columns in (("left", slice(0, 4)), ("right", slice(4, 8))):
        CascadeDetector(spec, feature_names=names[columns]).fit(windows[:, columns]).save(
            directory / name
        )
        members.append(load_member(name, directory / name, None, names))
    fusion = FusionDetector(members, names, FusionSpec(mode="late", head=(8,), epochs=5))
    path = directory / "tiny-fusion"
    fusion.fit(windows).save(path)
    return path


@pytest.fixture(scope="session")
def tiny_detector(tiny_bundle: Path) -> Any:
    """The ``tiny_bundle`` loaded, as the daemon loads it."""
    from detectors.cascade import CascadeDetector

    return CascadeDetector.load(tiny_bundle, device="cpu")


def read_topic(
    broker: Broker,
    topic: str,
    done: Callable[[list[Any]], bool],
    timeout_s: float = 30.0,
    isolation_level: str = "read_uncommitted",
) -> list[Any]:
    """Every record of ``topic`` from the beginning, polling until ``done(records)`` or timeout.

    Assigns all partitions directly (no group), so nothing waits on a rebalance.
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        enable_auto_commit=False, isolation_level=isolation_level, **broker.client_options()
    )
    try:
        deadline = time.monotonic() + timeout_s
        partitions: list[TopicPartition] = []
        while not partitions and time.monotonic() < deadline:
            ids = consumer.partitions_for_topic(topic) or set()
            partitions = [TopicPartition(topic, p) for p in sorted(ids)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list[Any] = []
        while not done(records) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    integration_dir = REPO / "tests" / "integration"
    for item in items:
        if integration_dir in Path(item.path).parents:
            item.add_marker(pytest.mark.integration)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    description = config.stash.get(_BROKER_DESCRIPTION, None)
    line = description or "none (no integration test ran)"
    terminalreporter.write_sep("-", f"broker: {line}")
