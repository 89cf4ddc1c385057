"""Decode cost of JSON windows: positional arrays against named values, in one run.

Prints one JSON object: records/s and µs per record for each form, and each named form's rate
as a ratio of the positional one's (the baseline). A window is 16 steps of 3 channels (D = 48),
values rounded as a producer would send them.

    .venv/bin/python bench/bench_codec.py --records 20000 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import orjson

from streamer.config import CodecConfig
from streamer.ingest.codec import JsonCodec, Limits
from streamer.ingest.windows import window_feature_names
from streamer.records import SourceRecord

CHANNELS, STEPS = ("temp", "flow", "rpm"), 16


def _records(forms: str, windows: np.ndarray) -> list[SourceRecord]:
    """``windows`` (n, D) as JSON records of one form: positional, channels, or features."""
    names = window_feature_names(CHANNELS, STEPS)
    out = []
    for i, row in enumerate(windows.round(4).tolist()):
        if forms == "positional":
            features: object = row
        elif forms == "channels":
            features = {c: row[j :: len(CHANNELS)] for j, c in enumerate(CHANNELS)}
        else:
            features = dict(zip(names, row, strict=True))
        value = orjson.dumps(
            {"key": f"k{i % 50}", "ts": 1_764_000_000_000 + i, "features": features}
        )
        out.append(SourceRecord("bench", 0, i, None, value, 0))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    windows = np.random.default_rng(0).normal(size=(args.records, STEPS * len(CHANNELS)))
    codec = JsonCodec(Limits.of(window_feature_names(CHANNELS, STEPS), CodecConfig()))
    rates: dict[str, float] = {}
    for form in ("positional", "channels", "features"):
        records = _records(form, windows)
        best = float("inf")
        for _ in range(args.repeats):
            started = time.perf_counter()
            batch, dead = codec.decode(records)
            best = min(best, time.perf_counter() - started)
            assert not dead and len(batch) == args.records
        rates[form] = args.records / best
    result = {
        "records": args.records,
        "window": [STEPS, len(CHANNELS)],
        **{f"{form}_records_per_s": round(rate) for form, rate in rates.items()},
        **{f"{form}_us_per_record": round(1e6 / rate, 2) for form, rate in rates.items()},
        "channels_over_positional": round(rates["channels"] / rates["positional"], 3),
        "features_over_positional": round(rates["features"] / rates["positional"], 3),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
