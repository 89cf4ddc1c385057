"""``tandem backtest``: the daemon's pipeline over a file or a topic range, with a report.

The source is ``--data`` (windows, or a raw series cut with ``--window``/``--stride``) or
``--topic`` between ``--from-offset``/``--from-time`` and ``--to-offset``/``--to-time``; the
model is ``--model`` (default ``[model].bundle``) and the calibration ``[calibration]`` of
``--config``. Labels are the data's ``label`` column (``--labels COLUMN`` names another), the
records' ``"label"`` field, or ``--labels FILE`` of labelled time ranges. ``--sweep
calibration.KEY=V1,V2`` recalibrates the same scores under each value. ``--out DIR`` writes
``report.json``, ``alerts.csv`` and ``report.html``; a summary is printed either way.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from rich.console import Console

from streamer.cli.options import (
    add_config_option,
    add_data_options,
    add_topic_range_options,
    model_bundle,
)
from streamer.config import TandemConfig
from streamer.errors import ConfigError

if TYPE_CHECKING:
    from rich.table import Table

    from streamer.backtest.run import FiniteSource
    from streamer.ingest.codec import Codec
    from streamer.ingest.tables import WindowTable

log = structlog.get_logger(__name__)


def add_backtest_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    backtest = commands.add_parser(
        "backtest", help="run the daemon's pipeline over a file or a topic range; write a report"
    )
    add_config_option(backtest)
    add_data_options(backtest, required=False)
    add_topic_range_options(
        backtest.add_argument_group("topic range (instead of --data)"),
        "read this topic's partitions, without a consumer group",
    )
    backtest.add_argument("--model", type=Path, help="bundle directory (default: [model].bundle)")
    backtest.add_argument(
        "--labels", help="a label column of --data (default: 'label'), or a file of time ranges"
    )
    backtest.add_argument(
        "--sweep",
        help="recalibrate the same scores under each value: calibration.KEY=V1,V2,...",
    )
    backtest.add_argument("--out", type=Path, help="report directory to write")
    backtest.add_argument(
        "--batch-size", type=int, help="records per batch (default: [batch].max_records)"
    )
    backtest.set_defaults(command=backtest_command)


def backtest_command(args: argparse.Namespace, config: TandemConfig) -> int:
    from detectors.registry import load_detector
    from streamer.backtest.labels import attach_labels
    from streamer.backtest.run import run_backtest
    from streamer.backtest.summary import summarise
    from streamer.backtest.sweep import parse_sweep, run_sweep
    from streamer.backtest.write import write_report
    from streamer.cli.progress import ScoringProgress
    from streamer.ingest.build import build_input

    if (args.data is None) == (args.topic is None):
        raise ConfigError("give either --data FILE or --topic TOPIC")
    if args.topic is not None and args.labels is not None and not Path(args.labels).is_file():
        raise ConfigError(f"--labels {args.labels}: no such file (a label column needs --data)")
    bundle = model_bundle(args.model, config.model.bundle)
    settings = parse_sweep(args.sweep, config.calibration) if args.sweep else []
    batch_size = args.batch_size or config.batch.max_records
    detector = load_detector(bundle, device=config.model.device)
    codec, windower = build_input(detector.feature_names, config)
    source, name, table = _open_source(args, config, codec, batch_size, detector.feature_names)
    console = Console(stderr=True)
    console.print(f"backtest of {name}: {source.total:,} records, model {bundle}")
    try:
        with ScoringProgress(console, source.total, log) as advance:
            backtest = run_backtest(
                source,
                codec,
                detector,
                config.calibration,
                {"name": detector.name_, "version": detector.version or "unsaved"},
                name,
                on_batch=lambda report: advance(report.records),
                alerting=config.alerts,
                windower=windower,
                remembering=config.memory,
            )
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()
    ranges = attach_labels(backtest, table, args.labels)
    backtest.sweep = run_sweep(backtest.windows, settings, backtest.prior)
    report = summarise(backtest, ranges)
    _print_summary(report)
    if args.out:
        written = write_report(args.out, backtest, report, ranges)
        Console(highlight=False).print(
            "report: " + ", ".join(str(path) for path in written), markup=False
        )
    return 0


def _open_source(
    args: argparse.Namespace,
    config: TandemConfig,
    codec: Codec,
    batch_size: int,
    feature_names: tuple[str, ...],
) -> tuple[FiniteSource, str, WindowTable | None]:
    """The source the options name, a name for it in the report, and the file's table, its
    columns matched by name to the model's ``feature_names``."""
    from streamer.backtest.labels import load_labelled_windows
    from streamer.backtest.sources import FileSource
    from streamer.broker.range_source import parse_bound
    from streamer.broker.ranges import open_range

    if args.data is not None:
        # In time order, all entities interleaved: the order `tandem replay` sends them in, and
        # so the order the daemon would read them in.
        if config.codec.input == "readings":
            if args.window is not None:
                raise ConfigError(
                    '--window: with [codec].input = "readings" the file holds readings, cut '
                    "into the model's windows as the daemon cuts them; leave out --window"
                )
            table = load_labelled_windows(args.data, None, 1, args.labels, config.codec.missing)
            table = table.readings_for(feature_names, str(args.data)).in_time_order()
        else:
            table = load_labelled_windows(
                args.data, args.window, args.stride, args.labels, config.codec.missing
            )
            table = table.for_model(feature_names, str(args.data)).in_time_order()
        return FileSource(table, codec, args.data.name, batch_size), str(args.data), table
    start = parse_bound(args.from_offset, args.from_time, "from")
    end = parse_bound(args.to_offset, args.to_time, "to")
    source = open_range(config.kafka, args.topic, start, end, batch_size)
    name = f"{args.topic} [{start.describe('start')}, {end.describe('end')})"
    return source, name, None


