"""Cascade against the three fusions on a feed whose two channel groups break differently.

A generated series of 8 channels per sensor: spikes and level shifts hit channels 0-3 only,
frozen readings and correlation breaks hit channels 4-7 only. Everything runs through the CLI,
as a user would run it:

1. ``tandem train --features ch0,…,ch3`` and ``--features ch4,…,ch7``: two member cascades,
   one per group, trained apart (the "autoencoders the user already trusts");
2. ``tandem train`` of the cascade on all 8 channels, and ``--detector fusion-concat|weighted|
   late`` over the two members, each on the same clean windows, each learning anomaly kinds
   from the labelled anomalies of the training file;
3. ``tandem backtest`` of each bundle over the whole series (training part and the rest).

The training file is the series' first ``--train-share`` of steps (its clean half and the
anomalies after it); kinds are scored on the labelled windows of later steps only, events no
classifier saw. Prints one JSON document: per detector, event F1, false alarms per 10,000 normal
windows and alerts (as backtested, and at the warm-up's threshold kept: see ``WARMUP``),
training seconds, and the kind classifier's accuracy per kind. About 5 minutes on 2 cores.

    .venv/bin/python bench/eval_fusion.py [--steps 30000] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

KIND_CHANNELS = {
    "spike": [0, 1, 2, 3],
    "level_shift": [0, 1, 2, 3],
    "frozen": [4, 5, 6, 7],
    "correlation_break": [4, 5, 6, 7],
}
WARMUP = 2000
"""Windows (all sensors) before SPOT's first threshold: clean ones.

Two sets of metrics per detector: the backtest's own (SPOT as the daemon runs it, learning from
every unflagged score) and those of the threshold SPOT fitted on its clean warm-up, kept for the
whole series. With anomalies this dense SPOT also learns the scores of anomalies it missed and
its threshold climbs (a limit of its rare-anomaly assumption, not of a detector), so the kept
threshold is the one that compares the detectors' separation at one false-alarm target."""
GROUPS = {"left": "ch0,ch1,ch2,ch3", "right": "ch4,ch5,ch6,ch7"}
DETECTORS = ("cascade", "fusion-concat", "fusion-weighted", "fusion-late")
WINDOW = 16
CONFIG = """
[calibration]
method = "spot"
target_rate = {target_rate}
warmup = {warmup}
window = 10000
refresh = 256

[train]
epochs = {epochs}
patience = 6

[train.ae1]
hidden = [48]
latent = 12

[train.ae2]
hidden = [8]
latent = 4

[fusion]
epochs = {epochs}
patience = 6
head = [64]
"""


def tandem(*argv: str) -> None:
    """Run one ``tandem`` command in this process; a non-zero exit is an error."""
    from streamer.cli.main import main

    status = main([*argv])
    if status != 0:
        raise RuntimeError(f"tandem {' '.join(argv)} exited {status}")


def generate(
    steps: int, keys: int, seed: int, directory: Path, train_share: float, anomaly_rate: float
) -> Path:
    """Write ``series.csv`` (all steps) and ``train.csv`` (the first ``train_share``)."""
    from streamer.demo.synthetic import sensor_series

    frame = sensor_series(
        steps,
        n_keys=keys,
        channels=8,
        anomaly_rate=anomaly_rate,
        clean_fraction=0.5,
        seed=seed,
        kind_channels=KIND_CHANNELS,
    )
    frame.to_csv(directory / "series.csv", index=False)
    stamps = frame["ts"]
    cut = stamps.min() + (stamps.max() - stamps.min()) * train_share
    frame[stamps <= cut].to_csv(directory / "train.csv", index=False)
    return directory / "series.csv"


def train_all(directory: Path, config: Path, train_fraction: float) -> dict[str, float]:
    """Train the members, the cascade and the fusions; seconds per bundle."""
    common = ["--config", str(config), "--data", str(directory / "train.csv")]
    common += ["--window", str(WINDOW), "--train-fraction", f"{train_fraction:.4f}"]
    seconds: dict[str, float] = {}
    for name, channels in GROUPS.items():
        started = time.perf_counter()
        tandem(
            "train", *common, "--features", channels, "--no-kinds", "--out", str(directory / name)
        )
        seconds[f"member {name}"] = time.perf_counter() - started
    members = [f"{name}={directory / name}" for name in GROUPS]
    for kind in DETECTORS:
        started = time.perf_counter()
        extra = [] if kind == "cascade" else ["--detector", kind]
        for member in [] if kind == "cascade" else members:
            extra += ["--member", member]
        tandem("train", *common, *extra, "--out", str(directory / kind))
        seconds[kind] = time.perf_counter() - started
    return seconds


def backtest(directory: Path, config: Path, kind: str, split_ms: int) -> dict[str, Any]:
    """Backtest ``kind``'s bundle over the whole series; its metrics and kind accuracy."""
    out = directory / f"report-{kind}"
    tandem(
        "backtest",
        "--config",
        str(config),
        "--data",
        str(directory / "series.csv"),
        "--window",
        str(WINDOW),
        "--model",
        str(directory / kind),
        "--out",
        str(out),
    )
    report = json.loads((out / "report.json").read_text())
    bundle = json.loads((directory / kind / "bundle.json").read_text())
    first_threshold = report["thresholds"]["global"][0][1]
    static, kinds = rescored(directory, kind, first_threshold, split_ms)
    return {
        "spot_adaptive": _metrics(report["metrics"]),
        "warm_up_threshold": {"threshold": first_threshold, **_metrics(static)},
        "windows": report["counts"]["windows"],
        "mix_weights": bundle.get("mix_weights"),
        "kinds": kinds,
        "classifier_held_out": (bundle.get("kinds") or {}).get("training", {}),
    }


