"""Surprise, ``-log10 P(score >= s)`` under each entity's fitted distribution: its value at the
threshold, its calibration across keys of different scales, its shape, its fallback while a key
warms up, and snapshots written before it existed.

That it is the same bits however the stream is batched or restarted is checked with the flags in
test_conformance.py.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from calibration import state
from calibration.base import Flags
from calibration.evt import Dspot, Spot
from calibration.quantile import RollingQuantile
from calibration.surprise import MAX_DECADES
from calibration.window import WindowCalibrator


def feed(
    calibrator: WindowCalibrator, keys: NDArray[np.str_], scores: NDArray[np.float64]
) -> Flags:
    pieces = [
        calibrator.update(keys[i : i + 4096], scores[i : i + 4096])
        for i in range(0, len(scores), 4096)
    ]
    return Flags(
        np.concatenate([p.thresholds for p in pieces]),
        np.concatenate([p.flags for p in pieces]),
        np.concatenate([p.surprise for p in pieces]),
    )


def test_flags_built_from_thresholds_and_flags_have_no_surprise() -> None:
    """Code outside the calibrators builds ``Flags(thresholds, flags)``: still valid, with a
    surprise of NaN for every score."""
    flags = Flags(np.array([1.0, 2.0]), np.array([False, True]))
    assert flags.surprise.shape == (2,) and np.isnan(flags.surprise).all()
    assert len(Flags(np.empty(0), np.empty(0, dtype=bool)).surprise) == 0


@pytest.mark.parametrize(
    "make",
    [
        lambda: Spot(target_rate=1e-3, window=4000, warmup=1000, refresh=128, per_key=True),
        lambda: Dspot(target_rate=1e-3, window=4000, warmup=1000, refresh=128, per_key=True),
        lambda: Spot(target_rate=1e-4, window=20_000, warmup=1000, refresh=128),
    ],
    ids=["spot-per-key", "dspot-per-key", "spot-1e-4"],
)
def test_a_score_at_the_threshold_has_the_target_s_surprise(make) -> None:  # type: ignore[no-untyped-def]
    """The same fit gives the threshold (the score exceeded with probability ``target_rate``)
    and the surprise: at the threshold, ``-log10(target_rate)``, on every key."""
    rng = np.random.default_rng(2)
    calibrator = make()
    keys = rng.choice(["a", "b"], size=30_000)
    scale = np.where(keys == "a", 1.0, 50.0)
    feed(calibrator, keys, scale * rng.exponential(size=30_000))
    target = -np.log10(calibrator.target_rate)
    for key in ["a", "b"] if calibrator.per_key else [None]:
        at = calibrator.threshold(key)
        result = calibrator.update([key or "a"] * 3, [at, np.nextafter(at, np.inf), 1.1 * at])
        assert result.surprise[0] == pytest.approx(target, abs=1e-9), key
        assert result.surprise[2] > result.surprise[1] >= result.surprise[0]


def test_the_quantile_s_surprise_at_its_threshold_is_its_level() -> None:
    """The rolling quantile's surprise counts the flagged scores as the threshold's level does,
    so a score at the threshold has about ``-log10(1 - q)``; past the window's maximum, the
    floor ``log10(window + 1)``."""
    rng = np.random.default_rng(3)
    calibrator = RollingQuantile(0.99, window=5000, warmup=1000, refresh=128)
    feed(calibrator, np.zeros(100_000, str), rng.exponential(size=100_000))
    at = calibrator.threshold()
    result = calibrator.update(["k"] * 2, [at, 1e9])
    assert result.surprise[0] == pytest.approx(2.0, abs=0.02)
    assert result.surprise[1] == pytest.approx(np.log10(5001))


@pytest.mark.parametrize("per_key", [True, False])
def test_one_surprise_threshold_is_one_false_alarm_rate_on_every_key(per_key: bool) -> None:
    """Keys whose scores differ a hundredfold in scale: per key, a surprise of ``x`` or more is
    about ``10^-x`` of each key's windows, up to the target (3 decades here); beyond it SPOT
    extrapolates the fitted tail, as for its threshold. (A global calibrator's surprise is of
    the mixture, not of each key: shown for contrast.) Measured per key: 0.97 to 1.44 times
    ``10^-x``."""
    rng = np.random.default_rng(6)
    n = 600_000
    keys = rng.choice(["small", "large"], size=n)
    scores = np.where(keys == "small", 1.0, 100.0) * rng.exponential(size=n)
    calibrator = Spot(target_rate=1e-3, window=10_000, warmup=2000, refresh=256, per_key=per_key)
    surprise = feed(calibrator, keys, scores).surprise
    settled = np.arange(n) >= 40_000
    for key in ("small", "large"):
        mine = surprise[settled & (keys == key)]
        shares = [float((mine >= x).mean()) * 10**x for x in (1.0, 2.0, 3.0)]
        if per_key:
            assert all(0.6 <= share <= 1.7 for share in shares), (key, shares)
        else:
            assert not all(0.6 <= share <= 1.7 for share in shares), (key, shares)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    method=st.sampled_from(["quantile", "spot", "dspot"]),
    heavy=st.booleans(),
)
def test_surprise_rises_with_the_score_from_zero_in_the_body(
    seed: int, method: str, heavy: bool
) -> None:
    """Under any one fitted model, surprise never falls as the score rises; it is 0 at and below
    the lowest accepted score, and at most ``MAX_DECADES``."""
    rng = np.random.default_rng(seed)
    options = {"window": 500, "warmup": 200, "refresh": 50}
    calibrator: WindowCalibrator = {
        "quantile": lambda: RollingQuantile(0.95, **options),
        "spot": lambda: Spot(target_rate=1e-2, init_level=0.9, **options),
        "dspot": lambda: Dspot(depth=10, target_rate=1e-2, init_level=0.9, **options),
    }[method]()
    scores = rng.standard_t(2, size=700) if heavy else rng.exponential(size=700)
    calibrator.update(np.zeros(700, str), scores)
    # Exactly one refresh block: every probe is judged by the same model.
    low, high = float(scores.min()), float(scores.max())
    probes = np.sort(
        np.concatenate([np.linspace(low - 1.0, 3 * high, 40), rng.choice(scores, size=9)])
    )
    result = calibrator.update(np.zeros(len(probes), str), probes)
    assert (np.diff(result.surprise) >= 0).all()
    assert (result.surprise >= 0).all() and (result.surprise <= MAX_DECADES).all()
    if method != "dspot":  # DSPOT's body is of residuals, not scores
        assert (result.surprise[probes <= low] == 0).all()


def test_a_warming_key_takes_the_global_surprise() -> None:
    """Like its threshold, a key without a threshold of its own has the global surprise in
    force for each of its scores, exactly; the key's own once it has one."""
    rng = np.random.default_rng(8)
    keys = rng.choice(["busy", "rare"], size=20_000, p=[0.97, 0.03])
    scores = rng.exponential(size=20_000)
    options = {"target_rate": 1e-3, "window": 2000, "warmup": 1000, "refresh": 64}
    result = feed(Spot(per_key=True, **options), keys, scores)
    overall = feed(Spot(**options), keys, scores)
    rare = np.flatnonzero(keys == "rare")
    np.testing.assert_array_equal(result.surprise[rare], overall.surprise[rare])
    busy = np.flatnonzero(keys == "busy")[-1000:]
    assert not np.array_equal(result.surprise[busy], overall.surprise[busy])


