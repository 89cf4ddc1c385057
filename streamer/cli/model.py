"""``tandem generate``, ``tandem train`` and ``tandem score``: data and models, no broker needed.

Each command takes the parsed arguments and the loaded config, prints its result for a person on
stdout, and returns an exit status.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import structlog
from numpy.typing import NDArray
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from detectors.base import Scores
from detectors.spec import DETECTOR_KINDS, TrainingSpec
from streamer.backtest.times import utc_text
from streamer.cli.options import add_config_option, add_data_options, model_bundle
from streamer.cli.retrain import accepted_windows, add_topic_options, next_to, promote
from streamer.config import TandemConfig
from streamer.demo.synthetic import injected_events, sensor_series
from streamer.errors import ConfigError
from streamer.ingest.tables import WindowTable, load_windows, write_table

log = structlog.get_logger(__name__)

if TYPE_CHECKING:  # the commands import Keras when they run, so `tandem --help` stays quick
    from detectors.bundled import BundledDetector
    from detectors.members import Member
    from detectors.registry import DetectorKind


def add_model_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``generate``, ``train`` and ``score`` on the CLI's sub-command parser."""
    generate = commands.add_parser(
        "generate", help="write a generated multichannel sensor series with labelled anomalies"
    )
    generate.add_argument("--out", type=Path, required=True, help=".csv or .parquet file")
    generate.add_argument("--steps", type=int, default=20_000, help="steps per sensor")
    generate.add_argument("--keys", type=int, default=4, help="how many sensors")
    generate.add_argument("--channels", type=int, default=4, help="readings per step")
    generate.add_argument("--anomaly-rate", type=float, default=0.02)
    generate.add_argument(
        "--clean-fraction", type=float, default=0.5, help="anomaly-free leading share"
    )
    generate.add_argument("--seed", type=int, default=0)
    generate.set_defaults(command=generate_command)

    train = commands.add_parser("train", help="fit a detector and write a model bundle")
    add_config_option(train)
    add_data_options(train, required=False)
    add_topic_options(train)
    train.add_argument(
        "--detector",
        choices=DETECTOR_KINDS,
        default="cascade",
        help="cascade (two autoencoders in series, the default) or a fusion of two pre-trained "
        "autoencoders ([fusion] configures it)",
    )
    train.add_argument(
        "--member",
        action="append",
        default=[],
        metavar="NAME=PATH[@FEATURES]",
        help="a fusion's member, twice: a cascade bundle, or a .keras autoencoder with the "
        "comma-separated features or channels it reads",
    )
    train.add_argument(
        "--features",
        help="train on these comma-separated features or channels only (e.g. a member's group)",
    )
    train.add_argument(
        "--no-kinds",
        action="store_true",
        help="do not learn anomaly kinds from the data's kind column",
    )
    train.add_argument(
        "--out",
        type=Path,
        help="bundle directory to write (required with --data; with --topic, default: beside "
        "the model's directory, named with the UTC time)",
    )
    train.add_argument("--name", help="model name in alerts (default: the bundle's directory name)")
    train.add_argument(
        "--train-fraction",
        type=float,
        default=1.0,
        help="train on each key's first share of windows (default: all)",
    )
    train.set_defaults(command=train_command)

    score = commands.add_parser("score", help="score windows from a file with a model bundle")
    add_config_option(score)
    add_data_options(score)
    score.add_argument("--model", type=Path, required=True, help="bundle directory")
    score.add_argument("--out", type=Path, help="write every window's scores (.csv or .parquet)")
    score.add_argument("--top", type=int, default=10, help="show the N highest-scoring windows")
    score.set_defaults(command=score_command)


def generate_command(args: argparse.Namespace, config: TandemConfig) -> int:
    frame = sensor_series(
        args.steps,
        n_keys=args.keys,
        channels=args.channels,
        anomaly_rate=args.anomaly_rate,
        clean_fraction=args.clean_fraction,
        seed=args.seed,
    )
    write_table(frame, args.out)
    labelled = frame[frame["label"] == 1]
    events = len(injected_events(frame))
    kinds = ", ".join(sorted(set(labelled["kind"])))
    print(
        f"{args.out}: {len(frame)} steps from {args.keys} sensors, {args.channels} channels each; "
        f"{len(labelled)} anomalous steps in {events} events ({kinds})"
    )
    return 0