def _metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_f1": round(metrics["event_f1"], 3),
        "event_recall": round(metrics["event_recall"], 3),
        "event_precision": round(metrics["event_precision"], 3),
        "false_alarms_per_10k": round(metrics["false_alarms_per_10k"], 2),
        "point_f1": round(metrics["f1"], 3),
        "alerts": metrics["alerts"],
        **({"roc_auc": metrics["roc_auc"]} if "roc_auc" in metrics else {}),
    }


def rescored(
    directory: Path, kind: str, threshold: float, split_ms: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every window scored by the bundle directly, in the backtest's order: the metrics of the
    warm-up's threshold kept for the whole series, and how often the kind classifier names the
    right kind of a labelled window after the training file (events no classifier saw), per
    kind, over every such window rather than only alerts."""
    from detectors.registry import load_detector
    from streamer.backtest.events import evaluate
    from streamer.ingest.tables import load_windows

    table = load_windows(directory / "series.csv", WINDOW).in_time_order()
    assert table.kinds is not None and table.labels is not None
    scores = load_detector(directory / kind, device="cpu").score(table.windows)
    flags = scores.score > threshold
    flags[:WARMUP] = False
    static = evaluate(table.keys, table.ts_ms, flags, table.labels).to_dict()
    static["roc_auc"] = _auc(table.labels, scores.score, table.kinds)
    unseen = np.flatnonzero((table.ts_ms > split_ms) & (table.kinds != ""))
    answer = scores.kinds(unseen)
    if answer is None:
        return static, {}
    said, truth = np.asarray(answer[0]), table.kinds[unseen]
    per_kind = {
        name: {"windows": int((truth == name).sum()), "accuracy": _share(said, truth, name)}
        for name in KIND_CHANNELS
    }
    overall = round(float(np.mean(said == truth)), 3)
    return static, {"windows": len(unseen), "accuracy": overall, **per_kind}


def _auc(labels: np.ndarray, scores: np.ndarray, kinds: np.ndarray) -> dict[str, float]:
    """Point-wise ROC-AUC of the scores (no threshold): overall and per kind (that kind's
    windows against every normal one)."""
    from sklearn.metrics import roc_auc_score

    normal = labels == 0
    result = {"all": round(float(roc_auc_score(labels, scores)), 4)}
    for name in KIND_CHANNELS:
        chosen = normal | (kinds == name)
        result[name] = round(float(roc_auc_score(labels[chosen], scores[chosen])), 4)
    return result


def _share(said: np.ndarray, truth: np.ndarray, name: str) -> float | None:
    chosen = truth == name
    return round(float(np.mean(said[chosen] == name)), 3) if chosen.any() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30_000, help="steps per sensor")
    parser.add_argument("--keys", type=int, default=2, help="sensors")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--target-rate", type=float, default=1e-4)
    parser.add_argument("--train-share", type=float, default=0.75, help="of steps, for training")
    parser.add_argument("--anomaly-rate", type=float, default=0.08, help="after the clean half")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--workdir", type=Path, help="keep data, bundles and reports here")
    args = parser.parse_args(argv)
    os.environ.setdefault("TANDEM_LOG_LEVEL", "warning")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="eval_fusion.") as scratch:
        directory = args.workdir or Path(scratch)
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "tandem.toml"
        config.write_text(
            CONFIG.format(target_rate=args.target_rate, epochs=args.epochs, warmup=WARMUP)
        )
        generate(args.steps, args.keys, args.seed, directory, args.train_share, args.anomaly_rate)
        series = pd.read_csv(directory / "series.csv", usecols=["ts"])
        split_ms = int(
            series["ts"].min() + (series["ts"].max() - series["ts"].min()) * args.train_share
        )
        # The clean half of the series, as a share of the training file.
        seconds = train_all(directory, config, 0.5 / args.train_share - 0.01)
        results = {kind: backtest(directory, config, kind, split_ms) for kind in DETECTORS}
    document = {
        "feed": {
            "steps_per_sensor": args.steps,
            "sensors": args.keys,
            "channels": 8,
            "window": WINDOW,
            "kind_channels": KIND_CHANNELS,
            "train_share": args.train_share,
            "anomaly_rate": args.anomaly_rate,
            "seed": args.seed,
        },
        "calibration": {
            "method": "spot",
            "target_rate": args.target_rate,
            "warmup": WARMUP,
            "window": 10000,
            "warm_up_threshold": "the first threshold (fitted on the warm-up), kept throughout",
        },
        "train_seconds": {k: round(v, 1) for k, v in seconds.items()},
        "detectors": results,
        "seconds": round(time.perf_counter() - started, 1),
    }
    text = json.dumps(document, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