def _without(data: bytes, *fields: str) -> bytes:
    """``data`` with ``fields`` removed: a snapshot as tandem wrote it before they existed."""
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    for field in fields:
        del arrays[f"{field}.values"], arrays[f"{field}.lengths"]
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "make",
    [
        lambda: Spot(1e-2, 0.9, window=400, warmup=100, refresh=32, per_key=True),
        lambda: Dspot(8, target_rate=1e-2, init_level=0.9, window=400, warmup=100, refresh=32),
        lambda: RollingQuantile(0.95, window=400, warmup=100, refresh=32, per_key=True),
    ],
    ids=["spot", "dspot", "quantile"],
)
def test_a_snapshot_from_before_surprise_restores(make) -> None:  # type: ignore[no-untyped-def]
    """A snapshot without censoring points and surprise models (format 1, as written before
    them) restores: the same thresholds, and a surprise model fitted on each entity's window at
    once; from the next refresh on, everything is fitted as usual."""
    rng = np.random.default_rng(9)
    source = make()
    keys = rng.choice(["a", "b"], size=1000)
    feed(source, keys, rng.exponential(size=1000))
    old = _without(source.snapshot(), "cuts", "cut_at", "knots", "decades", "tail")
    header = json.loads(np.load(io.BytesIO(old))["header"].tobytes())
    assert header["format"] == state.SNAPSHOT_FORMAT == 1
    restored = make()
    restored.restore(old)
    for key in (None, "a", "b"):
        assert restored.threshold(key) == source.threshold(key)
    after = rng.exponential(size=64)
    result = feed(restored, np.full(64, "a"), after)
    assert np.isfinite(result.surprise).all()
    expected = feed(source, np.full(64, "a"), after)
    assert result.thresholds[0] == expected.thresholds[0], "judged by the saved threshold"