def train_command(args: argparse.Namespace, config: TandemConfig) -> int:
    if (args.data is None) == (args.topic is None):
        raise ConfigError("give either --data FILE or --topic TOPIC")
    if args.topic is None and args.out is None:
        raise ConfigError("--out: the bundle directory to write is required with --data")
    if args.promote and args.topic is None:
        raise ConfigError("--promote moves the --model link: it goes with --topic")
    if args.topic is not None:
        table, _, link = accepted_windows(args, config)
        args.out = args.out or next_to(link)
    else:
        table = load_windows(args.data, args.window, args.stride, config.codec.missing)
    if args.features:
        table = table.with_features(_names(table.feature_names, args.features))
    mask = table.head_per_key(args.train_fraction)
    labelled = 0
    if table.labels is not None:
        labelled = int((mask & (table.labels == 1)).sum())
        mask &= table.labels == 0
    training = table.select(mask)
    detector = _new_detector(args, config, training.feature_names)
    detector.fit(training.windows)
    kinds = _kind_examples(table) if not args.no_kinds else None
    if kinds is not None:
        assert table.kinds is not None
        detector.fit_kinds(table.windows[kinds], table.kinds[kinds])
    version = detector.save(args.out, name=args.name)
    _print_training(detector.training_summary_, len(training), labelled, args.out, version)
    if detector.kinds_ is not None:
        _print_kinds(detector.kinds_.summary)
    if args.promote:
        promote(link, args.out)
        Console(highlight=False, soft_wrap=True).print(f"{link} → {args.out}", markup=False)
    return 0


def _new_detector(
    args: argparse.Namespace, config: TandemConfig, names: tuple[str, ...]
) -> BundledDetector:
    """The untrained detector ``--detector`` names (``detectors.registry``), showing its training
    progress; a fusion loads its ``--member``s now, so a member the stream cannot feed fails
    before any training."""
    from detectors.registry import detector_kind
    from streamer.cli.progress import TrainingProgress

    kind = detector_kind(args.detector)
    _check_member_count(kind, len(args.member))
    spec = _spec(kind, config)
    members = [_member(text, names) for text in args.member]
    progress = TrainingProgress(spec.epochs)
    return kind.build(spec, names, members, config.model.device, [progress])


def _check_member_count(kind: DetectorKind, given: int) -> None:
    """A ``ConfigError`` unless ``--member`` was given as many times as ``kind`` fuses members
    (none, or the two of every fusion)."""
    if given == kind.members:
        return
    if kind.members == 0:
        raise ConfigError("--member is for fusion detectors (--detector fusion-...)")
    raise ConfigError(f"{kind.name} fuses two autoencoders: give --member twice")


def _spec(kind: DetectorKind, config: TandemConfig) -> TrainingSpec:
    """The spec ``kind`` trains with, from the config section it reads (``[train]`` or
    ``[fusion]``); a ``ConfigError`` when the kind's own settings do not fit that section."""
    sections: dict[str, TrainingSpec] = {"train": config.train, "fusion": config.fusion}
    try:
        return kind.spec(sections[kind.section])
    except ValidationError as error:
        raise ConfigError(f"[{kind.section}] for --detector {kind.name}: {error}") from None


def _member(text: str, names: tuple[str, ...]) -> Member:
    """``NAME=PATH[@FEATURES]`` → a loaded member."""
    from detectors.members import load_member

    name, equals, rest = text.partition("=")
    if not equals or not name or not rest:
        raise ConfigError(f"--member {text!r}: expected NAME=PATH[@FEATURES]")
    path, _, features = rest.partition("@")
    wanted = [f.strip() for f in features.split(",") if f.strip()] or None
    return load_member(name, Path(path), wanted, names)


def _names(names: tuple[str, ...], text: str) -> list[str]:
    from detectors.members import select_features

    return select_features(names, [f.strip() for f in text.split(",") if f.strip()])


def _kind_examples(table: WindowTable) -> NDArray[np.bool_] | None:
    """(n,) mask of the windows labelled with an anomaly kind that has enough examples to learn
    (``MIN_PER_KIND``), when two kinds or more do (a classifier needs something to tell apart);
    else None. Kinds left out are logged."""
    from detectors.kinds import MIN_PER_KIND

    if table.kinds is None:
        return None
    kinds, counts = np.unique(table.kinds[table.kinds != ""], return_counts=True)
    learnable = [str(k) for k, c in zip(kinds, counts, strict=True) if c >= MIN_PER_KIND]
    scarce = {str(k): int(c) for k, c in zip(kinds, counts, strict=True) if c < MIN_PER_KIND}
    if scarce or 0 < len(learnable) < 2:
        log.warning("kinds_left_out", too_few_windows=scarce, learnable=learnable)
    if len(learnable) < 2:
        return None
    return np.isin(table.kinds, learnable)


