"""A cap on the keys a calibrator keeps (``max_keys``): the least recently seen go first, their
rows are reused so memory stays bounded, a key that comes back starts afresh, and under the cap
nothing changes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import orjson

from calibration.evt import Spot
from calibration.quantile import RollingQuantile

RSS_LIMIT_MB = 400
"""100,000 distinct keys at the default window through a cap of 1,000 measured 243 MB peak RSS
(interpreter and numpy included); without the cap they would need some 19 GB (about 193 KB of
rings per key, docs/calibration.md)."""


def test_the_least_recently_seen_key_goes_and_comes_back_afresh() -> None:
    calibrator = RollingQuantile(0.9, window=50, warmup=10, refresh=5, per_key=True)
    calibrator.max_keys = 2
    rng = np.random.default_rng(0)
    calibrator.update(np.repeat(["a", "b"], 20), rng.exponential(size=40))
    calibrator.update(["a"] * 5, rng.exponential(size=5))
    assert np.isfinite(calibrator.threshold("b"))
    rows_before = calibrator._seen.shape[0]
    calibrator.update(["c"] * 5, rng.exponential(size=5))
    assert sorted(calibrator.keys) == ["a", "c"] and calibrator.evicted == 1
    assert calibrator._seen.shape[0] == rows_before, "b's row is reused"
    assert calibrator.threshold("c") == calibrator.threshold(None), "c warms up"
    calibrator.update(["b"], [1.0])
    assert calibrator.evicted == 2 and "b" in calibrator.keys and "a" not in calibrator.keys


def test_a_batch_keeps_its_own_keys_even_over_the_cap() -> None:
    calibrator = Spot(1e-3, window=100, warmup=60, refresh=10, per_key=True)
    calibrator.max_keys = 3
    calibrator.update([f"k{i}" for i in range(5)], np.ones(5))
    assert len(calibrator.keys) == 5
    calibrator.update(["new"], [1.0])
    assert len(calibrator.keys) == 3 and calibrator.evicted == 3


def test_under_the_cap_nothing_changes() -> None:
    rng = np.random.default_rng(3)
    keys = rng.choice([f"k{i}" for i in range(20)], size=5000)
    scores = rng.exponential(size=5000)
    capped, free = (Spot(1e-3, window=400, warmup=100, refresh=20, per_key=True) for _ in "ab")
    capped.max_keys = 20
    first, second = capped.update(keys, scores), free.update(keys, scores)
    np.testing.assert_array_equal(first.thresholds, second.thresholds)
    np.testing.assert_array_equal(first.surprise, second.surprise)
    assert capped.evicted == 0


MEMORY = """
import numpy as np
from streamer.calibrators import build_calibrator
from streamer.config import CalibrationConfig

calibrator = build_calibrator(
    CalibrationConfig(max_keys=1000), np.random.default_rng(0).exponential(size=2000)
)
rng = np.random.default_rng(1)
for start in range(0, 100_000, 1000):
    keys = np.array([f"sensor-{i}" for i in range(start, start + 1000)])
    calibrator.update(np.repeat(keys, 4), rng.exponential(size=4000))
with open("/proc/self/status") as status:  # the peak of this process, not of its parent
    rss_mb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
print({"keys": len(calibrator.keys), "evicted": calibrator.evicted, "rss_mb": rss_mb})
"""


def test_a_hundred_thousand_keys_stay_within_the_stated_memory() -> None:
    """In a process of its own, so its peak RSS is the calibrator's (and the interpreter's):
    ``VmHWM``, since ``getrusage``'s peak is inherited from the parent (pytest, with Keras loaded)
    across the fork."""
    out = subprocess.run(
        [sys.executable, "-c", MEMORY], capture_output=True, text=True, check=True, timeout=600
    )
    result = orjson.loads(out.stdout.strip().splitlines()[-1].replace("'", '"'))
    assert result["keys"] == 1000 and result["evicted"] == 99_000
    assert result["rss_mb"] < RSS_LIMIT_MB, result
