"""The Numenta Anomaly Benchmark's score, reimplemented in numpy, so a backtest can be compared with
published NAB results.

A file of rows is scored against labelled windows (time ranges around each true anomaly): a
window's first detection earns up to ``tp`` (less the later in the window), a window with none
costs ``fn``, a detection outside windows costs up to ``fp``; rows in the probationary period
(``probation_rows``) are not scored. The normalised score is ``100 * (raw - null) /
(perfect - null)`` summed over files, with ``null`` a detector that never fires. Departures from
NAB: windows matched to rows by time, overlapping windows merged, a null baseline of never
firing, only scorable windows in ``perfect``, counts per window rather than per row.

NAB's rules in full, and why each departure: docs/evaluation.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from streamer.errors import NabError

PROBATION_FRACTION = 0.15
"""NAB's share of each file's first rows left unscored (capped at ``0.15 * 5000`` rows)."""
PROBATION_CAP_ROWS = 5000
"""NAB caps the probationary period at ``PROBATION_FRACTION`` of this many rows."""


@dataclass(frozen=True)
class Profile:
    """NAB's application profile: the weight of a window caught (``tp``), of a detection outside
    windows (``fp``) and of a window missed (``fn``). NAB's ``tnWeight`` is unused by its scorer."""

    name: str
    tp: float
    fp: float
    fn: float


STANDARD = Profile("standard", tp=1.0, fp=0.11, fn=1.0)
REWARD_LOW_FP = Profile("reward_low_FP_rate", tp=1.0, fp=0.22, fn=1.0)
REWARD_LOW_FN = Profile("reward_low_FN_rate", tp=1.0, fp=0.11, fn=2.0)


@dataclass(frozen=True)
class NabFileScore:
    """One file's NAB score at one threshold: ``raw``, the ``null`` and ``perfect`` scores it is
    normalised between, windows caught (``true_positives``) and missed (``false_negatives``), and
    scored detections outside windows (``false_positives``)."""

    raw: float
    null: float
    perfect: float
    true_positives: int
    false_positives: int
    false_negatives: int


@dataclass(frozen=True)
class _Sweep:
    """What a detection on each of a file's n rows would earn: ``score`` (n,) weighted,
    ``window`` (n,) index of the window holding the row or -1, ``scored`` (n,) false in the
    probationary period; ``windows``: how many windows have a scored row."""

    score: NDArray[np.float64]
    window: NDArray[np.intp]
    scored: NDArray[np.bool_]
    windows: int


def scaled_sigmoid(position: float) -> float:
    """NAB's reward for a detection at ``position`` (in window lengths; -1 at a window's first
    row, 0 past its end, positive after it): ``2 / (1 + exp(5 x)) - 1``, -1 beyond 3."""
    return float(_scaled_sigmoid(np.array([position], dtype=np.float64))[0])


def _scaled_sigmoid(positions: NDArray[np.float64]) -> NDArray[np.float64]:
    curve = 2.0 / (1.0 + np.exp(5.0 * np.minimum(positions, 3.0))) - 1.0
    return np.where(positions > 3.0, -1.0, curve)


def probation_rows(rows: int, fraction: float = PROBATION_FRACTION) -> float:
    """NAB's probationary period of a file of ``rows`` rows: rows with a lower index are not
    scored. A float, as NAB's (``0.15 * 5000`` = 750.0)."""
    return min(math.floor(fraction * rows), fraction * PROBATION_CAP_ROWS)


