"""``tandem train --topic``: retraining from what the daemon accepted, without a person in the
loop (README, "Updating a model").

The windows come from a range of the input topic, run through the daemon's own loop with the
model now in use (``--model``, else ``[model].bundle``): decoded by the same codec (readings cut
by the same windower), scored and judged. Dead letters and the windows that model flagged are
left out, so an anomaly is not learnt as normal. The new bundle is written next to the running
one (``<its directory>-<UTC time>``, or ``--out``); ``--promote`` then moves the symbolic link
the daemon watches to it, and a running daemon swaps it in (``streamer.broker.models``).
"""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import structlog
from numpy.typing import NDArray

from calibration.base import Flags
from detectors.base import Detector, Scores
from streamer.calibrators import build_calibrator, build_memory, calibrator_description
from streamer.cli.options import add_topic_range_options, model_bundle
from streamer.config import TandemConfig
from streamer.errors import ConfigError
from streamer.events import EventTracker, Judgement
from streamer.ingest.tables import WindowTable
from streamer.records import WindowBatch
from streamer.testing import ListSink, NoCheckpoints

log = structlog.get_logger(__name__)


def add_topic_options(train: argparse.ArgumentParser) -> None:
    """``--topic`` and its range, ``--model`` (the model judging the range) and ``--promote``."""
    topic = train.add_argument_group("training from a topic range (instead of --data)")
    add_topic_range_options(topic, "train on the windows of this topic the model in use accepts")
    topic.add_argument(
        "--model",
        type=Path,
        help="the model in use, which judges the range (default: [model].bundle)",
    )
    topic.add_argument(
        "--promote",
        action="store_true",
        help="move the --model symbolic link to the new bundle (a running daemon swaps it in)",
    )


class _Accepted:
    """A ``BatchObserver`` keeping the windows a batch did not flag."""

    def __init__(self) -> None:
        self.keys: list[NDArray[np.str_]] = []
        self.ts_ms: list[NDArray[np.int64]] = []
        self.windows: list[NDArray[np.float32]] = []
        self.flagged = 0

    def observe(
        self, batch: WindowBatch, scores: Scores, flags: Flags, judgement: Judgement
    ) -> None:
        calm = ~flags.flags
        self.flagged += int(np.count_nonzero(flags.flags))
        self.keys.append(batch.keys[calm])
        self.ts_ms.append(batch.ts_ms[calm])
        self.windows.append(batch.windows[calm])


def accepted_windows(
    args: argparse.Namespace, config: TandemConfig
) -> tuple[WindowTable, Detector, Path]:
    """The windows of the topic range that the model in use accepts (n, D), that model, and
    its bundle path as given (a link, for ``--promote``)."""
    from detectors.registry import load_detector
    from streamer.broker.range_source import parse_bound
    from streamer.broker.ranges import open_range
    from streamer.ingest.build import build_input
    from streamer.runner import Runner

    bundle = model_bundle(args.model, config.model.bundle)
    detector = load_detector(bundle, device=config.model.device)
    codec, windower = build_input(detector.feature_names, config)
    start = parse_bound(args.from_offset, args.from_time, "from")
    end = parse_bound(args.to_offset, args.to_time, "to")
    source = open_range(config.kafka, args.topic, start, end, config.batch.max_records)
    kept, dead = _Accepted(), ListSink("dead_letters")
    runner = Runner(
        source,
        codec,
        detector,
        build_calibrator(config.calibration, detector.held_out_scores),
        ListSink("alerts"),
        dead,
        NoCheckpoints(),
        EventTracker(
            config.alerts,
            detector.feature_names,
            {"name": detector.name_, "version": detector.version or "unsaved"},
            calibrator_description(config.calibration),
        ),
        observer=kept,
        windower=windower,
        memory=build_memory(config.memory, detector.memory_seed, detector.feature_names),
    )
    try:
        while runner.step() is not None:
            pass
    finally:
        source.close()
    windows = (
        np.concatenate(kept.windows) if kept.windows else np.empty((0, detector.window_length))
    )
    if not len(windows):
        raise ConfigError(f"--topic {args.topic}: no window in that range to train on")
    log.info(
        "training_windows_from_topic",
        topic=args.topic,
        accepted=len(windows),
        flagged_left_out=kept.flagged,
        dead_letters_left_out=len(dead.items),
        judged_by=detector.version,
    )
    table = WindowTable(
        keys=np.concatenate(kept.keys),
        ts_ms=np.concatenate(kept.ts_ms),
        windows=windows.astype(np.float32),
        feature_names=detector.feature_names,
    )
    return table, detector, bundle


def next_to(bundle: Path) -> Path:
    """Where a bundle retrained from ``bundle`` goes by default: beside the directory it
    resolves to, named after it and the UTC time (``v3-20261202T0315Z``)."""
    resolved = bundle.resolve()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return resolved.with_name(f"{resolved.name.split('-')[0]}-{stamp}")


def promote(link: Path, target: Path) -> None:
    """Point the symbolic link ``link`` at ``target`` in one step (a new link renamed over it),
    so a daemon watching it never sees it missing."""
    if not link.is_symlink():
        raise ConfigError(
            f"--promote: {link} is not a symbolic link; point the daemon at one "
            "(ln -s v1 models/pump/current) to roll models out"
        )
    staged = link.with_name(f".{link.name}.promoting")
    staged.unlink(missing_ok=True)
    staged.symlink_to(os.path.relpath(target.resolve(), link.parent.resolve()))
    staged.replace(link)
    log.info("model_promoted", link=str(link), target=str(target))
