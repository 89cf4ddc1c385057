"""Fixtures of the daemon tests: a deployment (topics, group, bundle) per test."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Broker
from tests.integration.daemons import Setup


@pytest.fixture
def setup(
    kafka_broker: Broker, make_topic: Callable[..., str], tiny_bundle: Path, tmp_path: Path
) -> Setup:
    """Two input partitions, two alert partitions, the tiny bundle, a fresh group."""
    return Setup(
        kafka_broker.bootstrap,
        input_topic=make_topic(partitions=2),
        alerts_topic=make_topic(partitions=2),
        dead_letter_topic=make_topic(),
        bundle=tiny_bundle,
        workdir=tmp_path,
    )
