"""The per-key memory (``calibration.memory``): a window like the seed's or like one its key
learned is no news; an anomaly is not learned; the result does not depend on batching; a
snapshot resumes it bit for bit; keys beyond the cap go."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calibration.memory import Memory, MemorySeed, MemorySettings

WIDTH = 4
SMALL = MemorySettings(capacity=300, stride=2, block=16, reference=200, min_reference=32, exclude=8)


def _seed(n: int = 400, width: int = WIDTH, seed: int = 0) -> MemorySeed:
    rng = np.random.default_rng(seed)
    windows = rng.normal(size=(n, width)).astype(np.float32)
    return MemorySeed(windows, np.zeros(width, np.float32), np.ones(width, np.float32))


def _stream(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n windows of two keys (normal noise, a far-away run in the middle) and model scores that
    call every window anomalous (10 decades) except a calm stretch."""
    rng = np.random.default_rng(seed)
    windows = rng.normal(size=(n, WIDTH)).astype(np.float32)
    windows[n // 2 : n // 2 + 10] += 50.0
    keys = np.where(rng.random(n) < 0.5, "a", "b")
    scores = np.full(n, 10.0)
    scores[: n // 4] = 0.5
    return keys, windows, scores


def test_a_window_like_the_seed_is_no_news_and_a_far_one_is() -> None:
    memory = Memory(_seed(), SMALL)
    windows = np.vstack([_seed().windows[200:201], np.full((1, WIDTH), 40.0, np.float32)])
    recall = memory.recall(np.array(["k", "k"]), windows, np.array([9.0, 9.0]))
    assert recall.novelty[0] < 1.0, "a seed window (far from this one's number) is familiar"
    assert recall.novelty[1] > 9.0, "far from everything: the model's score stands"
    assert recall.score[0] == recall.novelty[0] and recall.score[1] == 9.0
    assert recall.learned.tolist() == [True, False]


def test_a_learned_window_joins_at_its_blocks_end_and_an_anomaly_never_does() -> None:
    memory = Memory(_seed(), SMALL)
    novel = np.full((1, WIDTH), 30.0, np.float32)
    calm = _seed(seed=7).windows
    first = memory.recall(np.array(["k"]), novel, np.array([1.0]))  # the model finds it normal
    assert first.learned[0] and first.novelty[0] > 9.0
    memory.recall(np.array(["k"] * 16), calm[:16], np.full(16, 0.5))  # number 1..16 ends block
    again = memory.recall(np.array(["k"]), novel + 0.01, np.array([20.0]))
    assert again.novelty[0] < 1.0, "learned: no longer news"
    storm = memory.recall(
        np.array(["k"] * 64), np.full((64, WIDTH), -30.0, np.float32), np.full(64, 20.0)
    )
    assert not storm.learned.any() and (storm.score == 20.0).all(), "an anomaly stays news"


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=600), max_size=12))
def test_the_result_does_not_depend_on_batching(cuts: list[int]) -> None:
    keys, windows, scores = _stream(600)
    whole = Memory(_seed(), SMALL).recall(keys, windows, scores)
    memory = Memory(_seed(), SMALL)
    bounds = [0, *sorted(set(cuts)), 600]
    parts = [
        memory.recall(keys[a:b], windows[a:b], scores[a:b])
        for a, b in itertools.pairwise(bounds)
        if b > a
    ]
    assert np.array_equal(np.concatenate([p.score for p in parts]), whole.score)
    assert np.array_equal(np.concatenate([p.learned for p in parts]), whole.learned)


@pytest.mark.parametrize("capacity", [300, 40], ids=["seed-left", "seed-gone"])
def test_a_snapshot_resumes_the_memory_bit_for_bit(capacity: int) -> None:
    """Only learned windows are written; the seed's part comes from the seed again."""
    keys, windows, scores = _stream(500)
    small = MemorySettings(**{**SMALL.__dict__, "capacity": capacity})
    straight = Memory(_seed(), small)
    expected = straight.recall(keys, windows, scores).score[300:]
    first = Memory(_seed(), small)
    first.recall(keys[:300], windows[:300], scores[:300])
    resumed = Memory(_seed(), small)
    resumed.restore(first.snapshot(["a", "b", "absent"]))
    assert [len(m.windows) for m in resumed.keys.values()] == [
        len(m.windows) for m in first.keys.values()
    ]
    assert np.array_equal(resumed.recall(keys[300:], windows[300:], scores[300:]).score, expected)


def test_a_damaged_snapshot_changes_nothing() -> None:
    memory = Memory(_seed(), SMALL)
    memory.recall(np.array(["a"] * 20), _seed(seed=3).windows[:20], np.zeros(20))
    saved = memory.snapshot(["a"])
    fresh = Memory(_seed(), SMALL)
    with pytest.raises(ValueError, match="memory snapshot"):
        fresh.restore(saved[:-40])
    with pytest.raises(ValueError, match="memory snapshot"):
        fresh.restore(b"nonsense")
    assert not fresh.keys


def test_keys_beyond_the_cap_go_least_recently_seen_first_but_never_a_batchs_own() -> None:
    capped = MemorySettings(capacity=300, block=16, min_reference=32, max_keys=2)
    memory = Memory(_seed(), capped)
    window = _seed(seed=5).windows[:1]
    for key in ["a", "b", "a", "c"]:
        memory.recall(np.array([key]), window, np.zeros(1))
    assert list(memory.keys) == ["a", "c"]
    assert memory.evicted == 1
    memory.recall(np.array(["x", "y", "z"]), np.repeat(window, 3, axis=0), np.zeros(3))
    assert sorted(memory.keys) == ["x", "y", "z"], "a batch keeps its own keys over the cap"
    assert memory.evicted == 3, "a and c; the daemon counts them in tandem_keys_evicted_total"


def test_a_key_starts_from_the_seed_and_the_seeds_scale() -> None:
    seed = _seed()
    shifted = MemorySeed(
        seed.windows * 100.0 + 7.0,
        np.full(WIDTH, 7.0, np.float32),
        np.full(WIDTH, 100.0, np.float32),
    )
    plain = Memory(seed, SMALL).recall(np.array(["k"]), seed.windows[100:101], np.array([5.0]))
    scaled = Memory(shifted, SMALL).recall(
        np.array(["k"]), shifted.windows[100:101], np.array([5.0])
    )
    assert scaled.novelty[0] == pytest.approx(plain.novelty[0], rel=1e-4)