def _print_summary(report: dict[str, Any]) -> None:
    from rich.table import Table

    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = 120  # a log or a pipe: wide enough for the sweep table
    counts = report["counts"]
    console.print(
        f"{counts['windows']:,} windows of {counts['keys']} keys scored in "
        f"{report['timings']['seconds']:.1f} s ({report['timings']['windows_per_s']:,.0f}/s): "
        f"{counts['alerts']:,} flagged ({counts['alerts_per_10k']:.1f} per 10k), "
        f"{counts['dead_letters']:,} dead letters",
        markup=False,
    )
    events = report.get("events") or {}
    if events.get("mode") == "events":
        told = f"{events['count']:,} alert events ({events['open_at_end']} still open at the end)"
        labelled = events.get("against_labels")
        if labelled:
            told += (
                f": {labelled['on_anomalies']} on labelled anomalies, "
                f"{labelled['false_alarms']} false alarms; {labelled['anomalies_caught']} of "
                f"{labelled['anomalies']} anomalies caught"
            )
        console.print(told, markup=False)
    metrics = report.get("metrics")
    if metrics:
        grid = Table(title="against the labels")
        for column in ("metric", "value"):
            grid.add_column(column, justify="right" if column == "value" else "left")
        for name, value in _headline(metrics):
            grid.add_row(name, value)
        console.print(grid)
    if report.get("sweep"):
        console.print(_sweep_table(report["sweep"]))


def _headline(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    delay = metrics.get("median_delay_ms")
    rows = [
        ("events detected", f"{metrics['events_detected']} of {metrics['events']}"),
        ("event recall / precision / F1", _triple(metrics, "event")),
        ("point precision / recall / F1", _triple(metrics, "point")),
        ("false alarms per 10k normal windows", f"{metrics['false_alarms_per_10k']:.2f}"),
        ("median detection delay", "-" if delay is None else f"{delay / 1000:,.1f} s"),
    ]
    if metrics.get("nab_standard") is not None:
        rows.append(("NAB score (standard profile)", f"{metrics['nab_standard']:.1f}"))
    return rows


def _triple(metrics: dict[str, Any], kind: str) -> str:
    if kind == "event":
        values = (metrics["event_recall"], metrics["event_precision"], metrics["event_f1"])
    else:
        values = (metrics["precision"], metrics["recall"], metrics["f1"])
    return " / ".join(f"{v:.3f}" for v in values)


def _sweep_table(rows: list[dict[str, Any]]) -> Table:
    from rich.table import Table

    from streamer.backtest.summary import sweep_table

    header, cells = sweep_table(rows)
    grid = Table(title="sweep: the same scores, recalibrated")
    for column in header:
        grid.add_column(column, justify="left" if column == "setting" else "right")
    for line in cells:
        grid.add_row(*line)
    return grid
