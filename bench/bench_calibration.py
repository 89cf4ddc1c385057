"""Calibration throughput, printed as JSON: scores per second for batches of 4096 scores spread
over 1,000 keys, per method (quantile, SPOT, DSPOT, likelihood) and mode (global, per key), on
one core.

The baseline in the same run is numpy's own cost for the same data: one ``numpy.quantile`` over a
full window per batch, the least an exact rolling quantile must do. Floors: 1,000,000
scores/s for the rolling quantile, 300,000 for SPOT.
Usage: .venv/bin/python bench/bench_calibration.py [--batches 200]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable

import numpy as np

from calibration.evt import Dspot, Spot
from calibration.likelihood import Likelihood
from calibration.quantile import RollingQuantile
from calibration.window import WindowCalibrator


def scores_per_second(
    calibrator: WindowCalibrator | Likelihood, keys: np.ndarray, scores: np.ndarray, batch: int
) -> float:
    started = time.perf_counter()
    for start in range(0, len(scores), batch):
        calibrator.update(keys[start : start + batch], scores[start : start + batch])
    return len(scores) / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--keys", type=int, default=1000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n = args.batches * args.batch
    keys = np.array([f"sensor-{k:04d}" for k in range(args.keys)])[rng.integers(0, args.keys, n)]
    scores = rng.exponential(size=n)
    makers: dict[str, Callable[[bool], WindowCalibrator | Likelihood]] = {
        "quantile": lambda per_key: RollingQuantile(0.999, per_key=per_key),
        "spot": lambda per_key: Spot(target_rate=1e-4, per_key=per_key),
        "dspot": lambda per_key: Dspot(target_rate=1e-4, per_key=per_key),
        "likelihood": lambda per_key: Likelihood(1e-4, 10_000, 1_000, 256, 10, per_key=per_key),
    }
    results = {}
    for method, make in makers.items():
        for per_key in (False, True):
            calibrator = make(per_key)
            warm = 20 * args.batch
            scores_per_second(calibrator, keys[:warm], scores[:warm], args.batch)
            mode = "per_key" if per_key else "global"
            rate = scores_per_second(calibrator, keys, scores, args.batch)
            results[f"{method}_{mode}_scores_per_s"] = round(rate)
    window = scores[:10_000]
    started = time.perf_counter()
    for _ in range(args.batches):
        np.quantile(window, 0.999)
    numpy_floor = args.batches * args.batch / (time.perf_counter() - started)
    print(
        json.dumps(
            {
                "benchmark": "calibration",
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "batch": args.batch,
                "keys": args.keys,
                **results,
                "numpy_quantile_per_batch_scores_per_s": round(numpy_floor),
                "quantile_global_vs_numpy": round(
                    results["quantile_global_scores_per_s"] / numpy_floor, 3
                ),
                "floor_quantile_scores_per_s": 1_000_000,
                "floor_spot_scores_per_s": 300_000,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
