"""NAB's scorer on hand-computed files: where in a window a detection lands, false positives near,
far from and before windows, the probationary period, normalisation, and the threshold optimiser;
the vectorised scorer is also checked against NAB's row-by-row algorithm restated here."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest
from numpy.typing import NDArray

from streamer.backtest.nab import (
    REWARD_LOW_FN,
    REWARD_LOW_FP,
    STANDARD,
    NabFileScore,
    Profile,
    best_threshold,
    nab_file_score,
    normalised_score,
    probation_rows,
    scaled_sigmoid,
)
from streamer.errors import NabError

UNIT = Profile("unit", tp=1.0, fp=1.0, fn=1.0)
"""The cost matrix of NAB's own scorer tests."""
STEP_MS = 1000


def _s(x: float) -> float:
    return -1.0 if x > 3.0 else 2.0 / (1.0 + math.exp(5.0 * x)) - 1.0


def _ts(rows: int) -> NDArray[np.int64]:
    return np.arange(rows, dtype=np.int64) * STEP_MS


def _at(rows: int, *hits: int) -> NDArray[np.bool_]:
    detections = np.zeros(rows, dtype=bool)
    detections[list(hits)] = True
    return detections


def _window(first: int, last: int) -> tuple[int, int]:
    return first * STEP_MS, last * STEP_MS


def test_scaled_sigmoid_matches_nab_docstring_values() -> None:
    assert scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert scaled_sigmoid(-0.5) == pytest.approx(0.84828, abs=1e-5)
    assert scaled_sigmoid(0.0) == 0.0
    assert scaled_sigmoid(1.0) == pytest.approx(-0.98661, abs=1e-5)
    assert scaled_sigmoid(3.0) == pytest.approx(-1.0, abs=1e-6) and scaled_sigmoid(3.0) > -1.0
    assert scaled_sigmoid(3.0001) == -1.0


def test_profiles_are_nabs() -> None:
    assert (STANDARD.tp, STANDARD.fp, STANDARD.fn) == (1.0, 0.11, 1.0)
    assert (REWARD_LOW_FP.tp, REWARD_LOW_FP.fp, REWARD_LOW_FP.fn) == (1.0, 0.22, 1.0)
    assert (REWARD_LOW_FN.tp, REWARD_LOW_FN.fp, REWARD_LOW_FN.fn) == (1.0, 0.11, 2.0)


@pytest.mark.parametrize(
    ("rows", "fraction", "expected"),
    [(100, 0.0, 0), (100, 1.0, 100), (100, 0.15, 15), (5000, 0.1, 500), (6000, 0.1, 500)],
)
def test_probation_rows_as_nab_caps_them(rows: int, fraction: float, expected: int) -> None:
    assert probation_rows(rows, fraction) == expected


def test_detection_on_a_windows_first_row_earns_tp() -> None:
    # Rows 5..9 form the window (w = 5). NAB divides by S(-1) = 0.98661, so the first row earns
    # exactly tp rather than 0.98661 tp.
    score = nab_file_score(_ts(20), _at(20, 5), [_window(5, 9)], STANDARD, 0.0)
    assert score.raw == pytest.approx(1.0)
    assert score == NabFileScore(
        score.raw, null=-1.0, perfect=1.0, true_positives=1, false_positives=0, false_negatives=0
    )
    doubled = Profile("double", tp=2.0, fp=0.11, fn=1.0)
    assert nab_file_score(_ts(20), _at(20, 5), [_window(5, 9)], doubled, 0.0).raw == 2.0


@pytest.mark.parametrize(("row", "position"), [(7, -0.6), (9, -0.2)])
def test_later_detection_in_a_window_earns_less(row: int, position: float) -> None:
    score = nab_file_score(_ts(20), _at(20, row), [_window(5, 9)], STANDARD, 0.0)
    assert score.raw == pytest.approx(_s(position) / _s(-1.0))


def test_only_the_first_detection_in_a_window_counts() -> None:
    score = nab_file_score(_ts(20), _at(20, 6, 8, 9), [_window(5, 9)], STANDARD, 0.0)
    assert score.raw == pytest.approx(_s(-0.8) / _s(-1.0))
    assert (score.true_positives, score.false_positives, score.false_negatives) == (1, 0, 0)


def test_false_positive_far_after_a_window_costs_fp() -> None:
    score = nab_file_score(_ts(40), _at(40, 30), [_window(5, 9)], STANDARD, 0.0)
    assert score.raw == pytest.approx(-1.0 - 0.11)
    assert (score.true_positives, score.false_positives, score.false_negatives) == (0, 1, 1)


def test_false_positive_just_after_a_window_costs_less() -> None:
    # One row past a window of 5 rows: position (10 - 9) / (5 - 1).
    score = nab_file_score(_ts(40), _at(40, 10), [_window(5, 9)], STANDARD, 0.0)
    assert score.raw == pytest.approx(-1.0 + 0.11 * _s(0.25))
    assert 0.11 * _s(0.25) == pytest.approx(-0.06101, abs=1e-5)


