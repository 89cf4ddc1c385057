"""Surprise: a score's tail probability under its entity's fitted distribution, in decades,
``-log10 P(score >= s)`` (0 at or below the body's lowest score, higher = rarer), so that one
surprise threshold means one false-alarm rate on every key.

At each refresh a calibrator fits, per entity, a ``Model``: the body as knots (scores at ranks of
the window whose exceedance falls geometrically, with the surprise at each; linear in between,
so the survival is log-linear between knots, exact for exponential tails) and, past the last
knot, a tail: a generalised Pareto distribution (SPOT, DSPOT) or a fixed ceiling (the rolling
quantile's floor probability). ``ModelTable`` holds every entity's model in a few arrays;
``evaluate`` gives a batch of scores their surprise, each under its own model, with array
operations (a gather and a multiply-add per score in the body).
Reasoning and measurements: docs/calibration.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

KNOTS = 16
"""Knots per model, a multiple of 8 (see ``_count_true``). SPOT and DSPOT spread 15 over the
body, exceedance 1 to that at ``t`` (0.02 by default: 0.12 decades apart), then ``t``; the
rolling quantile 11 up to its threshold, the threshold, and 4 above it."""

START, XI, SIGMA, DECADES, SHIFT, CEILING = range(6)
TAIL_FIELDS = 6
"""The tail's fields: where it starts (the last knot, in shifted scores), the GPD's shape and
scale (NaN: no GPD, the tail is ``CEILING``), the surprise at its start, the shift subtracted
from scores first (DSPOT's local mean), and the surprise of every score past a tail without GPD."""

MAX_DECADES = 300.0
"""The surprise of a score past the end of a bounded tail (shape < 0: probability 0)."""

_LN10 = float(np.log(10.0))


@dataclass(frozen=True)
class Model:
    """One entity's fitted distribution: ``knots`` (KNOTS,) ascending scores, padded with +inf,
    ``decades`` (KNOTS,) the surprise at each (non-decreasing, the last repeated in the padding),
    ``slopes`` (KNOTS,) decades per unit of score from each knot to the next (0 from the last),
    and ``tail`` (TAIL_FIELDS,) as documented at ``TAIL_FIELDS``. Build it with ``model``."""

    knots: NDArray[np.float64]
    decades: NDArray[np.float64]
    slopes: NDArray[np.float64]
    tail: NDArray[np.float64]


def body(
    ordered: NDArray[np.float64], extra: int, total: int, lowest: float, below: float, count: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Up to ``count`` knots of a body from a sorted window ``ordered`` (k,): the scores at the
    ranks whose share of ``total`` scores at or above them (``extra`` more are known to be
    above every knot) falls geometrically from 1 to ``lowest``, those below ``below``;
    ascending, without repeats. Returns the knots and their shares (a tied score's share counts
    all its ties)."""
    k = len(ordered)
    shares = lowest ** (np.arange(count) / max(count - 1, 1))
    ranks = np.clip(np.ceil(k + extra - shares * total), 0, k - 1).astype(np.int64)
    knots = ordered[ranks]  # ascending: the ranks are
    fresh = np.empty(len(knots), dtype=bool)
    fresh[0] = True
    np.greater(knots[1:], knots[:-1], out=fresh[1:])
    knots = knots[fresh & (knots < below)]
    first = np.searchsorted(ordered, knots, side="left")
    return knots, (k - first + extra) / total


def model(
    knots: NDArray[np.float64], decades: NDArray[np.float64], tail: NDArray[np.float64]
) -> Model:
    """A ``Model`` from up to KNOTS ascending knots and their surprise, padded."""
    pad = KNOTS - len(knots)
    last = decades[-1] if len(decades) else np.nan
    knots = np.concatenate([knots, np.full(pad, np.inf)])
    decades = np.concatenate([decades, np.full(pad, last)])
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        slopes = np.diff(decades) / np.diff(knots)
    # Past the last knot (an infinite width), or over a subnormal width: no slope.
    slopes = np.append(np.where(np.isfinite(slopes), slopes, 0.0), 0.0)
    return Model(knots, decades, slopes, tail)


def evaluate(
    tables: Model,
    rows: NDArray[np.int64],
    scores: NDArray[np.float64],
    blocks: NDArray[np.int64] | None = None,
) -> NDArray[np.float64]:
    """The surprise (n,) of ``scores`` (n,), each under model ``rows`` (n,) of ``tables`` (a
    ``Model`` whose fields have one row per model; NaN under a NaN model). One code path for
    every caller, so a score's surprise is the same bits however it is batched. ``blocks``
    (b + 1,) says that ``rows`` is constant on each slice between two of its entries, which
    saves comparing every score with every knot."""
    tail = tables.tail
    shifted = scores - tail[:, SHIFT][rows]
    if blocks is None:
        above = _count_true(tables.knots[rows] <= shifted[:, None])
    else:
        above = np.empty(len(scores), dtype=np.int64)
        for lo, hi in zip(blocks[:-1].tolist(), blocks[1:].tolist(), strict=True):
            if hi > lo:
                knots_in_force = tables.knots[rows[lo]]
                above[lo:hi] = np.searchsorted(knots_in_force, shifted[lo:hi], side="right")
    # The knot at or below each score (the first, for a score below it).
    at = rows * KNOTS + np.maximum(above - 1, 0)
    knots, decades, slopes = tables.knots.ravel(), tables.decades.ravel(), tables.slopes.ravel()
    with np.errstate(invalid="ignore"):  # an infinite score times a zero slope; the tail's
        result: NDArray[np.float64] = (
            decades[at] + np.maximum(shifted - knots[at], 0.0) * slopes[at]
        )
    past = np.flatnonzero(shifted > tail[:, START][rows])
    if len(past):
        result[past] = _tail(tail[rows[past]], shifted[past])
    return result


_BYTE_SUM = np.uint64(0x0101010101010101)


def _count_true(flags: NDArray[np.bool_]) -> NDArray[np.int64]:
    """How many of each row of (n, KNOTS) C-ordered flags are true: each 8 flags read as one
    64-bit word, whose 0/1 bytes one multiplication sums into its top byte (``count_nonzero``
    along the rows takes twice as long)."""
    words = flags.view(np.uint64)
    count = (words[:, 0] * _BYTE_SUM) >> np.uint64(56)
    for column in range(1, words.shape[1]):
        count += (words[:, column] * _BYTE_SUM) >> np.uint64(56)
    return count.astype(np.int64)


def _tail(tail: NDArray[np.float64], shifted: NDArray[np.float64]) -> NDArray[np.float64]:
    """The surprise of (m,) shifted scores past their tails' starts, tails (m, TAIL_FIELDS)."""
    sigma = tail[:, SIGMA]
    with np.errstate(invalid="ignore"):
        fitted = tail[:, DECADES] + gpd_decades(shifted - tail[:, START], tail[:, XI], sigma)
    return np.minimum(np.where(np.isnan(sigma), tail[:, CEILING], fitted), MAX_DECADES)


def gpd_decades(
    excess: NDArray[np.float64], xi: NDArray[np.float64], sigma: NDArray[np.float64]
) -> NDArray[np.float64]:
    """``-log10`` of a GPD's survival at (n,) positive ``excess`` over its start: ``log10(1 +
    xi x / sigma) / xi`` (``x / (sigma ln 10)`` as xi → 0), MAX_DECADES past a bounded end."""
    small = np.abs(xi) < 1e-9
    scaled = np.where(small, 0.0, xi) * excess / sigma
    with np.errstate(divide="ignore", invalid="ignore"):
        curved = np.log1p(scaled) / np.where(small, 1.0, xi)
    decades = np.where(small, excess / sigma, curved) / _LN10
    return np.where(scaled <= -1.0, MAX_DECADES, decades)


class ModelTable:
    """Every entity's ``Model`` in the rows of one ``Model`` of 2-D arrays (NaN rows: none)."""

    def __init__(self) -> None:
        self.tables = Model(*(np.zeros((0, width)) for width in (KNOTS,) * 3 + (TAIL_FIELDS,)))
        self.puts = np.zeros(0, dtype=np.int64)
        """How many times each row's model was set: equal counts, the same model."""

    def grow(self, rows: int) -> None:
        """Hold ``rows`` rows; new rows have no model."""
        old = len(self.puts)
        if rows > old:
            self.tables = Model(
                *(
                    np.concatenate([table, np.full((rows - old, table.shape[1]), np.nan)])
                    for table in self._columns()
                )
            )
            self.puts = np.concatenate([self.puts, np.zeros(rows - old, dtype=np.int64)])

    def _columns(self) -> tuple[NDArray[np.float64], ...]:
        t = self.tables
        return t.knots, t.decades, t.slopes, t.tail

    def put(self, row: int, fitted: Model | None) -> None:
        """Set a row's model (None: no model)."""
        self.puts[row] += 1
        for table, values in zip(self._columns(), _fields_of(fitted), strict=True):
            table[row] = values

    def get(self, row: int) -> Model:
        """A copy of a row's model (NaN: none)."""
        return Model(*(table[row].copy() for table in self._columns()))

    def surprise(self, rows: NDArray[np.int64], scores: NDArray[np.float64]) -> NDArray[np.float64]:
        """The surprise (n,) of ``scores`` (n,), each under the model of its row in ``rows``
        (n,); NaN under a row without a model."""
        return evaluate(self.tables, rows, scores)

    def fields(self, row: int) -> dict[str, NDArray[np.float64]]:
        """A row's model as snapshot fields (the slopes follow from the rest)."""
        t = self.tables
        return {"knots": t.knots[row], "decades": t.decades[row], "tail": t.tail[row]}

    def load(self, row: int, fields: dict[str, NDArray[np.float64]]) -> None:
        """Load a row's model from snapshot fields; without them (a snapshot written before
        models were kept, or with another KNOTS) the row has none."""
        empty = np.empty(0)
        knots, decades, tail = (fields.get(name, empty) for name in ("knots", "decades", "tail"))
        if len(knots) != KNOTS or len(decades) != KNOTS or len(tail) != TAIL_FIELDS:
            self.put(row, None)
        else:
            self.put(row, model(knots, decades, tail))


def _fields_of(fitted: Model | None) -> tuple[NDArray[np.float64] | float, ...]:
    if fitted is None:
        return (np.nan,) * 4
    return fitted.knots, fitted.decades, fitted.slopes, fitted.tail
