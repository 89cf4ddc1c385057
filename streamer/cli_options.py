"""Options shared by several ``tandem`` commands."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """``--config FILE``: the TOML config (built-in defaults when left out)."""
    parser.add_argument(
        "--config", type=Path, default=None, help="TOML config file (default: built-in defaults)"
    )
