"""What every calibrator owes the daemon, backtests and restarts, checked over all of them
(``RollingQuantile``, ``Spot`` and ``Dspot``, each global and per key): a restart from a snapshot
changes no flag, batching changes no flag, no threshold during warm-up, flagged scores never
teach the calibrator anything, keys route to the global state as documented, and bad snapshots
and bad calls are refused with the package's errors, leaving the calibrator as it was.

Each kind also runs adapting (``ADAPTING``: ``adapt_after`` a couple of refreshes, where a
shifted stretch makes entities take flagged scores as their new normal): restarts and batching
still change nothing, bit for bit, with the adapting state in the snapshots.

Windows are small (a few dozen scores) so a few hundred scores warm every entity up. Equality is
bit for bit: a backtest must flag exactly what the daemon flagged.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from calibration import state
from calibration.base import Flags
from calibration.errors import CalibrationError, SnapshotError
from calibration.evt import Dspot, Spot
from calibration.quantile import RollingQuantile
from calibration.window import WindowCalibrator

WINDOW, WARMUP, REFRESH = 64, 24, 8
"""Small enough that a few hundred scores fill every window and warm every key up."""


@dataclass(frozen=True)
class Kind:
    """One calibrator configuration under test, built fresh (with overrides) by ``make``."""

    cls: type[WindowCalibrator]
    options: Mapping[str, Any]
    other_level: Mapping[str, Any]
    """Overrides that change the level (quantile, target rate) but not the window machinery."""
    per_key: bool
    prior: NDArray[np.float64] | None = None
    """Scores every entity starts from (``start_from``), or None."""

    @property
    def method(self) -> str:
        return self.cls.method

    def make(self, **overrides: Any) -> WindowCalibrator:
        made = self.cls(**{**self.options, "per_key": self.per_key, **overrides})
        if self.prior is not None:
            made.start_from(self.prior)
        return made


_WINDOWING = {"window": WINDOW, "warmup": WARMUP, "refresh": REFRESH}
# SPOT needs 10 peaks over its initial threshold: init_level 0.7 gives ~19 in a full window.
_EVT = {"target_rate": 0.02, "init_level": 0.7, **_WINDOWING}
_METHODS: list[tuple[type[WindowCalibrator], dict[str, Any], dict[str, Any]]] = [
    (RollingQuantile, {"quantile": 0.9, **_WINDOWING}, {"quantile": 0.6}),
    (Spot, _EVT, {"target_rate": 0.005}),
    (Dspot, {"depth": 6, **_EVT}, {"target_rate": 0.005}),
]
KINDS: dict[str, Kind] = {
    f"{cls.method}-{'per_key' if per_key else 'global'}": Kind(cls, options, other, per_key)
    for cls, options, other in _METHODS
    for per_key in (False, True)
}


ADAPT_AFTER = 2 * REFRESH
"""Short enough that the shifted stretches of ``streams`` and ``regimes`` make entities adapt."""
ADAPTING: dict[str, Kind] = {
    f"{name}-adapting": Kind(
        k.cls, {**k.options, "adapt_after": ADAPT_AFTER}, k.other_level, k.per_key
    )
    for name, k in KINDS.items()
}
PRIOR = np.random.default_rng(99).exponential(size=60)
"""A model's held-out scores, as many as SPOT needs to fit from (50) and fewer than a window."""
STARTED: dict[str, Kind] = {
    f"{name}-started": Kind(k.cls, k.options, k.other_level, k.per_key, PRIOR)
    for name, k in {**KINDS, **ADAPTING}.items()
}
EVERY_KIND = {**KINDS, **ADAPTING, **STARTED}


@pytest.fixture(scope="module", params=list(KINDS))
def kind(request: pytest.FixtureRequest) -> Kind:
    return EVERY_KIND[request.param]


every_kind = pytest.mark.parametrize("kind", list(EVERY_KIND), indirect=True)
"""For a test that must hold whether or not the calibrator adapts: ``kind`` over all of them."""


@pytest.fixture(scope="module", params=list(ADAPTING))
def adapting_kind(request: pytest.FixtureRequest) -> Kind:
    return ADAPTING[request.param]


@pytest.fixture(scope="module", params=[name for name, k in KINDS.items() if not k.per_key])
def global_kind(request: pytest.FixtureRequest) -> Kind:
    return KINDS[request.param]


@pytest.fixture(scope="module", params=[name for name, k in KINDS.items() if k.per_key])
def per_key_kind(request: pytest.FixtureRequest) -> Kind:
    return KINDS[request.param]


@dataclass(frozen=True)
class Stream:
    """Scores (n,) of entities ``keys`` (n,), in stream order."""

    keys: NDArray[np.str_]
    scores: NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.scores)

    def split(self, cuts: Sequence[int]) -> list[Stream]:
        return [
            Stream(k, s)
            for k, s in zip(np.split(self.keys, cuts), np.split(self.scores, cuts), strict=True)
        ]

    def __add__(self, other: Stream) -> Stream:
        return Stream(
            np.concatenate([self.keys, other.keys]), np.concatenate([self.scores, other.scores])
        )


