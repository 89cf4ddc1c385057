"""The ``tandem`` command line: ``main(argv) -> int`` so tests call it without a subprocess.

The CLI is the only place that loads configuration and configures logging, and the only module
that prints: results go to stdout, logs (structlog) to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from enum import IntEnum
from importlib.metadata import version

import tomli_w

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter
from detectors.errors import DetectorError
from streamer.cli.alerts import add_alerts_command
from streamer.cli.backtest import add_backtest_command
from streamer.cli.demo import add_demo_command
from streamer.cli.model import add_model_commands
from streamer.cli.options import add_config_option
from streamer.cli.replay import add_replay_command
from streamer.cli.run import add_run_command
from streamer.config import TandemConfig, load_config, masked, overrides_in
from streamer.errors import (
    AuthenticationError,
    BrokerUnavailableError,
    ConfigError,
    TandemError,
)
from streamer.logging import configure_logging


class ExitCode(IntEnum):
    """Process exit statuses; orchestrators restart on BROKER, a human must act on CONFIG.
    STDOUT_CLOSED is what a shell reports for a program ended by SIGPIPE (128 + 13), as
    ``yes | head`` does: the reader went away, nothing went wrong here."""

    OK = 0
    FAILURE = 1
    CONFIG = 2
    BROKER = 3
    AUTHENTICATION = 4
    STDOUT_CLOSED = 141


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, return the exit status.

    A reader that closes stdout early (``tandem config show | head``) ends the command quietly
    with ``STDOUT_CLOSED``, following Python's recipe for SIGPIPE: no traceback, and stdout
    pointed at /dev/null so the interpreter's last flush does not fail again."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # output that fitted the buffer meets the closed pipe only here
    except BrokenPipeError:
        _point_stdout_at_devnull()
        return ExitCode.STDOUT_CLOSED
    return code


def _point_stdout_at_devnull() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # a stdout with no file descriptor (tests)
        pass
    finally:
        os.close(devnull)


def _main(argv: Sequence[str] | None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        config = load_config(getattr(args, "config", None))
    except ConfigError as error:
        print(f"tandem: {error}", file=sys.stderr)
        return ExitCode.CONFIG
    configure_logging(
        level=args.log_level or config.log.level,
        fmt=args.log_format or config.log.format,
        secrets=config.kafka.secrets(),
    )
    command: Callable[[argparse.Namespace, TandemConfig], int] = args.command
    try:
        return command(args, config)
    except BrokerUnavailableError as error:
        print(f"tandem: {error}", file=sys.stderr)
        return ExitCode.BROKER
    except AuthenticationError as error:
        print(f"tandem: {error}", file=sys.stderr)
        return ExitCode.AUTHENTICATION
    except ConfigError as error:  # a command's options contradict each other or the config
        print(f"tandem: {error}", file=sys.stderr)
        return ExitCode.CONFIG
    except (TandemError, DetectorError) as error:
        print(f"tandem: {error}", file=sys.stderr)
        return ExitCode.FAILURE
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tandem",
        description="Streaming anomaly detection for market and sensor feeds on Kafka.",
    )
    parser.add_argument("--version", action="version", version=f"tandem {version('tandem-detect')}")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", choices=["auto", "json", "console"])
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    config_cmd = commands.add_parser("config", help="inspect a configuration file")
    config_actions = config_cmd.add_subparsers(title="actions", required=True, metavar="ACTION")
    show = config_actions.add_parser(
        "show", help="print the effective config (file + TANDEM_* overrides), secrets masked"
    )
    add_config_option(show)
    show.add_argument("--json", action="store_true", help="print JSON instead of TOML")
    show.set_defaults(command=_config_show)
    check = config_actions.add_parser("check", help="validate a config file; exit 2 if invalid")
    add_config_option(check)
    check.set_defaults(command=_config_check)

    broker_cmd = commands.add_parser("broker", help="talk to the Kafka cluster")
    broker_actions = broker_cmd.add_subparsers(title="actions", required=True, metavar="ACTION")
    probe = broker_actions.add_parser(
        "check", help="send one metadata request and print the answer as JSON; exit 3 if none"
    )
    add_config_option(probe)
    probe.add_argument("--bootstrap", help="host:port to ask instead of [kafka].bootstrap")
    probe.add_argument("--timeout-s", type=float, default=5.0)
    probe.set_defaults(command=_broker_check)

    add_demo_command(commands)
    add_model_commands(commands)
    add_run_command(commands)
    add_replay_command(commands)
    add_backtest_command(commands)
    add_alerts_command(commands)
    return parser


def _config_show(args: argparse.Namespace, config: TandemConfig) -> int:
    shown = masked(config)
    if args.json:
        print(json.dumps(shown, indent=2))
    else:
        print(tomli_w.dumps(shown), end="")
        applied = overrides_in(os.environ)
        if applied:
            print(f"# overridden by environment: {', '.join(applied)}")
    return ExitCode.OK


def _config_check(args: argparse.Namespace, config: TandemConfig) -> int:
    print(f"{args.config or 'defaults'}: ok")
    return ExitCode.OK


def _broker_check(args: argparse.Namespace, config: TandemConfig) -> int:
    from streamer.broker.admin import probe_broker

    options = config.kafka.client_options()
    if args.bootstrap:
        options["bootstrap_servers"] = [s.strip() for s in args.bootstrap.split(",")]
    info = probe_broker(options, timeout_s=args.timeout_s)
    print(json.dumps(asdict(info)))
    return ExitCode.OK
