"""A new model rolled out under a running daemon, against the real broker: swapped in between
batches, nothing lost or scored twice, the swap visible in metrics and alerts, a broken bundle
refused while the running model stays."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest

from streamer.cli.main import ExitCode, main
from tests.integration.daemons import (
    Daemon,
    Setup,
    calm_feed,
    produce,
    produce_in_background,
    wait_committed,
)
from tests.integration.test_daemon_faults import alerts_in
from tests.streamer.broker.test_models import point, roll_out


def test_a_model_rolled_out_mid_stream_is_swapped_in_between_batches(
    setup: Setup, tiny_bundle: Path, tmp_path: Path
) -> None:
    """2,000 windows/s for 8 s; the link moves to a broken bundle, then to a new version."""
    models = roll_out(tmp_path, tiny_bundle)
    setup.bundle, setup.model = models / "current", "watch_s = 0.5\n"
    total = 16_000
    windows = calm_feed(total, anomalies=range(500, total, 1000))
    daemon = Daemon(setup, "daemon")
    try:
        daemon.wait_for("daemon_started", timeout_s=180)  # TensorFlow's import on a busy machine
        producer = produce_in_background(
            setup.bootstrap, setup.input_topic, windows, 0, total, per_s=2000
        )
        wait_committed(setup, 3000, [daemon], timeout_s=180)
        point(models / "current", models / "broken")
        daemon.wait_for("model_refused")
        point(models / "current", models / "v2")
        daemon.wait_for("model_swapped")
        port = daemon.events("metrics_server_started")[0]["port"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            exposition = answer.read().decode()
        producer.join()
        wait_committed(setup, total, [daemon], timeout_s=300)
    finally:
        assert daemon.terminate() == 0, daemon.tail()
    old, new = (e["version"] for e in daemon.events("bundle_loaded"))
    assert old != new
    info = re.findall(r'^tandem_model_info\{[^}]*version="([^"]+)"[^}]*\} 1\.0$', exposition, re.M)
    assert info == [new], "the new version alone, from the swap on"
    assert re.search(r'^tandem_model_changes_total\{outcome="refused"\} 1\.0$', exposition, re.M)

    batches = daemon.events("batch_scored")
    assert sum(b["records"] for b in batches) == total, "every window scored once"
    versions = [b["model"] for b in batches]
    swap = versions.index(new)
    assert swap > 0 and versions == [old] * swap + [new] * (len(versions) - swap)

    alerted = alerts_in(setup.bootstrap, setup.alerts_topic, daemon.alerted())
    ids = [alert["alert_id"] for alert in alerted]
    assert len(ids) == len(set(ids)) == daemon.alerted(), "no alert lost or sent twice"
    assert {alert["model"]["version"] for alert in alerted} == {old, new}


def test_train_from_a_topic_range_leaves_flagged_windows_out_and_promotes_the_bundle(
    setup: Setup,
    tiny_bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``tandem train --topic --promote``: trained on the windows the model in use accepts,
    written beside it, and the link the daemon watches moved to it."""
    models = roll_out(tmp_path, tiny_bundle)
    total, anomalies = 3000, list(range(400, 3000, 300))
    produce(setup.bootstrap, setup.input_topic, calm_feed(total, anomalies=anomalies), 0, total)
    setup.bundle = models / "current"
    monkeypatch.setenv("TANDEM_TRAIN_EPOCHS", "2")
    monkeypatch.delenv("TANDEM_KAFKA_BOOTSTRAP", raising=False)  # the config names the broker
    argv = ["--log-format", "json", "train", "--config", str(setup.write_config())]
    argv += ["--topic", setup.input_topic, "--to-offset", "1000", "--promote"]
    assert main(argv) == ExitCode.OK
    out, err = capsys.readouterr()
    logged = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    chosen = next(e for e in logged if e["event"] == "training_windows_from_topic")
    assert chosen["flagged_left_out"] >= 1 and chosen["dead_letters_left_out"] == 0
    assert chosen["accepted"] + chosen["flagged_left_out"] == 2000, "1,000 of each partition"
    target = (models / "current").resolve()
    assert target.parent == models and target.name.startswith("v1-")
    manifest = json.loads((target / "bundle.json").read_text())
    assert (
        manifest["feature_names"]
        == json.loads((models / "v1" / "bundle.json").read_text())["feature_names"]
    )
    assert f"{models / 'current'} → {target}" in out.replace("\n", ""), "said, one line"

    assert main(["train", "--topic", setup.input_topic, "--data", "x.csv"]) == ExitCode.CONFIG