def calm(seed: int, n: int, keys: Sequence[str], scale: float = 1.0) -> Stream:
    """Exponential scores of ``keys`` drawn at random: a stationary stream with no anomaly."""
    rng = np.random.default_rng(seed)
    return Stream(rng.choice(list(keys), size=n), scale * rng.exponential(size=n))


_SHAPES: dict[str, Callable[[np.random.Generator, int], NDArray[np.float64]]] = {
    "exponential": lambda rng, n: rng.exponential(size=n),
    "student_t3": lambda rng, n: rng.standard_t(3, size=n),  # heavy tails, negative scores
    "ties": lambda rng, n: rng.integers(0, 5, size=n).astype(np.float64),  # score == threshold
    "level_shift": lambda rng, n: rng.exponential(size=n) + 4.0 * (np.arange(n) >= n // 2),
}


@st.composite
def streams(draw: st.DrawFn, min_size: int = 0, max_size: int = 300) -> Stream:
    """A stream of 1 to 4 keys with skewed shares (some keys never warm up), scores of one of
    ``_SHAPES``, and up to a dozen scores overwritten with values Hypothesis picks (spikes,
    negative values, zeros, subnormals)."""
    n = draw(st.integers(min_size, max_size), label="n")
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="seed"))
    scores = _SHAPES[draw(st.sampled_from(sorted(_SHAPES)), label="shape")](rng, n)
    names = [f"k{i}" for i in range(draw(st.integers(1, 4), label="keys"))]
    keys = rng.choice(names, size=n, p=rng.dirichlet(np.ones(len(names))))
    if n:
        values = st.floats(-1e3, 1e6, allow_nan=False, allow_infinity=False)
        for at, value in draw(st.lists(st.tuples(st.integers(0, n - 1), values), max_size=12)):
            scores[at] = value
    return Stream(keys, scores)


def cut_points(n: int, max_cuts: int = 8) -> st.SearchStrategy[list[int]]:
    """Sorted batch boundaries in [0, n]; repeats give empty batches."""
    return st.lists(st.integers(0, n), max_size=max_cuts).map(sorted)


def feed(calibrator: WindowCalibrator, stream: Stream, cuts: Sequence[int] = ()) -> Flags:
    """``update`` with each batch of ``stream`` cut at ``cuts``, checking every answer against
    what ``Flags`` documents; the answers joined."""
    pieces = []
    for part in stream.split(cuts):
        result = calibrator.update(part.keys, part.scores)
        assert result.thresholds.shape == result.flags.shape == result.surprise.shape
        assert result.flags.shape == (len(part),)
        assert result.thresholds.dtype == result.surprise.dtype == np.float64
        assert result.flags.dtype == np.bool_
        np.testing.assert_array_equal(result.flags, part.scores > result.thresholds)
        # A surprise exactly where a threshold is in force (the same fit gave both), never < 0.
        np.testing.assert_array_equal(np.isnan(result.surprise), np.isnan(result.thresholds))
        assert not (result.surprise < 0).any()
        pieces.append(result)
    return joined(pieces)


def joined(pieces: Sequence[Flags]) -> Flags:
    return Flags(
        np.concatenate([p.thresholds for p in pieces]),
        np.concatenate([p.flags for p in pieces]),
        np.concatenate([p.surprise for p in pieces]),
    )


def bits(values: NDArray[np.float64] | float) -> NDArray[np.uint64]:
    return np.ascontiguousarray(values, dtype=np.float64).view(np.uint64)


def assert_same_flags(
    actual: Flags, expected: Flags, same_scores: NDArray[np.bool_] | None = None
) -> None:
    """Same flags and the same thresholds bit for bit (NaN where warming, in the same places),
    and the same surprise bit for bit (only where ``same_scores``, when the scores differ)."""
    np.testing.assert_array_equal(actual.flags, expected.flags)
    np.testing.assert_array_equal(actual.thresholds, expected.thresholds)  # readable diff first
    np.testing.assert_array_equal(bits(actual.thresholds), bits(expected.thresholds))
    where = np.ones(len(actual), bool) if same_scores is None else same_scores
    np.testing.assert_array_equal(actual.surprise[where], expected.surprise[where])
    np.testing.assert_array_equal(bits(actual.surprise[where]), bits(expected.surprise[where]))


def states(calibrator: WindowCalibrator) -> tuple[dict[str, Any], dict[str, dict[str, bytes]]]:
    """Parameters and each entity's fields as raw bytes, from a snapshot: comparable with ``==``
    whatever the order in which entities were first seen."""
    params, entities = state.unpack(calibrator.snapshot(), calibrator.method)
    raw = {name: {f: v.tobytes() for f, v in fields.items()} for name, fields in entities.items()}
    return params, raw