def score_command(args: argparse.Namespace, config: TandemConfig) -> int:
    from detectors.registry import load_detector

    table = load_windows(args.data, args.window, args.stride, config.codec.missing)
    bundle = model_bundle(args.model, None)
    detector = load_detector(bundle, device=config.model.device)
    table = table.for_model(detector.feature_names, str(args.data))
    scores = detector.score(table.windows)
    frame = _scores_frame(table, scores, detector.feature_names)
    if args.out:
        write_table(frame, args.out)
    console = Console()
    top = frame.nlargest(args.top, "score")
    grid = Table(
        title=f"{args.top} highest scores of {len(frame)} windows (model {detector.version})"
    )
    parts = list(scores.parts)
    for column in ("key", "time (UTC)", "score", *parts, "most blamed feature", "label"):
        grid.add_column(
            column, justify="left" if column in ("key", "most blamed feature") else "right"
        )
    for row in top.to_dict("records"):
        grid.add_row(
            str(row["key"]),
            utc_text(row["ts"]),
            f"{row['score']:.2f}",
            *(f"{row[part]:.2f}" for part in parts),
            f"{row['top_feature']} ({row['top_share']:.0%})",
            str(row.get("label", "")),
        )
    console.print(grid)
    quantiles = frame["score"].quantile([0.5, 0.9, 0.99, 0.999]).round(2).tolist()
    console.print(f"score p50/p90/p99/p99.9: {' / '.join(map(str, quantiles))}")
    if args.out:
        console.print(f"all {len(frame)} scores written to {args.out}")
    return 0


def _scores_frame(table: WindowTable, scores: Scores, names: tuple[str, ...]) -> pd.DataFrame:
    contributions = scores.contributions()
    blamed = np.argmax(contributions, axis=1)
    frame = pd.DataFrame(
        {
            "key": table.keys,
            "ts": table.ts_ms,
            "score": scores.score,
            **scores.parts,
            **{f"{name}_error": error for name, error in scores.errors.items()},
            "top_feature": np.asarray(names)[blamed],
            "top_share": contributions[np.arange(len(blamed)), blamed],
        }
    )
    if table.labels is not None:
        frame["label"] = table.labels
    return frame


def _print_training(
    summary: dict[str, object], used: int, labelled: int, out: Path, version: str
) -> None:
    console = Console()
    stages = Table(title="training")
    for column in ("model", "epochs run", "best epoch", "train loss", "held-out loss"):
        stages.add_column(column, justify="right")
    for stage, result in summary.items():
        if not isinstance(result, dict) or "epochs_run" not in result:
            continue
        stages.add_row(
            stage,
            str(result["epochs_run"]),
            str(result["best_epoch"]),
            f"{result['train_loss']:.4g}",
            f"{result['val_loss']:.4g}",
        )
    console.print(stages)
    quantiles = summary["held_out_quantiles"]
    assert isinstance(quantiles, dict)
    spread = Table(title="held-out windows: error and score quantiles")
    spread.add_column("quantity")
    names = list(next(iter(quantiles.values())))
    for name in names:
        spread.add_column(name, justify="right")
    for quantity, values in quantiles.items():
        spread.add_row(quantity, *(f"{values[name]:.4g}" for name in names))
    console.print(spread)
    skipped = f"; {labelled} labelled windows left out" if labelled else ""
    console.print(f"trained on {used} windows{skipped} in {summary['seconds']}s")
    console.print(f"bundle {out}, version {version}")


def _print_kinds(summary: dict[str, Any]) -> None:
    grid = Table(title="anomaly kinds (classifier on the latent code)")
    for column in ("kind", "labelled windows", "held-out accuracy"):
        grid.add_column(column, justify="left" if column == "kind" else "right")
    for kind, count in summary["windows"].items():
        grid.add_row(kind, str(count), f"{summary['held_out_accuracy'][kind]:.1%}")
    Console().print(grid)
