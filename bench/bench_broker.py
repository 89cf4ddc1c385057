"""Broker start-up times for scripts/kafka.sh, printed as JSON.

Three starts of a throw-away broker on its own port and state directory, so a running one is not
disturbed:

- ``cold``: empty jar cache and log dir: resolve the jars with Maven (from ~/.m2, or the network
  on a truly fresh machine), format the KRaft log dir, start, wait for a metadata answer.
- ``fresh_clone``: jars cached (as for a second clone on the same machine), new log dir.
- ``warm``: jars cached and log dir formatted: a restart.

The ratios compare each against ``cold`` measured in the same run.
Usage: .venv/bin/python bench/bench_broker.py [--port 29092]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "kafka.sh"


def timed(command: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run([str(SCRIPT), command], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"kafka.sh {command} failed:\n{result.stderr}")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=29092)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="tandem-bench-broker-"))
    env = {k: v for k, v in os.environ.items() if k != "TANDEM_KAFKA_BOOTSTRAP"}
    env.update(
        TANDEM_BROKER_PORT=str(args.port),
        TANDEM_BROKER_HOME=str(scratch / "home"),
        TANDEM_BROKER_CACHE=str(scratch / "cache"),
        TANDEM_PYTHON=sys.executable,
    )
    try:
        cold = timed("start", env)
        timed("stop", env)
        shutil.rmtree(scratch / "home")
        fresh_clone = timed("start", env)
        stop = timed("stop", env)
        warm = timed("start", env)
        timed("stop", env)
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)
    print(
        json.dumps(
            {
                "benchmark": "broker_start",
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "cold_start_s": round(cold, 2),
                "fresh_clone_start_s": round(fresh_clone, 2),
                "warm_start_s": round(warm, 2),
                "stop_s": round(stop, 2),
                "fresh_clone_vs_cold": round(fresh_clone / cold, 3),
                "warm_vs_cold": round(warm / cold, 3),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
