"""Options shared by several ``tandem`` commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from streamer.errors import ConfigError, MissingFileError


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """``--config FILE``: the TOML config (built-in defaults when left out)."""
    parser.add_argument(
        "--config", type=Path, default=None, help="TOML config file (default: built-in defaults)"
    )


def add_data_options(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """``--data FILE`` of windows, or of a raw series cut with ``--window`` and ``--stride``."""
    parser.add_argument(
        "--data", type=Path, required=required, help="windows, or a series with --window"
    )
    parser.add_argument(
        "--window", type=positive_int, help="cut a raw series into windows of this many steps"
    )
    parser.add_argument(
        "--stride", type=positive_int, default=1, help="steps between window starts"
    )


def add_topic_range_options(group: argparse._ArgumentGroup, topic_help: str) -> None:
    """``--topic`` and the range of it to read: ``--from-offset``/``--from-time`` to
    ``--to-offset``/``--to-time`` (``streamer.broker.range_source.parse_bound``)."""
    group.add_argument("--topic", help=topic_help)
    group.add_argument("--from-offset", type=int, help="first offset of every partition")
    group.add_argument("--from-time", help="first record at or after this ISO-8601 time (UTC)")
    group.add_argument("--to-offset", type=int, help="stop before this offset in every partition")
    group.add_argument("--to-time", help="stop before the first record at this ISO-8601 time")


def positive_int(text: str) -> int:
    """An option's whole number of 1 or more; argparse turns the error into a one-line usage
    error (exit status 2), where a 0 would otherwise fail deep in the windowing."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive whole number")
    return value


def model_bundle(given: Path | None, configured: Path | None) -> Path:
    """The bundle directory to load: ``--model`` (``given``), else ``[model].bundle``.

    Checked before anything slow starts: no path at all is a ``ConfigError``, and a path that
    does not exist a ``MissingFileError`` naming it (both exit status 2, a usage error). A
    directory that exists but holds no bundle is left to the loader: a failure (exit status 1).
    """
    bundle = given if given is not None else configured
    if bundle is None:
        raise ConfigError("no model: pass --model DIR or set [model].bundle")
    path = Path(bundle)
    if not path.exists():
        named = "--model" if given is not None else "[model].bundle"
        raise MissingFileError(f"{path}: no such model bundle directory ({named})")
    return path