def assert_same_thresholds(
    actual: WindowCalibrator, expected: WindowCalibrator, keys: Sequence[str | None]
) -> None:
    for key in keys:
        assert bits(actual.threshold(key)) == bits(expected.threshold(key)), key


def restarted(kind: Kind, calibrator: WindowCalibrator) -> WindowCalibrator:
    """A fresh calibrator restored from ``calibrator``'s snapshot, as after a daemon restart."""
    fresh = kind.make()
    fresh.restore(calibrator.snapshot())
    return fresh


# --- 1. restarts --------------------------------------------------------------------------------


@every_kind
@settings(max_examples=12, deadline=None)
@given(stream=streams(), data=st.data())
def test_restarting_from_a_snapshot_between_any_batches_changes_nothing(
    kind: Kind, stream: Stream, data: st.DataObject
) -> None:
    """The daemon restarts from its last snapshot: the flags, thresholds and final state must be
    those of a run that never stopped, wherever the restarts fell (warm-up included)."""
    straight = kind.make()
    expected = feed(straight, stream)
    calibrator = kind.make()
    pieces = []
    for part in stream.split(data.draw(cut_points(len(stream), max_cuts=5), label="restarts")):
        pieces.append(feed(calibrator, part))
        calibrator = restarted(kind, calibrator)
    assert_same_flags(joined(pieces), expected)
    assert states(calibrator) == states(straight)
    assert_same_thresholds(calibrator, straight, [None, *straight.keys, "never seen"])


@every_kind
def test_restarts_after_the_warm_up_with_several_keys_change_nothing(kind: Kind) -> None:
    """The common case, pinned down: every entity has its own threshold when the daemon stops
    (checked), some scores are flagged afterwards, and restarts come one score apart too."""
    stream = calm(1, 900, ["a", "b", "c"]) + calm(2, 300, ["a", "b", "c"], scale=1.5)
    straight = kind.make()
    expected = feed(straight, stream)
    calibrator = kind.make()
    cuts = [400, 401, 405, 700, 1000]
    pieces = [feed(calibrator, stream.split(cuts)[0])]
    warmed = [None, *calibrator.keys]
    assert len(warmed) == (4 if kind.per_key else 1)
    assert all(np.isfinite(calibrator.threshold(key)) for key in warmed), "warmed up at the cut"
    if kind.per_key:
        own = {calibrator.threshold(key) for key in "abc"}
        assert calibrator.threshold(None) not in own, "each key has a threshold of its own"
    for part in stream.split(cuts)[1:]:
        calibrator = restarted(kind, calibrator)
        pieces.append(feed(calibrator, part))
    assert expected.flags[400:].any(), "something is flagged after the first restart"
    assert_same_flags(joined(pieces), expected)
    assert states(calibrator) == states(straight)
    assert_same_thresholds(calibrator, straight, warmed)


@every_kind
def test_a_partial_snapshot_hands_over_only_its_keys(kind: Kind) -> None:
    """A daemon taking over a partition restores that partition's keys and keeps its own global
    state (``with_global=False``); those keys then go on exactly as at their previous owner. A
    global calibrator has no key states, so there is nothing to hand over."""
    source, target = kind.make(), kind.make()
    feed(source, calm(1, 600, ["a", "b", "c"]))
    feed(target, calm(2, 600, ["c", "d"], scale=3.0))  # another global state, another "c"
    handed = source.snapshot(keys=["a", "c"])
    assert sorted(state.entity_names(handed)) == (
        [state.GLOBAL, "a", "c"] if kind.per_key else [""]
    )
    before, handed_states = states(target), states(source)
    target_global = target.threshold()
    target.restore(handed, with_global=False)
    after = states(target)
    assert after[1][state.GLOBAL] == before[1][state.GLOBAL]
    assert bits(target.threshold()) == bits(target_global)
    if not kind.per_key:
        assert after == before
        return
    assert sorted(target.keys) == ["a", "c", "d"]
    assert after[1]["a"] == handed_states[1]["a"]
    assert after[1]["c"] == handed_states[1]["c"]
    assert after[1]["d"] == before[1]["d"]
    continuation = calm(3, 300, ["a", "c"])
    assert_same_flags(feed(target, continuation), feed(source, continuation))

    whole = kind.make()
    feed(whole, calm(2, 600, ["c", "d"], scale=3.0))
    whole.restore(source.snapshot(keys=["a"]))  # with_global=True: the global state comes too
    assert states(whole)[1][state.GLOBAL] == states(source)[1][state.GLOBAL]
    assert sorted(whole.keys) == ["a", "c", "d"]
    assert_same_thresholds(whole, source, [None, "a"])


