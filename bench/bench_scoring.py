"""Scoring throughput of the reference cascade, printed as JSON.

The reference cascade: D = 64 features, AE1 64 → 32 → 16, AE2 16 → 8 → 4, batches of 4096.
Measured in the same run, on the same windows:

- ``product``: ``CascadeDetector.score`` (the daemon's path): validation, the compiled cascade
  (scaling, both autoencoders, errors), normalisation and tail decades. Blame is computed on
  demand for flagged windows only, as the daemon does.
- ``product_full_blame``: the same plus per-feature blame for every window.
- ``predict``: the seed article's naive path, per-batch ``model.predict`` of AE1, its encoder
  and AE2, called as the article calls it (Keras' default ``batch_size``, 32).
- ``predict_whole_batch``: the same with ``batch_size`` set to the whole batch, the best
  ``predict`` can do.

Usage: .venv/bin/python bench/bench_scoring.py [--seconds 5] [--batch 4096] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

from detectors.autoencoder import encoder_of
from detectors.cascade import CascadeDetector
from detectors.spec import AutoencoderSpec, CascadeSpec

REFERENCE = CascadeSpec(
    ae1=AutoencoderSpec(hidden=(32,), latent=16),
    ae2=AutoencoderSpec(hidden=(8,), latent=4),
    epochs=1,
)


def windows_per_second(
    step: Callable[[np.ndarray], object], batches: list[np.ndarray], seconds: float
) -> float:
    step(batches[0])
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for batch in batches:
            step(batch)
            done += len(batch)
    return done / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    detector = CascadeDetector(REFERENCE, device=args.device).fit(
        rng.normal(size=(8192, 64)).astype(np.float32)
    )
    batches = [rng.normal(size=(args.batch, 64)).astype(np.float32) for _ in range(8)]
    compiled = detector._compiled
    assert compiled is not None
    encoder = encoder_of(detector.ae1_)

    def predict(batch: np.ndarray, batch_size: int | None = None) -> object:
        detector.ae1_.predict(batch, batch_size=batch_size, verbose=0)
        codes = encoder.predict(batch, batch_size=batch_size, verbose=0)
        return detector.ae2_.predict(codes, batch_size=batch_size, verbose=0)

    product = windows_per_second(detector.score, batches, args.seconds)
    full_blame = windows_per_second(
        lambda b: detector.score(b).contributions(), batches, args.seconds
    )
    naive = windows_per_second(predict, batches[:1], min(args.seconds, 2.0))
    whole = windows_per_second(lambda b: predict(b, len(b)), batches, args.seconds)
    print(
        json.dumps(
            {
                "benchmark": "scoring",
                "cascade": "D=64, AE1 64-32-16, AE2 16-8-4",
                "batch": args.batch,
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "backend": keras.backend.backend(),
                "device": compiled.device.name,
                "product_windows_per_s": round(product),
                "product_full_blame_windows_per_s": round(full_blame),
                "predict_windows_per_s": round(naive),
                "predict_whole_batch_windows_per_s": round(whole),
                "product_vs_predict": round(product / naive, 1),
                "product_vs_predict_whole_batch": round(product / whole, 1),
                "product_full_blame_vs_predict": round(full_blame / naive, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
