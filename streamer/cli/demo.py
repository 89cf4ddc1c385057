"""``tandem demo``: the whole product on a generated feed, in about a minute and a half
(``streamer.demo.run`` drives it).

Exit status 1 if a step fails (the failing child's log tail is printed), if the daemon does not
stop cleanly, or if no injected anomaly was caught; 2 for options out of range.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from streamer.cli.options import add_config_option
from streamer.config import TandemConfig

USAGE = 2


def add_demo_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo",
        help="end to end: generate a labelled feed, train, run the daemon, replay, follow the "
        "alerts, count what was caught",
    )
    add_config_option(demo)
    data = demo.add_argument_group("the generated feed (per sensor)")
    data.add_argument("--keys", type=int, default=4, help="sensors (default 4)")
    data.add_argument("--channels", type=int, default=4, help="readings per step (default 4)")
    data.add_argument("--window", type=int, default=16, help="steps per window (default 16)")
    data.add_argument(
        "--train-windows", type=int, default=1500, help="windows trained on (default 1500)"
    )
    data.add_argument(
        "--test-steps",
        type=int,
        default=2500,
        help="steps with anomalies, replayed after the calibration warm-up (default 2500)",
    )
    data.add_argument("--anomaly-rate", type=float, default=0.04, help="of the test steps")
    data.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--epochs", type=int, default=30, help="training epochs, for [train].epochs (default 30)"
    )
    demo.add_argument(
        "--learning-rate",
        type=float,
        default=0.01,
        help="for [train].learning_rate (default 0.01: few epochs)",
    )
    demo.add_argument("--partitions", type=int, default=4, help="of the input topic (default 4)")
    demo.add_argument(
        "--rate", type=float, default=1000.0, help="replayed windows per second (0: at once)"
    )
    demo.add_argument(
        "--all-alerts",
        action="store_true",
        help="show every alert (default: the first per anomaly and per burst of false alarms)",
    )
    demo.add_argument(
        "--timeout-s", type=float, default=180.0, help="limit for each step that waits"
    )
    demo.add_argument("--keep-topics", action="store_true", help="do not delete the demo topics")
    demo.add_argument(
        "--workdir", type=Path, help="keep the feed and the model bundle here (default: a temp dir)"
    )
    demo.set_defaults(command=demo_command)


def demo_command(args: argparse.Namespace, config: TandemConfig) -> int:
    from streamer.demo.feed import DemoSizes, DemoTopics, warmup_windows_for
    from streamer.demo.run import DemoRun

    positive = ("keys", "channels", "window", "train_windows", "test_steps", "epochs", "partitions")
    wrong = [f"--{name.replace('_', '-')}" for name in positive if getattr(args, name) < 1]
    if not 0 < args.anomaly_rate < 1:
        wrong.append("--anomaly-rate (between 0 and 1)")
    if args.rate < 0 or args.learning_rate <= 0:
        wrong.append("--rate and --learning-rate (not negative)")
    if wrong:
        print(f"tandem demo: out of range: {', '.join(wrong)}", file=sys.stderr)
        return USAGE
    sizes = DemoSizes(
        keys=args.keys,
        channels=args.channels,
        window=args.window,
        train_windows=args.train_windows,
        warmup_windows=warmup_windows_for(config.calibration, args.keys),
        test_steps=args.test_steps,
        anomaly_rate=args.anomaly_rate,
        seed=args.seed,
    )
    topics = DemoTopics.fresh(config.kafka)
    with tempfile.TemporaryDirectory(prefix="tandem-demo-") as scratch:
        workdir = (args.workdir or Path(scratch)).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        return DemoRun(args, config, sizes, topics, workdir).run()