def nab_file_score(
    ts_ms: NDArray[np.int64],
    detections: NDArray[np.bool_],
    windows: Sequence[tuple[int, int]],
    profile: Profile = STANDARD,
    probation_fraction: float = PROBATION_FRACTION,
) -> NabFileScore:
    """NAB's score of one file: ``ts_ms`` (n,) int64 epoch-ms row timestamps in time order,
    ``detections`` (n,) bool, ``windows`` (start, end) epoch ms, inclusive."""
    detections = np.asarray(detections, dtype=bool)
    sweep = _sweep(ts_ms, windows, profile, probation_fraction)
    if detections.shape != sweep.score.shape:
        raise ValueError(f"detections has shape {detections.shape}, ts_ms {sweep.score.shape}")
    hits = detections & sweep.scored
    outside = hits & (sweep.window < 0)
    inside = np.flatnonzero(hits & (sweep.window >= 0))
    caught, first = np.unique(sweep.window[inside], return_index=True)
    missed = sweep.windows - len(caught)
    raw = (
        float(sweep.score[inside[first]].sum())
        + float(sweep.score[outside].sum())
        - profile.fn * missed
    )
    return NabFileScore(
        raw=raw,
        null=-profile.fn * sweep.windows,
        perfect=profile.tp * sweep.windows,
        true_positives=len(caught),
        false_positives=int(outside.sum()),
        false_negatives=missed,
    )


def normalised_score(scores: Iterable[NabFileScore]) -> float:
    """NAB's normalised score of a corpus scored at one threshold: 0 for a detector that never
    fires, 100 for one that catches every window on its first row."""
    raw = null = perfect = 0.0
    for score in scores:
        raw += score.raw
        null += score.null
        perfect += score.perfect
    if perfect == null:
        raise NabError("the corpus has no scorable window: its normalised NAB score is undefined")
    return 100.0 * (raw - null) / (perfect - null)


def best_threshold(
    files: Sequence[tuple[NDArray[np.int64], NDArray[np.float64], Sequence[tuple[int, int]]]],
    profile: Profile = STANDARD,
    probation_fraction: float = PROBATION_FRACTION,
) -> tuple[float, float]:
    """NAB's optimiser: the one threshold (detection = ``anomaly score >= threshold``) for all
    ``files`` (each ``ts_ms`` (n,) int64 epoch ms in time order, anomaly scores (n,) float,
    windows (start, end) epoch ms inclusive) maximising the normalised corpus score; returns
    (threshold, normalised score). Exhaustive over every distinct scored anomaly score, and over
    firing never (then the threshold is just above the highest score, and the score 0). Ties go
    to the highest threshold, as in NAB. O(N log N) for N rows in all: each row is one change of
    the corpus score at its own anomaly score (a false positive adds its score, a window's new
    best detection adds its gain), and a sort and cumulative sum give every threshold's total."""
    steps: list[NDArray[np.float64]] = []
    gains: list[NDArray[np.float64]] = []
    windows = 0
    for i, (ts_ms, anomaly, spans) in enumerate(files):
        sweep = _sweep(ts_ms, spans, profile, probation_fraction)
        anomaly = np.asarray(anomaly, dtype=np.float64)
        if anomaly.shape != sweep.score.shape:
            raise ValueError(f"file {i}: anomaly scores {anomaly.shape}, ts_ms {sweep.score.shape}")
        if not np.isfinite(anomaly).all():
            row = int(np.flatnonzero(~np.isfinite(anomaly))[0])
            raise NabError(f"file {i}: row {row} has anomaly score {anomaly[row]}; need finite")
        file_steps, file_gains = _threshold_steps(sweep, anomaly, profile)
        steps.append(file_steps)
        gains.append(file_gains)
        windows += sweep.windows
    if windows == 0:
        raise NabError("the corpus has no scorable window: no threshold can be optimised")
    at = np.concatenate(steps)
    gain = np.concatenate(gains)
    order = np.argsort(at, kind="stable")
    at, gain = at[order], gain[order]
    above = np.concatenate((np.cumsum(gain[::-1])[::-1], [0.0]))
    thresholds = np.unique(at)[::-1]
    totals = above[np.searchsorted(at, thresholds, side="left")]
    null = -profile.fn * windows
    span = profile.tp * windows - null
    best = int(np.argmax(totals)) if len(totals) else -1
    if best < 0 or totals[best] <= 0.0:
        never = float(np.nextafter(at[-1], np.inf)) if len(at) else math.inf
        return never, 0.0
    return float(thresholds[best]), float(100.0 * totals[best] / span)