# --- 2. batching --------------------------------------------------------------------------------


@every_kind
@settings(max_examples=20, deadline=None)
@given(stream=streams(), data=st.data())
def test_flags_do_not_depend_on_how_the_stream_is_batched(
    kind: Kind, stream: Stream, data: st.DataObject
) -> None:
    """A backtest reads the same scores in other batches than the daemon did, and must flag
    exactly what it flagged: thresholds move at per-entity counts, not at batch boundaries."""
    whole = kind.make()
    expected = feed(whole, stream)
    split = kind.make()
    assert_same_flags(
        feed(split, stream, data.draw(cut_points(len(stream)), label="cuts")), expected
    )
    assert states(split) == states(whole)


@every_kind
def test_one_score_at_a_time_equals_one_batch(kind: Kind) -> None:
    """The extreme batching, too long for every Hypothesis example: n calls of one score."""
    stream = calm(4, 500, ["a", "b", "c"])
    whole, single = kind.make(), kind.make()
    expected = feed(whole, stream)
    assert expected.flags.any()
    assert_same_flags(feed(single, stream, range(1, len(stream))), expected)
    assert states(single) == states(whole)


@every_kind
def test_thresholds_change_only_when_a_refresh_block_ends(kind: Kind) -> None:
    """Thresholds are recomputed every ``refresh`` scores an entity sees; with one key, its
    blocks and the global state's coincide, so the threshold is constant within each block."""
    stream = calm(5, 50 * REFRESH, ["only"])
    result = feed(kind.make(), stream, [3, 17, 18, 100, 333])
    blocks = bits(result.thresholds).reshape(-1, REFRESH)
    assert (blocks == blocks[:, :1]).all()
    assert len(np.unique(blocks[:, 0])) > 10, "the threshold does move between blocks"


# --- 3. warm-up ---------------------------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_nothing_is_flagged_before_the_warm_up_is_done(kind: Kind, data: st.DataObject) -> None:
    """No threshold (NaN, as ``Flags`` and ``threshold`` document) and no flag until ``warmup``
    scores were accepted: not for the first ``warmup`` scores of a stream, whatever they are and
    however the warm-up and refresh blocks line up, and not for any entity (nor through the
    global fallback) while fewer were seen."""
    shortest = kind.options.get("depth", 0) + 1  # DSPOT warms up on more than its depth
    warmup = data.draw(st.integers(shortest, WINDOW), label="warmup")
    refresh = data.draw(st.sampled_from([1, 3, REFRESH, WINDOW]), label="refresh")
    stream = data.draw(streams(max_size=2 * warmup + REFRESH), label="stream")
    calibrator = kind.make(warmup=warmup, refresh=refresh)
    result = feed(calibrator, stream, data.draw(cut_points(len(stream)), label="cuts"))
    assert np.isnan(result.thresholds[:warmup]).all()
    assert not result.flags[:warmup].any()
    if len(stream) < warmup:
        for key in [None, *np.unique(stream.keys).tolist(), "never seen"]:
            assert np.isnan(calibrator.threshold(key)), key


# --- flagged scores teach nothing ---------------------------------------------------------------


@settings(max_examples=12, deadline=None)
@given(stream=streams(min_size=3 * WARMUP), raise_by=st.floats(0.0, 1e6))
def test_a_flagged_score_s_value_is_never_learned(
    kind: Kind, stream: Stream, raise_by: float
) -> None:
    """A calibrator learns only from scores it did not flag, so an anomaly cannot raise its own
    threshold: raising flagged scores further changes no threshold, no flag and no state. Per key,
    the global state learns from what it did not flag itself, so only scores flagged by both the
    key and the global state (a global calibrator's flags on the same stream) are raised."""
    first = kind.make()
    flags = feed(first, stream)
    flagged = flags.flags.copy()
    if kind.per_key:
        flagged &= feed(kind.make(per_key=False), stream).flags
    lift = raise_by * (1.0 + np.arange(len(stream)) % 7)
    raised = Stream(stream.keys, np.where(flagged, stream.scores + lift, stream.scores))
    second = kind.make()
    assert_same_flags(feed(second, raised), flags, same_scores=~flagged)
    assert states(second) == states(first)


def test_an_anomaly_burst_stays_flagged_whatever_its_size(kind: Kind) -> None:
    """A burst of anomalies, long enough to outnumber a window, is flagged to its last score,
    and what follows is flagged the same whether the burst sat at 100 or at 1e8."""
    before, after = calm(6, 600, ["a", "b", "c"]), calm(7, 300, ["a", "b", "c"])
    burst = calm(8, 2 * WINDOW, ["a", "b", "c"])
    runs = []
    for level in (100.0, 1e8):
        calibrator = kind.make()
        runs.append(feed(calibrator, before + Stream(burst.keys, burst.scores + level) + after))
    for run in runs:
        assert run.flags[600 : 600 + 2 * WINDOW].all()
    outside = np.ones(len(runs[0]), bool)
    outside[600 : 600 + 2 * WINDOW] = False
    assert_same_flags(runs[1], runs[0], same_scores=outside)


