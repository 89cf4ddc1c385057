"""``tandem replay`` against the real broker: every window arrives, keyed by entity, stamped
with the data's own time, in time order per entity, decodable by the daemon's codec, and paced
by the data's time when asked."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from streamer.cli.main import ExitCode, main
from streamer.ingest.codec import JsonCodec, Limits
from streamer.records import SourceRecord
from tests.conftest import Broker, read_topic

START_MS = 1_764_000_000_000


def windows_file(tmp_path: Path, per_key: int = 40) -> tuple[Path, pd.DataFrame]:
    """Two sensors, one window a second each, the file grouped by sensor (not in time order)."""
    rng = np.random.default_rng(3)
    frames = []
    for k, key in enumerate(["pump-1", "pump-2"]):
        frame = pd.DataFrame(rng.normal(size=(per_key, 4)).round(3), columns=list("abcd"))
        frame.insert(0, "ts", START_MS + 1000 * np.arange(per_key) + 500 * k)
        frame.insert(0, "key", key)
        frames.append(frame)
    data = pd.concat(frames, ignore_index=True)
    path = tmp_path / "windows.csv"
    data.to_csv(path, index=False)
    return path, data


@pytest.mark.parametrize("client", ["kafka-python", "librdkafka"])
def test_every_window_arrives_keyed_and_stamped_with_its_own_time(
    kafka_broker: Broker,
    make_topic: Callable[..., str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    client: str,
) -> None:
    path, data = windows_file(tmp_path)
    topic = make_topic(partitions=2)
    monkeypatch.setenv("TANDEM_KAFKA_BOOTSTRAP", kafka_broker.bootstrap)
    monkeypatch.setenv("TANDEM_KAFKA_CLIENT", client)
    assert main(["replay", "--data", str(path), "--topic", topic]) == ExitCode.OK
    records = read_topic(kafka_broker, topic, lambda got: len(got) >= len(data))
    assert len(records) == len(data)
    batch, dead = JsonCodec(Limits(4)).decode(
        [SourceRecord(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp) for r in records]
    )
    assert dead == []
    assert all(r.key.decode() == key for r, key in zip(records, batch.keys.tolist(), strict=True))
    assert [r.timestamp for r in records] == batch.ts_ms.tolist(), "record time = the data's time"
    for key in ("pump-1", "pump-2"):
        mine = batch.keys == key
        expected = data[data.key == key]
        assert batch.ts_ms[mine].tolist() == expected.ts.tolist(), f"{key} in time order"
        np.testing.assert_allclose(batch.windows[mine], expected[list("abcd")], atol=1e-6)


def test_both_clients_put_a_key_on_the_same_partition(
    kafka_broker: Broker,
    make_topic: Callable[..., str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A feed replayed by either client reaches the daemon's partitions the same way, so
    switching clients does not move a key (and its calibrator state) to another partition."""
    rng = np.random.default_rng(5)
    keys = [f"sensor-{i}" for i in range(12)]
    data = pd.DataFrame(rng.normal(size=(len(keys), 4)).round(3), columns=list("abcd"))
    data.insert(0, "ts", START_MS + 1000 * np.arange(len(keys)))
    data.insert(0, "key", keys)
    path = tmp_path / "keys.csv"
    data.to_csv(path, index=False)
    monkeypatch.setenv("TANDEM_KAFKA_BOOTSTRAP", kafka_broker.bootstrap)
    placed = {}
    for client in ("kafka-python", "librdkafka"):
        topic = make_topic(partitions=4)
        monkeypatch.setenv("TANDEM_KAFKA_CLIENT", client)
        assert main(["replay", "--data", str(path), "--topic", topic]) == ExitCode.OK
        records = read_topic(kafka_broker, topic, lambda got: len(got) >= len(keys))
        placed[client] = {r.key.decode(): r.partition for r in records}
    assert placed["kafka-python"] == placed["librdkafka"]
    assert len(set(placed["kafka-python"].values())) > 1, "the keys spread over partitions"


def test_speed_paces_the_replay_by_the_data_time(
    kafka_broker: Broker,
    make_topic: Callable[..., str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, data = windows_file(tmp_path, per_key=21)  # 20.5 s of data
    topic = make_topic()
    monkeypatch.setenv("TANDEM_KAFKA_BOOTSTRAP", kafka_broker.bootstrap)
    started = time.monotonic()
    assert main(["replay", "--data", str(path), "--topic", topic, "--speed", "10"]) == 0
    assert time.monotonic() - started >= 2.0, "20.5 s of data at 10x takes at least 2 s"
    records = read_topic(kafka_broker, topic, lambda got: len(got) >= len(data))
    assert [r.timestamp for r in records] == sorted(data.ts.tolist()), "sent in time order"


def test_a_bad_pace_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    path, _ = windows_file(tmp_path)
    assert main(["replay", "--data", str(path), "--rate", "0"]) == ExitCode.CONFIG
    assert main(["replay", "--data", str(path), "--rate", "5", "--speed", "2"]) == ExitCode.CONFIG
