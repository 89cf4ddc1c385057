"""``tandem replay``: push a file of windows into a topic, for rehearsals with the live daemon.

Windows are sent in time order (all entities interleaved, as a live feed carries them), keyed by
entity, with the data's own timestamps as record timestamps, encoded as ``[codec].format`` says;
as fast as the producer goes, at ``--rate`` windows per second, in real time (``--realtime``),
or at ``--speed`` times the data's time. The topic (default ``[kafka].input_topic``) is created
with ``--partitions`` if it does not exist. Prints what was sent once every window is
acknowledged.
"""

from __future__ import annotations

import argparse

import structlog
from rich.console import Console

from streamer.cli.options import add_config_option, add_data_options
from streamer.config import TandemConfig
from streamer.errors import ConfigError

log = structlog.get_logger(__name__)


def add_replay_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    replay = commands.add_parser(
        "replay", help="push a file of windows into a topic (as fast as possible, real time, xN)"
    )
    add_config_option(replay)
    add_data_options(replay)
    replay.add_argument("--topic", help="topic to write (default: [kafka].input_topic)")
    replay.add_argument(
        "--partitions", type=int, default=1, help="partitions, if the topic must be created"
    )
    pace = replay.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=_positive, help="windows per second")
    pace.add_argument("--speed", type=_positive, help="times the data's time (2: twice as fast)")
    pace.add_argument("--realtime", action="store_true", help="the data's own time (--speed 1)")
    replay.set_defaults(command=replay_command)


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def replay_command(args: argparse.Namespace, config: TandemConfig) -> int:
    from streamer.broker.admin import NO_TIME_RETENTION, TopicSpec
    from streamer.broker.replay import Pace, replay
    from streamer.broker.topics import create_topics
    from streamer.ingest.codec import Limits, make_codec
    from streamer.ingest.features import FeatureLayout
    from streamer.ingest.tables import load_windows

    readings = config.codec.input == "readings"
    if readings and args.window is not None:
        raise ConfigError(
            '--window: with [codec].input = "readings" each row is sent as a reading; the '
            "daemon cuts the windows. Leave out --window"
        )
    pace = Pace(rate=args.rate or 0.0, speed=1.0 if args.realtime else args.speed or 0.0)
    # Missing values travel as they are (JSON null, f32 NaN): the consumer's policy decides.
    table = load_windows(args.data, args.window, args.stride, keep_missing=True).in_time_order()
    topic = args.topic or config.kafka.input_topic
    # Records carry the data's own timestamps, so time-based retention would delete historical
    # ones at the broker's next retention check; a topic created here keeps them.
    create_topics(config.kafka, [TopicSpec(topic, args.partitions, configs=NO_TIME_RETENTION)])
    # Windows go out positionally, in the file's column order (the consumer's ``[codec]``
    # matches that order to its model's). Readings (``[codec].input``) go out one row each,
    # the JSON ones naming their channels.
    limits = Limits(table.windows.shape[1], layout=FeatureLayout.of(table.feature_names))
    codec = make_codec(config.codec.format, limits, readings=readings)
    console = Console(stderr=True)
    span_s = (int(table.ts_ms[-1]) - int(table.ts_ms[0])) / 1000 if len(table) else 0.0
    console.print(
        f"replaying {len(table):,} windows of {len(set(table.keys.tolist()))} entities "
        f"({span_s:,.0f} s of data) from {args.data} into {topic}, {pace.describe()}"
    )
    report = replay(config.kafka, topic, table, pace, codec)
    log.info(
        "replay_done",
        topic=topic,
        windows=report.sent,
        seconds=round(report.seconds, 2),
        per_partition=report.per_partition,
    )
    rate = report.sent / report.seconds if report.seconds > 0 else float("inf")
    Console(highlight=False).print(
        f"replayed {report.sent:,} windows into {topic} in {report.seconds:.1f} s "
        f"({rate:,.0f} windows/s), all acknowledged; per partition {report.per_partition}",
        markup=False,
    )
    return 0