# --- keys ---------------------------------------------------------------------------------------


def test_a_global_calibrator_ignores_keys(global_kind: Kind) -> None:
    """Without ``per_key`` every score is judged by the one global state, whatever its key."""
    stream = calm(9, 500, ["a", "b", "c"])
    keyed, unkeyed = global_kind.make(), global_kind.make()
    expected = feed(unkeyed, Stream(np.full(len(stream), "x"), stream.scores))
    assert_same_flags(feed(keyed, stream), expected)
    assert keyed.keys == []
    for key in ("a", "x", "never seen"):
        assert bits(keyed.threshold(key)) == bits(keyed.threshold()) == bits(unkeyed.threshold())


def test_a_key_without_a_threshold_of_its_own_is_judged_by_the_global_one(
    per_key_kind: Kind,
) -> None:
    """Per key, the global state sees every score and learns from those it does not flag
    itself, exactly as a global calibrator would; a key still warming up (here one that never
    gets ``warmup`` scores, and new keys) is judged by the global threshold in force."""
    busy = calm(10, 800, ["a", "b", "c"])
    keys = busy.keys.astype("<U4")  # room for "rare"
    rare_at = np.arange(50, 800, 800 // (WARMUP - 4))
    keys[rare_at] = "rare"
    stream = Stream(keys, busy.scores)
    calibrator, twin = per_key_kind.make(), per_key_kind.make(per_key=False)
    result, global_result = feed(calibrator, stream), feed(twin, stream)
    rare = keys == "rare"
    assert rare.sum() < WARMUP and np.isfinite(global_result.thresholds[rare]).any()
    np.testing.assert_array_equal(
        bits(result.thresholds[rare]), bits(global_result.thresholds[rare])
    )
    assert not np.array_equal(bits(result.thresholds[~rare]), bits(global_result.thresholds[~rare]))
    assert states(calibrator)[1][state.GLOBAL] == states(twin)[1][state.GLOBAL]
    for key in (None, "rare", "never seen"):
        assert bits(calibrator.threshold(key)) == bits(twin.threshold())

    late = Stream(np.array(["new"] * 5), np.array([0.1, 50.0, 0.2, 0.3, 60.0]))
    first = feed(calibrator, late)
    assert (bits(first.thresholds) == bits(twin.threshold())).all()
    assert first.flags.tolist() == [False, True, False, False, True]


# --- adapting to a new regime ------------------------------------------------------------------


def regimes(seed: int) -> Stream:
    """Calm scores of keys a, b and c; then "a" shifts up for good; then every key shifts far
    higher. Each stretch holds several ``ADAPT_AFTER`` of every key's scores, so that per key
    "a" adapts in the second and every entity in the third (a global state in the third)."""
    names = ["a", "b", "c"]
    shifted = calm(seed + 1, 240, names)
    shifted = Stream(shifted.keys, shifted.scores + 50.0 * (shifted.keys == "a"))
    higher = calm(seed + 2, 240, names)
    return calm(seed, 300, names) + shifted + Stream(higher.keys, higher.scores + 1e3)


def _adapted(kind: Kind, calibrator: WindowCalibrator) -> list[str | None]:
    """The entities that ``regimes`` makes adapt, checked to have adapted."""
    entities: list[str | None] = [None, "a"] if kind.per_key else [None]
    assert all(calibrator.adaptations(key) > 0 for key in entities), "the stream adapts"
    return entities


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**16), data=st.data())
def test_adapting_changes_nothing_across_batches_and_restarts(
    adapting_kind: Kind, seed: int, data: st.DataObject
) -> None:
    """Adapting is decided at refresh boundaries on each entity's own scores, and its state
    (the recent flagged scores, when it last adapted, how often) is in the snapshot: any
    batching, with restarts anywhere (before, during or after an adaptation), flags what a
    straight run flagged and ends in the same state, adaptation counts included."""
    stream = regimes(seed)
    straight = adapting_kind.make()
    expected = feed(straight, stream)
    _adapted(adapting_kind, straight)
    calibrator = adapting_kind.make()
    pieces = []
    for part in stream.split(data.draw(cut_points(len(stream), max_cuts=4), label="restarts")):
        pieces.append(feed(calibrator, part, data.draw(cut_points(len(part)), label="cuts")))
        calibrator = restarted(adapting_kind, calibrator)
    assert_same_flags(joined(pieces), expected)
    assert states(calibrator) == states(straight)
    for key in [None, *straight.keys, "never seen"]:
        assert calibrator.adaptations(key) == straight.adaptations(key), key


