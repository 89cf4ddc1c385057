"""Swapping a new model into a running runner: between batches, refusing broken bundles, with
fresh thresholds and checkpoints that name the new model."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

from detectors.cascade import CascadeDetector
from streamer.broker.models import ModelSwapper, ModelWatch
from streamer.checkpoints import PartitionCheckpoints, model_of
from streamer.config import TandemConfig
from streamer.ingest.codec import JsonCodec, Limits
from streamer.metrics import Metrics
from streamer.records import SourceRecord
from streamer.runner import Runner
from streamer.testing import ListSink, ListSource, MemoryStateStore
from tests.streamer.alerting import window_alerts
from tests.streamer.test_checkpoints import calibrator


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def point(link: Path, target: Path) -> None:
    """Move the symbolic link ``link`` to ``target`` in one step, as a deployment would."""
    staged = link.with_name(link.name + ".new")
    staged.symlink_to(target)
    staged.replace(link)


@pytest.fixture
def models(tmp_path: Path, tiny_bundle: Path) -> Path:
    return roll_out(tmp_path, tiny_bundle)


def roll_out(tmp_path: Path, tiny_bundle: Path) -> Path:
    """``<tmp>/models`` holding ``v1`` (the tiny bundle), ``v2`` (the same weights saved under
    another name, so another version), ``broken`` (a manifest that is not JSON) and
    ``current -> v1``."""
    root = tmp_path / "models"
    root.mkdir()
    shutil.copytree(tiny_bundle, root / "v1")
    CascadeDetector.load(tiny_bundle, device="cpu").save(root / "v2", name="tiny-v2")
    (root / "broken").mkdir()
    (root / "broken" / "bundle.json").write_text("{not json")
    (root / "current").symlink_to(root / "v1")
    return root


def feed(n: int) -> list[SourceRecord]:
    rng, codec = np.random.default_rng(4), JsonCodec(Limits(8))
    return [
        SourceRecord(
            "in", i % 2, i // 2, f"k{i % 4}".encode(), codec.encode(f"k{i % 4}", i, row), i
        )
        for i, row in enumerate(rng.normal(size=(n, 8)).astype(np.float32))
    ]


def test_a_new_bundle_is_swapped_in_between_batches_and_a_broken_one_refused(
    models: Path, tiny_detector: CascadeDetector
) -> None:
    clock, store = FakeClock(), MemoryStateStore()
    config = TandemConfig.model_validate({"model": {"device": "cpu"}})
    watch = ModelWatch(models / "current", interval_s=5.0, clock=clock)
    metrics = Metrics("tiny", tiny_detector.version or "", "quantile")
    runner = Runner(
        ListSource(feed(256), 32),
        JsonCodec(Limits(8)),
        tiny_detector,
        calibrator(),
        ListSink("alerts"),
        ListSink("dead"),
        PartitionCheckpoints(store, interval_s=3600.0),
        window_alerts(tiny_detector),
    )
    swapper = ModelSwapper(watch, config, metrics)
    runner.step()
    swapper.poll(runner)
    assert runner.detector is tiny_detector, "nothing changed"

    point(models / "current", models / "broken")
    swapper.poll(runner)
    assert runner.detector is tiny_detector, "not time to look yet"
    clock.now = 5.0
    with capture_logs() as logs:
        swapper.poll(runner)
    refused = [e for e in logs if e["event"] == "model_refused"]
    assert len(refused) == 1 and "not valid JSON" in refused[0]["reason"]
    assert runner.detector is tiny_detector, "the running model stays"
    assert _sample(metrics, "tandem_model_changes_total", outcome="refused") == 1
    clock.now = 10.0
    with capture_logs() as logs:
        swapper.poll(runner)
    assert not [e for e in logs if e["event"] == "model_refused"], "refused once, not again"

    runner.step()
    point(models / "current", models / "v2")
    clock.now = 15.0
    swapper.poll(runner)
    new = runner.detector
    assert new is not tiny_detector and new.version != tiny_detector.version
    assert runner.events.model == {"name": "tiny-v2", "version": new.version}
    assert runner.calibrator.keys == [], "fresh thresholds: none inherited"
    assert {model_of(saved.snapshot) for saved in store.saved.values()} == {new.version}
    assert _sample(metrics, "tandem_model_info", name="tiny-v2", version=new.version) == 1
    assert _sample(metrics, "tandem_model_info", name="tiny", version=tiny_detector.version) is None
    report = runner.step()
    assert report is not None and report.scored == 32
    alerts = runner.alert_sink.items  # type: ignore[attr-defined]
    assert alerts and alerts[-1].body["model"]["version"] == new.version


def _sample(metrics: Metrics, metric: str, **labels: object) -> float | None:
    if metric == "tandem_model_info":
        labels["calibrator"] = "quantile"
    return metrics.registry.get_sample_value(metric, {k: str(v) for k, v in labels.items()})