def _threshold_steps(
    sweep: _Sweep, anomaly: NDArray[np.float64], profile: Profile
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Where (at which anomaly score) and by how much a file's raw score rises above its null
    score as the threshold comes down: (k,) thresholds and (k,) gains."""
    outside = sweep.scored & (sweep.window < 0)
    steps = [anomaly[outside]]
    gains = [sweep.score[outside]]
    inside = np.flatnonzero(sweep.scored & (sweep.window >= 0))
    bounds = np.flatnonzero(np.diff(sweep.window[inside])) + 1
    for rows in np.split(inside, bounds) if inside.size else []:
        order = np.argsort(-anomaly[rows], kind="stable")
        best = np.maximum.accumulate(np.concatenate(([-profile.fn], sweep.score[rows][order])))
        steps.append(anomaly[rows][order])
        gains.append(np.diff(best))
    return np.concatenate(steps), np.concatenate(gains)


def _sweep(
    ts_ms: NDArray[np.int64],
    windows: Sequence[tuple[int, int]],
    profile: Profile,
    probation_fraction: float,
) -> _Sweep:
    """NAB's ``calcSweepScore``, vectorised: each row's score were it a detection."""
    ts = np.asarray(ts_ms, dtype=np.int64)
    if ts.ndim != 1:
        raise ValueError(f"ts_ms has shape {ts.shape}; expected (n,)")
    late = np.flatnonzero(np.diff(ts) < 0)
    if late.size:
        raise NabError(
            f"row {int(late[0]) + 1} (ts {int(ts[late[0] + 1])}) is earlier than the row before:"
            " NAB scores rows in time order"
        )
    lefts, rights = _window_rows(ts, windows)
    rows = np.arange(len(ts))
    window = np.searchsorted(lefts, rows, side="right") - 1
    after = window >= 0
    last = np.append(rights, -1)[window]
    width = np.append(rights - lefts + 1, 1)[window]
    inside = after & (rows <= last)
    score = np.full(len(ts), -profile.fp)
    tp_curve = _scaled_sigmoid(-(last - rows + 1) / width) / scaled_sigmoid(-1.0)
    score[inside] = profile.tp * tp_curve[inside]
    past = after & ~inside
    fp_curve = _scaled_sigmoid((rows - last) / np.maximum(width - 1, 1))
    score[past] = profile.fp * fp_curve[past]
    probation = probation_rows(len(ts), probation_fraction)
    return _Sweep(
        score=score,
        window=np.where(inside, window, -1),
        scored=rows >= probation,
        windows=int((rights >= probation).sum()),
    )


def _window_rows(
    ts: NDArray[np.int64], windows: Sequence[tuple[int, int]]
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """First and last rows (k,) each of the windows that hold a row, in time order, windows
    sharing a row merged."""
    spans = np.asarray(windows, dtype=np.int64).reshape(-1, 2)
    backwards = np.flatnonzero(spans[:, 1] < spans[:, 0])
    if backwards.size:
        start, end = spans[backwards[0]].tolist()
        raise NabError(f"window {int(backwards[0])} ends ({end}) before it starts ({start})")
    spans = spans[np.argsort(spans[:, 0], kind="stable")]
    lefts = np.searchsorted(ts, spans[:, 0], side="left")
    rights = np.searchsorted(ts, spans[:, 1], side="right") - 1
    held = lefts <= rights
    merged: list[list[int]] = []
    for left, right in zip(lefts[held].tolist(), rights[held].tolist(), strict=True):
        if merged and left <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], right)
        else:
            merged.append([left, right])
    bounds = np.array(merged, dtype=np.intp).reshape(-1, 2)
    return bounds[:, 0], bounds[:, 1]