def test_adapting_one_score_at_a_time_with_restarts_equals_one_batch(adapting_kind: Kind) -> None:
    """The extreme batching again, on a stream that adapts, restarting every 37 scores."""
    stream = regimes(0)
    straight = adapting_kind.make()
    expected = feed(straight, stream)
    calibrator = adapting_kind.make()
    pieces = []
    for at, part in enumerate(stream.split(range(1, len(stream)))):
        pieces.append(feed(calibrator, part))
        if at % 37 == 0:
            calibrator = restarted(adapting_kind, calibrator)
    assert_same_flags(joined(pieces), expected)
    assert states(calibrator) == states(straight)
    for key in _adapted(adapting_kind, straight):
        assert calibrator.adaptations(key) == straight.adaptations(key)


def _before_adapting(data: bytes) -> bytes:
    """``data`` as a snapshot written before adapting existed: no ``adapt_after`` parameter, no
    kept flagged scores, no adapting counts."""

    def edit(header: dict[str, Any], arrays: dict[str, NDArray[Any]]) -> None:
        header["params"].pop("adapt_after")
        for field in ("flagged", "flagged_at", "adapted"):
            del arrays[f"{field}.values"], arrays[f"{field}.lengths"]

    return _rewritten(data, edit)


@every_kind
def test_a_snapshot_written_before_adapting_restores(kind: Kind) -> None:
    """Such a snapshot was taken with ``adapt_after`` 0. A calibrator that does not adapt
    restores it into exactly the state the full snapshot gives, and goes on as its source does;
    one that adapts restores it with no adaptation yet, and adapts to the next lasting shift."""
    source = kind.make()
    feed(source, regimes(1))
    restored = kind.make()
    restored.restore(_before_adapting(source.snapshot()))
    continuation = calm(2, 300, ["a", "b", "c"])
    if kind.make().adapt_after == 0:
        assert states(restored) == states(source)
        assert_same_flags(feed(restored, continuation), feed(source, continuation))
        return
    assert not any(restored.adaptations(key) for key in [None, *restored.keys])
    feed(restored, continuation + Stream(continuation.keys, continuation.scores + 1e6))
    assert restored.adaptations() == 1


def test_a_snapshot_under_another_adapt_after_restores(adapting_kind: Kind) -> None:
    """``adapt_after`` is a parameter: a snapshot taken under another is re-thresholded like
    one under another level, keeps its adaptation counts, and keeps as many of the latest
    flagged scores as the new ``adapt_after`` holds (none at 0)."""
    source = adapting_kind.make()
    feed(source, regimes(3))
    entities = _adapted(adapting_kind, source)
    for adapt_after in (0, 4 * REFRESH):
        target = adapting_kind.make(adapt_after=adapt_after)
        target.restore(source.snapshot())
        assert [target.adaptations(k) for k in entities] == [
            source.adaptations(k) for k in entities
        ]
        again = adapting_kind.make(adapt_after=adapt_after)
        again.restore(target.snapshot())
        assert states(again) == states(target)
        feed(target, calm(4, 200, ["a", "b", "c"], scale=1e3))


# --- 4. refusals --------------------------------------------------------------------------------


def _rewritten(
    data: bytes, edit: Callable[[dict[str, Any], dict[str, NDArray[Any]]], None]
) -> bytes:
    """``data`` with its header (decoded JSON) and arrays changed in place by ``edit``."""
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    header = json.loads(arrays.pop("header").tobytes())
    edit(header, arrays)
    encoded = np.frombuffer(json.dumps(header).encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, header=encoded, **arrays)
    return buffer.getvalue()


def _bad_crc(data: bytes, member: str) -> bytes:
    """``data`` with ``member``'s CRC-32 in the central directory inverted: its bytes are intact
    but no longer match it (zipfile raises ``BadZipFile`` once it has read them)."""
    corrupt = bytearray(data)
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        name_length = struct.unpack_from("<H", data, at + 28)[0]
        if data[at + 46 : at + 46 + name_length] == member.encode():
            corrupt[at + 16 : at + 20] = bytes(b ^ 0xFF for b in data[at + 16 : at + 20])
            return bytes(corrupt)
        at = data.find(b"PK\x01\x02", at + 4)
    raise LookupError(member)


