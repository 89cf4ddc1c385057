"""Readings cut into windows by the windower: the windows a file cut with --window gives, under
any batching, across a checkpoint, with late readings, gaps and missing values handled."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.ingest.readings import Windower
from streamer.ingest.windows import sliding_windows
from streamer.records import NO_LABEL, SourceRecord, WindowBatch

CHANNELS = ("temp", "flow")


def readings(keys: list[str], ts: list[int], values: np.ndarray, first: int = 0) -> WindowBatch:
    """A decoded batch of readings (n, C), offsets from ``first``."""
    n = len(keys)
    return WindowBatch(
        records=[SourceRecord("in", 0, first + i, None, b"", ts[i]) for i in range(n)],
        keys=np.array(keys, dtype=str),
        ts_ms=np.array(ts, dtype=np.int64),
        windows=np.asarray(values, dtype=np.float32).reshape(n, len(CHANNELS)),
        labels=np.full(n, NO_LABEL, dtype=np.int8),
    )


def run(windower: Windower, batch: WindowBatch, sizes: list[int]) -> tuple[list, list]:
    """Feed ``batch`` in pieces of ``sizes`` (cycled), applying each cut; the windows made
    (offset, key, window) and the dead letters (offset, reason)."""
    made, dead, start, turn = [], [], 0, 0
    while start < len(batch):
        stop = min(start + sizes[turn % len(sizes)], len(batch))
        turn += 1
        piece = WindowBatch(
            batch.records[start:stop],
            batch.keys[start:stop],
            batch.ts_ms[start:stop],
            batch.windows[start:stop],
            batch.labels[start:stop],
        )
        windows, letters, cut = windower.cut(piece)
        windower.apply(cut)
        made += [
            (r.offset, k, w.tolist())
            for r, k, w in zip(windows.records, windows.keys.tolist(), windows.windows, strict=True)
        ]
        dead += [(d.record.offset, d.reason) for d in letters]
        start = stop
    return made, dead


def expected(batch: WindowBatch, steps: int, stride: int) -> list:
    """What ``--window steps --stride stride`` cuts from the same readings, per key, in order."""
    out = []
    for key in dict.fromkeys(batch.keys.tolist()):
        rows = np.flatnonzero(batch.keys == key)
        windows = sliding_windows(batch.windows[rows], steps, stride)
        ends = np.arange(len(windows)) * stride + steps - 1
        out += [(int(rows[e]), key, w.tolist()) for e, w in zip(ends, windows, strict=True)]
    return sorted(out)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=60),
    st.integers(1, 5),
    st.integers(1, 3),
    st.lists(st.integers(1, 17), min_size=1, max_size=4),
)
def test_any_batching_gives_the_windows_a_file_cut_gives(
    keys: list[str], steps: int, stride: int, sizes: list[int]
) -> None:
    values = np.random.default_rng(len(keys)).normal(size=(len(keys), 2))
    batch = readings(keys, list(range(1000, 1000 + len(keys))), values)
    made, dead = run(Windower(steps, CHANNELS, stride), batch, sizes)
    assert dead == []
    assert sorted(made) == expected(batch, steps, stride)
    assert [m[0] for m in made] == sorted(m[0] for m in made), "windows in stream order"


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 59), st.lists(st.integers(1, 13), min_size=1, max_size=3))
def test_a_restart_from_a_snapshot_continues_without_a_hole_or_a_repeat(
    split: int, sizes: list[int]
) -> None:
    keys = ["a", "b", "c"] * 20
    batch = readings(keys, list(range(60)), np.random.default_rng(1).normal(size=(60, 2)))
    whole, _ = run(Windower(4, CHANNELS, 2), batch, sizes)
    first = Windower(4, CHANNELS, 2)
    before, _ = run(first, _rows(batch, 0, split), sizes)
    second = Windower(4, CHANNELS, 2)
    second.restore(first.snapshot(["a", "b", "c"]))
    after, _ = run(second, _rows(batch, split, 60), sizes)
    assert before + after == whole


def _rows(batch: WindowBatch, start: int, stop: int) -> WindowBatch:
    return WindowBatch(
        batch.records[start:stop],
        batch.keys[start:stop],
        batch.ts_ms[start:stop],
        batch.windows[start:stop],
        batch.labels[start:stop],
    )


def test_late_and_repeated_readings_are_dead_letters_and_change_nothing() -> None:
    values = np.arange(12, dtype=np.float32).reshape(6, 2)
    batch = readings(["a"] * 6, [10, 20, 20, 15, 30, 40], values)
    made, dead = run(Windower(2, CHANNELS), batch, [4])
    assert dead == [
        (2, "reading at ts 20 is not after its key's last at 20 (late or repeated)"),
        (3, "reading at ts 15 is not after its key's last at 20 (late or repeated)"),
    ]
    assert [(offset, window) for offset, _, window in made] == [
        (1, [0, 1, 2, 3]),
        (4, [2, 3, 8, 9]),
        (5, [8, 9, 10, 11]),
    ]


def test_a_gap_longer_than_the_limit_restarts_the_series() -> None:
    batch = readings(["a"] * 5, [0, 10, 20, 100, 110], np.arange(10).reshape(5, 2))
    made, _ = run(Windower(2, CHANNELS, max_gap_ms=50), batch, [2, 1])
    assert [offset for offset, _, _ in made] == [1, 2, 4], "no window spans 20 → 100"


def test_fill_previous_takes_the_keys_last_reading_and_refuses_a_first_one() -> None:
    values = np.array([[np.nan, 1], [2, 3], [np.nan, 5], [6, np.nan]], dtype=np.float32)
    batch = readings(["a"] * 4, [1, 2, 3, 4], values)
    made, dead = run(Windower(2, CHANNELS, fill_previous=True), batch, [1])
    assert dead == [
        (0, "reading's 'temp' is missing, with no earlier reading of its key to fill it from")
    ]
    assert [window for _, _, window in made] == [[2, 3, 2, 5], [2, 5, 6, 5]]


def test_keys_beyond_the_cap_drop_the_least_recently_seen() -> None:
    windower = Windower(3, CHANNELS, max_keys=2)
    batch = readings(["a", "b", "a", "c"], [1, 2, 3, 4], np.zeros((4, 2)))
    run(windower, batch, [1])
    assert windower.keys == ["a", "c"] and windower.dropped == 1


def test_buffers_of_another_window_shape_are_not_restored() -> None:
    first = Windower(5, CHANNELS)
    run(first, readings(["a"] * 4, [1, 2, 3, 4], np.zeros((4, 2))), [4])
    second = Windower(3, CHANNELS)
    second.restore(first.snapshot(["a"]))
    assert second.keys == []


@pytest.mark.parametrize("steps", [1, 3])
def test_an_empty_batch_cuts_nothing(steps: int) -> None:
    windows, dead, _ = Windower(steps, CHANNELS).cut(readings([], [], np.empty((0, 2))))
    assert len(windows) == 0 and windows.windows.shape == (0, steps * 2) and not dead