def test_false_positive_before_any_window_costs_fp() -> None:
    score = nab_file_score(_ts(40), _at(40, 2), [_window(5, 9)], STANDARD, 0.0)
    assert score.raw == pytest.approx(-1.0 - 0.11)
    no_windows = nab_file_score(_ts(40), _at(40, 2), [], STANDARD, 0.0)
    assert (no_windows.raw, no_windows.null, no_windows.perfect) == (-0.11, 0.0, 0.0)


def test_nab_scoring_all_metrics_case() -> None:
    # NAB's tests/unit/scorer_test.py testScoringAllMetrics: 100 rows, windows of 5 rows at rows
    # 30 and 65, detections on rows 30, 31 and 37, unit costs: -0.9540.
    score = nab_file_score(
        _ts(100), _at(100, 30, 31, 37), [_window(30, 34), _window(65, 69)], UNIT, 0.0
    )
    assert score.raw == pytest.approx(-0.9540, abs=1e-4)
    assert (score.true_positives, score.false_positives, score.false_negatives) == (1, 1, 1)


def test_nab_right_edge_case() -> None:
    # NAB's true_positive_test testTruePositiveAtRightEdgeOfWindow: the score crosses zero between
    # a window's last row and the next: TP on the last row + FP on the next + 1 (the FN) ~ 0.
    window = [_window(450, 549)]
    on_edge = nab_file_score(_ts(1000), _at(1000, 549), window, UNIT, 0.0)
    after = nab_file_score(_ts(1000), _at(1000, 550), window, UNIT, 0.0)
    assert on_edge.raw + after.raw + 1 == pytest.approx(0.0, abs=1e-3)


def test_probationary_rows_are_not_scored() -> None:
    # 40 rows: floor(0.15 * 40) = 6 rows of probation. The window at rows 0..3 lies within it and
    # does not count; the one at rows 4..8 does, from row 6 on.
    windows = [_window(0, 3), _window(4, 8)]
    early = nab_file_score(_ts(40), _at(40, 1, 5, 20), windows)
    assert (early.null, early.perfect) == (-1.0, 1.0)
    assert (early.true_positives, early.false_positives, early.false_negatives) == (0, 1, 1)
    scored = nab_file_score(_ts(40), _at(40, 6), windows)
    assert scored.raw == pytest.approx(_s(-(8 - 6 + 1) / 5) / _s(-1.0))
    assert nab_file_score(_ts(40), _at(40, 5), [], STANDARD).raw == 0.0
    assert nab_file_score(_ts(40), _at(40, 6), [], STANDARD).raw == pytest.approx(-0.11)


def test_windows_are_matched_to_rows_by_time() -> None:
    # Bounds between rows: the window holds rows 5..9; one between two rows holds none.
    score = nab_file_score(_ts(20), _at(20, 5), [(4500, 9500), (12100, 12900)], STANDARD, 0.0)
    assert score.raw == pytest.approx(1.0)
    assert score.null == -1.0


def test_overlapping_windows_are_merged() -> None:
    score = nab_file_score(_ts(20), _at(20, 7), [_window(5, 8), _window(7, 9)], STANDARD, 0.0)
    assert score.null == -1.0
    assert score.raw == pytest.approx(_s(-(9 - 7 + 1) / 5) / _s(-1.0))


def test_one_row_window_does_not_divide_by_zero() -> None:
    score = nab_file_score(_ts(20), _at(20, 6), [_window(5, 5)], STANDARD, 0.0)
    assert score.raw == pytest.approx(-1.0 + 0.11 * _s(1.0))