def _bad_deflate(data: bytes, member: str) -> bytes:
    """``data`` with ``member``'s first deflate block given the reserved block type 3 (zlib
    raises ``zlib.error``: invalid block type)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = archive.getinfo(member)
    name_length, extra_length = struct.unpack_from("<HH", data, info.header_offset + 26)
    corrupt = bytearray(data)
    corrupt[info.header_offset + 30 + name_length + extra_length] |= 0b110
    return bytes(corrupt)


def _header(**changes: Any) -> Callable[[bytes], bytes]:
    def edit(header: dict[str, Any], arrays: dict[str, NDArray[Any]]) -> None:
        for key, value in changes.items():
            if value is None:
                header.pop(key)
            else:
                header[key] = value

    return lambda data: _rewritten(data, edit)


def _arrays(edit: Callable[[dict[str, NDArray[Any]]], None]) -> Callable[[bytes], bytes]:
    return lambda data: _rewritten(data, lambda header, arrays: edit(arrays))


def _raw_header(raw: bytes | None) -> Callable[[bytes], bytes]:
    """The snapshot with ``raw`` as its header member's bytes (no header member when None)."""

    def rewrite(data: bytes) -> bytes:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files if name != "header"}
        if raw is not None:
            arrays["header"] = np.frombuffer(raw, np.uint8)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        return buffer.getvalue()

    return rewrite


def _drop(*members: str) -> Callable[[dict[str, NDArray[Any]]], None]:
    def edit(arrays: dict[str, NDArray[Any]]) -> None:
        for member in members:
            del arrays[member]

    return edit


def _short_seen_at(arrays: dict[str, NDArray[Any]]) -> None:
    """Every entity's ``seen_at`` one shorter than its window, lengths kept consistent."""
    lengths = arrays["seen_at.lengths"]
    keep = np.ones(len(arrays["seen_at.values"]), bool)
    keep[np.cumsum(lengths)[lengths > 0] - 1] = False
    arrays["seen_at.values"] = arrays["seen_at.values"][keep]
    arrays["seen_at.lengths"] = np.maximum(lengths - 1, 0)


def _pickled_window(arrays: dict[str, NDArray[Any]]) -> None:
    arrays["window.values"] = arrays["window.values"].astype(object)


def _extra_length(arrays: dict[str, NDArray[Any]]) -> None:
    arrays["window.lengths"] = np.append(arrays["window.lengths"], 0)


NOT_A_SNAPSHOT = "not a calibrator snapshot"
BAD_SNAPSHOTS = [
    pytest.param(lambda data: b"not a calibrator snapshot", NOT_A_SNAPSHOT, id="garbage"),
    pytest.param(lambda data: data[: len(data) // 2], NOT_A_SNAPSHOT, id="truncated"),
    pytest.param(lambda data: _bad_crc(data, "header.npy"), NOT_A_SNAPSHOT, id="header-bad-crc"),
    pytest.param(_raw_header(None), NOT_A_SNAPSHOT, id="no-header"),
    pytest.param(_raw_header(b"{not json"), NOT_A_SNAPSHOT, id="header-not-json"),
    pytest.param(_header(format=2), "snapshot format 2; this tandem reads format 1", id="newer"),
    pytest.param(_header(format=None), "snapshot format None", id="no-format"),
    pytest.param(_arrays(_extra_length), "inconsistent with its header", id="lengths-disagree"),
]
"""Snapshots refused as documented today, checked for every kind."""

DAMAGED_SNAPSHOTS = [
    pytest.param(
        lambda data: b"",
        id="empty",
    ),
    pytest.param(
        lambda data: _bad_deflate(data, "header.npy"),
        id="header-bad-deflate",
    ),
    pytest.param(
        lambda data: _bad_crc(data, "window.values.npy"),
        id="field-bad-crc",
    ),
    pytest.param(
        lambda data: _bad_deflate(data, "window.values.npy"),
        id="field-bad-deflate",
    ),
    pytest.param(
        _arrays(_pickled_window),
        id="pickled-field",
    ),
    pytest.param(
        _arrays(_drop("counts.values")),
        id="missing-field-values",
    ),
    pytest.param(
        _header(names=None),
        id="header-without-names",
    ),
    pytest.param(
        _raw_header(b"[1, 2]"),
        id="header-not-an-object",
    ),
    pytest.param(
        _arrays(_drop("counts.values", "counts.lengths")),
        id="missing-field",
    ),
    pytest.param(
        _arrays(_short_seen_at),
        id="fields-disagree",
    ),
]
"""Damage deep inside the archive (members, header fields, field lengths). The format is the same
for every kind, so one kind shows each."""


def _assert_refused_and_unchanged(
    kind: Kind, corrupt: Callable[[bytes], bytes], message: str | None = None
) -> None:
    source, calibrator = kind.make(), kind.make()
    feed(source, calm(11, 400, ["a", "b"]))
    feed(calibrator, calm(12, 400, ["a", "c"]))
    before = calibrator.snapshot()
    with pytest.raises(SnapshotError, match=message):
        calibrator.restore(corrupt(source.snapshot()))
    assert calibrator.snapshot() == before


@pytest.mark.parametrize(("corrupt", "message"), BAD_SNAPSHOTS)
def test_a_bad_snapshot_is_refused_and_changes_nothing(
    kind: Kind, corrupt: Callable[[bytes], bytes], message: str
) -> None:
    """A corrupt snapshot, or one of another format version, must fail with ``SnapshotError``
    (which the daemon reports) and leave the calibrator exactly as it was, not half restored."""
    _assert_refused_and_unchanged(kind, corrupt, message)


@pytest.mark.parametrize("corrupt", DAMAGED_SNAPSHOTS)
def test_a_damaged_snapshot_is_refused_with_a_snapshot_error(
    corrupt: Callable[[bytes], bytes],
) -> None:
    """As above, for damage that gets past the archive's own checks (``DAMAGED_SNAPSHOTS``):
    refused before anything is restored, never half restored."""
    _assert_refused_and_unchanged(KINDS["quantile-per_key"], corrupt)


def test_a_snapshot_of_another_method_is_refused(kind: Kind) -> None:
    """A snapshot is meaningful only to its own method; per key or not does not matter."""
    stream = calm(13, 400, ["a", "b"])
    calibrator = kind.make()
    feed(calibrator, stream)
    before = calibrator.snapshot()
    others = {k.method: k for k in KINDS.values() if k.method != kind.method}
    assert len(others) == 2
    for method, other in others.items():
        foreign = other.make()
        feed(foreign, stream)
        expected = f"snapshot of a '{method}' calibrator cannot restore a '{kind.method}' one"
        with pytest.raises(SnapshotError, match=expected):
            calibrator.restore(foreign.snapshot())
    assert calibrator.snapshot() == before


def test_bad_updates_are_refused_and_change_nothing(kind: Kind) -> None:
    calibrator = kind.make()
    feed(calibrator, calm(14, 200, ["a", "b"]))
    before = calibrator.snapshot()
    with pytest.raises(CalibrationError, match="3 keys for 2 scores"):
        calibrator.update(["a", "b", "c"], [1.0, 2.0])
    with pytest.raises(CalibrationError, match="must not be NaN"):
        calibrator.update(["a", "b", "a"], [1.0, np.nan, 2.0])
    assert calibrator.snapshot() == before


def test_an_empty_update_answers_empty_flags(kind: Kind) -> None:
    calibrator = kind.make()
    feed(calibrator, calm(15, 100, ["a"]))
    before = calibrator.snapshot()
    empty = calibrator.update([], [])
    assert len(empty) == 0 and empty.thresholds.dtype == np.float64 and empty.flags.dtype == bool
    assert calibrator.snapshot() == before


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"warmup": 0}, "warmup"),
        ({"warmup": WINDOW + 1}, "warmup"),
        ({"refresh": 0}, "refresh"),
        ({"refresh": WINDOW + 1}, "refresh"),
        ({"adapt_after": -1}, "adapt_after"),
        (
            {"adapt_after": REFRESH - 1},
            rf"adapt_after \({REFRESH - 1}\) must be 0 \(never adapt\) or at least refresh "
            rf"\({REFRESH}\)",
        ),
    ],
    ids=[
        "no-warmup",
        "warmup-beyond-window",
        "no-refresh",
        "refresh-beyond-window",
        "negative-adapt-after",
        "adapt-after-below-refresh",
    ],
)
def test_impossible_windowing_is_refused(
    kind: Kind, overrides: dict[str, int], message: str
) -> None:
    with pytest.raises(CalibrationError, match=message):
        kind.make(**overrides)


# --- snapshots under other parameters -----------------------------------------------------------


@every_kind
def test_a_snapshot_under_another_level_is_rethresholded_at_once(kind: Kind) -> None:
    """``restore`` recomputes the thresholds of a snapshot taken under other parameters (another
    quantile, another target rate) at once, rather than flagging by the old level until the next
    refresh; restored again under the same parameters, nothing more changes."""
    source = kind.make()
    feed(source, calm(16, 600, ["a", "b", "c"]))
    entities = [None, *source.keys]
    target = kind.make(**kind.other_level)
    target.restore(source.snapshot())
    for key in entities:
        old, new = source.threshold(key), target.threshold(key)
        assert np.isfinite(new) and new != old, (key, old, new)
    again = kind.make(**kind.other_level)
    again.restore(target.snapshot())
    assert states(again) == states(target)
    assert_same_thresholds(again, target, entities)


def test_a_snapshot_restored_under_a_longer_warm_up_waits_for_it(kind: Kind) -> None:
    """Restored under a ``warmup`` longer than the scores it accepted so far, a calibrator
    has no threshold under its own parameters (``No threshold until warmup scores...``)."""
    source = kind.make()
    feed(source, calm(17, 7 * REFRESH, ["a"]))  # 56 scores: warmed up, below WINDOW
    if not np.isfinite(source.threshold()):
        pytest.fail("the source has no threshold to carry over")
    target = kind.make(warmup=WINDOW)
    target.restore(source.snapshot())
    result = target.update(["a"] * 3, [1e6, 1e7, 1e8])
    assert np.isnan(target.threshold()) and not result.flags.any()