def test_null_detector_scores_0_and_perfect_detector_100() -> None:
    corpus = [(_ts(100), [_window(30, 39), _window(70, 74)]), (_ts(60), [_window(40, 49)])]
    null = [nab_file_score(ts, np.zeros(len(ts), bool), spans) for ts, spans in corpus]
    firsts = [
        nab_file_score(ts, _at(len(ts), *[int(start // STEP_MS) for start, _ in spans]), spans)
        for ts, spans in corpus
    ]
    assert normalised_score(null) == 0.0
    assert normalised_score(firsts) == pytest.approx(100.0)
    assert [score.null for score in null] == [-2.0, -1.0]


def test_normalised_score_without_windows_is_undefined() -> None:
    with pytest.raises(NabError, match="no scorable window"):
        normalised_score([nab_file_score(_ts(10), np.zeros(10, bool), [])])


def _toy_corpus() -> list[tuple[NDArray[np.int64], NDArray[np.float64], list[tuple[int, int]]]]:
    # File A: window rows 50..59, a 0.9 on row 52 (TP), FPs 0.7 on row 80 and 0.5 on row 20.
    # File B: window rows 30..39, a 0.6 on row 35 (TP), an FP 0.95 on row 70.
    a = np.zeros(100)
    a[[52, 80, 20]] = [0.9, 0.7, 0.5]
    b = np.zeros(100)
    b[[35, 70]] = [0.6, 0.95]
    return [(_ts(100), a, [_window(50, 59)]), (_ts(100), b, [_window(30, 39)])]


def test_best_threshold_on_a_toy_corpus() -> None:
    corpus = _toy_corpus()
    threshold, normalised = best_threshold(corpus, STANDARD)
    assert threshold == 0.6
    scores = [nab_file_score(ts, anomaly >= 0.6, spans) for ts, anomaly, spans in corpus]
    assert normalised == pytest.approx(normalised_score(scores))
    raw = -0.11 + _s(-0.8) / _s(-1.0) + 0.11 * _s(21 / 9) + _s(-0.5) / _s(-1.0)
    assert normalised == pytest.approx(100 * (raw + 2) / 4)


def test_best_threshold_never_fires_when_every_detection_costs() -> None:
    anomaly = np.zeros(100)
    anomaly[20] = 1.0
    threshold, normalised = best_threshold([(_ts(100), anomaly, [_window(50, 54)])])
    assert normalised == 0.0
    assert threshold > 1.0 and not (anomaly >= threshold).any()


def test_best_threshold_rejects_nan_scores() -> None:
    anomaly = np.zeros(10)
    anomaly[3] = np.nan
    with pytest.raises(NabError, match="row 3"):
        best_threshold([(_ts(10), anomaly, [_window(5, 6)])])


def test_bad_rows_and_windows_raise_nab_error() -> None:
    with pytest.raises(NabError, match="row 2"):
        nab_file_score(np.array([0, 2, 1], dtype=np.int64), np.zeros(3, bool), [])
    with pytest.raises(NabError, match="window 0 ends"):
        nab_file_score(_ts(3), np.zeros(3, bool), [(2000, 1000)])


def _nab_rows(
    rows: int,
    detections: NDArray[np.bool_],
    windows: Sequence[tuple[int, int]],
    profile: Profile,
    probation: float,
) -> float:
    """NAB's sweeper restated row by row, windows as (first row, last row), for cross-checking."""
    best: dict[int, float] = {}
    false_positives = 0.0
    previous: tuple[int, int] | None = None
    for i in range(rows):
        current = next((w for w, (lo, hi) in enumerate(windows) if lo <= i <= hi), None)
        if current is not None:
            lo, hi = windows[current]
            value = profile.tp * _s(-(hi - i + 1) / (hi - lo + 1)) / _s(-1.0)
        elif previous is None:
            value = -profile.fp
        else:
            value = profile.fp * _s((i - previous[1]) / (previous[1] - previous[0]))
        if i >= probation:
            if current is not None:
                best.setdefault(current, -profile.fn)
                if detections[i]:
                    best[current] = max(best[current], value)
            elif detections[i]:
                false_positives += value
        if current is not None and i == windows[current][1]:
            previous = windows[current]
    return sum(best.values()) + false_positives


@pytest.mark.parametrize("seed", range(20))
def test_vectorised_scorer_agrees_with_nabs_row_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows = int(rng.integers(30, 120))
    cuts = np.sort(rng.choice(np.arange(1, rows), size=6, replace=False))
    windows = [(int(cuts[k]), int(cuts[k + 1])) for k in (0, 2, 4) if cuts[k + 1] > cuts[k]]
    detections = rng.random(rows) < 0.15
    profile = (STANDARD, REWARD_LOW_FP, REWARD_LOW_FN, UNIT)[seed % 4]
    fraction = (0.0, 0.15)[seed % 2]
    score = nab_file_score(
        _ts(rows), detections, [_window(lo, hi) for lo, hi in windows], profile, fraction
    )
    expected = _nab_rows(rows, detections, windows, profile, probation_rows(rows, fraction))
    assert score.raw == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(10))
def test_best_threshold_agrees_with_trying_every_threshold(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    corpus = []
    for _ in range(3):
        rows = int(rng.integers(40, 100))
        start = int(rng.integers(10, rows - 10))
        spans = [_window(start, start + int(rng.integers(0, 8)))]
        corpus.append((_ts(rows), np.round(rng.random(rows), 1), spans))
    threshold, normalised = best_threshold(corpus, STANDARD)
    candidates = sorted({float(v) for _, anomaly, _ in corpus for v in anomaly}, reverse=True)
    tried = [
        normalised_score(nab_file_score(ts, a >= t, spans) for ts, a, spans in corpus)
        for t in candidates
    ]
    assert normalised == pytest.approx(max([0.0, *tried]))
    if normalised > 0:
        assert threshold == candidates[int(np.argmax(tried))]
