"""Alert events: the open/update/close lifecycle under any batching, across a checkpoint restore,
with redelivered windows, and the records against the published schema."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calibration.base import Flags
from detectors.base import Scores
from streamer.checkpoints import KeyState, keys_in, split
from streamer.config import AlertsConfig
from streamer.events import NO_EVENT, EventTracker, Judgement
from streamer.records import SourceRecord, WindowBatch

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "schemas" / "alert-v2.schema.json").read_text()
)
WIDTH = 4
KEYS = ("a", "b", "c")


def stream(flags_by_row: list[tuple[int, bool]]) -> tuple[list[SourceRecord], list[bool]]:
    """Records for (key index, flagged) rows, one partition, offsets 0.."""
    records = [
        SourceRecord("in", 0, i, KEYS[k].encode(), b"", 1_000 * i)
        for i, (k, _) in enumerate(flags_by_row)
    ]
    return records, [flag for _, flag in flags_by_row]


def batch_of(records: list[SourceRecord], flags: list[bool]) -> tuple[WindowBatch, Scores, Flags]:
    """A batch of ``records`` whose scores are 10 + offset % 7 when flagged, else 1."""
    n = len(records)
    keys = np.array([r.key.decode() for r in records if r.key is not None])
    offsets = np.array([r.offset for r in records], dtype=np.float32)
    flagged = np.array(flags, dtype=bool)
    score = np.where(flagged, 10.0 + offsets % 7, 1.0).astype(np.float32)
    batch = WindowBatch(
        records=list(records),
        keys=keys,
        ts_ms=np.array([r.timestamp_ms for r in records], dtype=np.int64),
        windows=np.zeros((n, WIDTH), np.float32),
        labels=np.full(n, -1, np.int8),
    )

    def blame(rows: Any) -> Any:
        shares = np.zeros((len(rows), WIDTH), np.float32)
        shares[np.arange(len(rows)), offsets[np.asarray(rows)].astype(int) % WIDTH] = 1.0
        return shares

    scores = Scores(score=score, parts={"ae1": score}, errors={}, blame=blame)
    return batch, scores, Flags(np.full(n, 5.0), flagged)


def tracker(**alerting: Any) -> EventTracker:
    return EventTracker(
        AlertsConfig(**alerting),
        tuple(f"x{i}" for i in range(WIDTH)),
        model={"name": "m", "version": "sha256:" + "0" * 64},
        calibrator={"method": "spot", "target_rate": 1e-4},
    )


def run(
    events: EventTracker, records: list[SourceRecord], flags: list[bool], cuts: list[int]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Judge and apply ``records`` in batches ending at ``cuts``: the record bodies (without
    ``detected_ts``) and each window's event id."""
    bodies, ids = [], []
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(records))), len(records)]
    for start, end in itertools.pairwise(bounds):
        judgement = events.judge(*batch_of(records[start:end], flags[start:end]), detected_ms=0)
        events.apply(judgement)
        bodies += [dict(alert.body) for alert in judgement.records]
        ids += judgement.event_ids.tolist()
    return bodies, ids


rows = st.lists(st.tuples(st.integers(0, 2), st.booleans()), min_size=1, max_size=160)
cuts = st.lists(st.integers(0, 160), max_size=12)
policies = st.fixed_dictionaries(
    {"quiet": st.integers(1, 6), "update_every": st.integers(1, 9), "cooldown": st.integers(0, 4)}
)


@settings(max_examples=150, deadline=None)
@given(rows=rows, cuts=cuts, policy=policies)
def test_records_do_not_depend_on_batching(rows: Any, cuts: list[int], policy: Any) -> None:
    records, flags = stream(rows)
    whole = run(tracker(**policy), records, flags, [])
    assert run(tracker(**policy), records, flags, cuts) == whole


@settings(max_examples=150, deadline=None)
@given(rows=rows, policy=policies)
def test_each_event_opens_once_updates_in_order_and_closes_after_quiet(
    rows: Any, policy: Any
) -> None:
    records, flags = stream(rows)
    bodies, ids = run(tracker(**policy), records, flags, [])
    by_event: dict[str, list[dict[str, Any]]] = {}
    for body in bodies:
        jsonschema.validate(body, SCHEMA)
        by_event.setdefault(body["event_id"], []).append(body)
    for event_id, story in by_event.items():
        types = [body["type"] for body in story]
        assert types[0] == "opened" and story[0]["alert_id"] == event_id
        assert types.count("opened") == 1 and types.count("closed") <= 1
        assert "closed" not in types[:-1]
        updates = [body["alert_id"] for body in story if body["type"] == "updated"]
        assert updates == [f"{event_id}:u{n}" for n in range(1, len(updates) + 1)]
        key, first = story[0]["key"], int(event_id.rsplit("/", 1)[1])
        assert flags[first], "an event opens on a flagged window"
        own = [i for i, (k, _) in enumerate(rows) if KEYS[k] == key and i >= first]
        member = [i for i in own if ids[i] == event_id]
        assert member == own[: len(member)], "an event holds consecutive windows of its key"
        if types[-1] == "closed":
            tail = [flags[i] for i in member[-policy["quiet"] :]]
            assert len(tail) == policy["quiet"] and not any(tail)
            assert story[-1]["event"]["flagged"] == sum(flags[i] for i in member)
            assert story[-1]["event"]["windows"] == len(member)
        else:
            assert member == own, "an event not closed lasts to the key's last window"
    for i, flag in enumerate(flags):
        if flag and ids[i] == NO_EVENT:
            assert policy["cooldown"] > 0, "a flag outside any event is one held back by cooldown"


@settings(max_examples=100, deadline=None)
@given(rows=rows, cut=st.integers(1, 159), policy=policies)
def test_a_restore_mid_stream_continues_the_same_events(rows: Any, cut: int, policy: Any) -> None:
    """Stop after ``cut`` windows, checkpoint, restore into a new tracker, go on: the records are
    those of an uninterrupted run; windows the checkpoint reflects, delivered again, add none."""
    records, flags = stream(rows)
    cut = min(cut, len(records))
    expected = run(tracker(**policy), records, flags, [])
    first = tracker(**policy)
    before = run(first, records[:cut], flags[:cut], [])
    saved = first.snapshot(KEYS)
    second = tracker(**policy)
    second.restore(saved)
    second.resume_after(("in", 0), cut)
    redelivered_from = max(0, cut - 5)
    after = run(second, records[redelivered_from:], flags[redelivered_from:], [])
    assert before[0] + after[0] == expected[0]
    assert after[1][cut - redelivered_from :] == expected[1][cut:]
    assert set(after[1][: cut - redelivered_from]) <= {NO_EVENT}


def test_revert_undoes_an_applied_batch() -> None:
    records, flags = stream([(0, True), (1, True), (0, False)])
    events = tracker(quiet=1)
    judgement = events.judge(*batch_of(records, flags), detected_ms=0)
    events.apply(judgement)
    assert events.open_events == 1
    events.revert(judgement)
    assert events.open_events == 0
    again = events.judge(*batch_of(records, flags), detected_ms=0)
    assert [a.alert_id for a in again.records] == [a.alert_id for a in judgement.records]


def test_judging_changes_nothing_until_applied() -> None:
    records, flags = stream([(0, True)] * 3)
    events = tracker()
    events.judge(*batch_of(records, flags), detected_ms=0)
    assert events.open_events == 0


def test_an_event_carries_its_peak_blame_and_counts() -> None:
    records, flags = stream([(0, True), (0, True), (0, True), (0, False), (0, False)])
    events = tracker(quiet=2, update_every=100)
    bodies, _ = run(events, records, flags, [])
    opened, closed = bodies
    assert (opened["type"], closed["type"]) == ("opened", "closed")
    assert opened["score"] == 10.0 and closed["score"] == 12.0, "the peak is offset 2's 10 + 2"
    assert closed["event"] == {
        "opened_ts": 0,
        "last_flagged_ts": 2_000,
        "peak_ts": 2_000,
        "windows": 5,
        "flagged": 3,
        "updates": 0,
    }
    assert closed["event_ts"] == 4_000 and closed["at"]["offset"] == 4
    assert closed["source"] == {"topic": "in", "partition": 0, "offset": 0}
    shares = {f["name"]: f["share"] for f in closed["top_features"]}
    assert shares == pytest.approx({"x0": 1 / 3, "x1": 1 / 3, "x2": 1 / 3})


def test_windows_mode_gives_one_record_per_flagged_window() -> None:
    records, flags = stream([(0, True), (0, True), (1, False), (1, True)])
    events = tracker(mode="windows")
    judgement: Judgement = events.judge(*batch_of(records, flags), detected_ms=0)
    assert [a.alert_id for a in judgement.records] == ["in/0/0", "in/0/1", "in/0/3"]
    for alert in judgement.records:
        jsonschema.validate(orjson.loads(alert.value()), SCHEMA)


def test_a_checkpoint_holds_calibrator_and_events_and_old_ones_still_restore() -> None:
    from calibration.quantile import RollingQuantile

    calibrator = RollingQuantile(0.9, window=50, warmup=10, refresh=5, per_key=True)
    calibrator.update(["a"] * 20 + ["b"] * 20, np.arange(40.0))
    records, flags = stream([(0, True)])
    events = tracker()
    events.apply(events.judge(*batch_of(records, flags), detected_ms=0))
    saved = KeyState(calibrator, events, "m").snapshot(["a", "b"])
    assert sorted(keys_in(saved)) == ["a", "b"]
    fresh_calibrator = RollingQuantile(0.9, window=50, warmup=10, refresh=5, per_key=True)
    fresh = KeyState(fresh_calibrator, tracker(), "m")
    fresh.restore(saved)
    assert fresh.events.state("a").open is not None  # type: ignore[attr-defined]
    assert fresh_calibrator.threshold("b") == calibrator.threshold("b")
    old = calibrator.snapshot(["a"])
    assert split(old) == (old, None) and keys_in(old) == ["a"]
    KeyState(fresh_calibrator, tracker(), "m").restore(old)


def test_a_damaged_event_state_changes_nothing() -> None:
    from calibration.quantile import RollingQuantile
    from streamer.errors import EventStateError

    calibrator = RollingQuantile(0.9, window=50, warmup=10, refresh=5, per_key=True)
    calibrator.update(["a"] * 20, np.arange(20.0))
    saved = KeyState(calibrator, tracker(), "m").snapshot(["a"])
    fresh = RollingQuantile(0.9, window=50, warmup=10, refresh=5, per_key=True)
    with pytest.raises(EventStateError):
        KeyState(fresh, tracker(), "m").restore(saved[:-3])
    assert fresh.keys == [], "the calibrator was left as it was"


def test_keys_with_open_events_beyond_the_cap_drop_the_least_recently_touched() -> None:
    """A key that stops sending never closes its event: beyond ``max_keys`` such states go,
    the least recently touched first, and are counted."""
    events = EventTracker(
        AlertsConfig(quiet=5),
        tuple(f"x{i}" for i in range(WIDTH)),
        model={"name": "m", "version": "v"},
        calibrator={"method": "spot"},
        max_keys=2,
    )
    records, flags = stream([(0, True), (1, True), (2, True), (1, True)])
    for row in range(len(records)):
        events.apply(events.judge(*batch_of(records[row : row + 1], flags[row : row + 1])))
    assert sorted(events._keys) == ["b", "c"] and events.dropped == 1
    assert events.open_events == 2


def test_a_checkpoint_carries_the_keys_memories_beside_readings_and_calibrator() -> None:
    from calibration.memory import Memory, MemorySeed, MemorySettings
    from calibration.quantile import RollingQuantile

    rng = np.random.default_rng(0)
    seed = MemorySeed(rng.normal(size=(200, 3)).astype(np.float32), np.zeros(3), np.ones(3))
    settings = MemorySettings(block=8, min_reference=16)
    memory = Memory(seed, settings)
    windows = rng.normal(size=(40, 3)).astype(np.float32)
    memory.recall(np.array(["a"] * 20 + ["b"] * 20), windows, np.zeros(40))
    calibrator = RollingQuantile(0.9, window=50, warmup=10, refresh=5, per_key=True)
    calibrator.update(["a"] * 20, np.arange(20.0))
    saved = KeyState(calibrator, tracker(), "m", memory=memory).snapshot(["a"])
    assert keys_in(saved) == ["a"] and split(saved)[1] is not None
    restored = Memory(seed, settings)
    fresh = RollingQuantile(0.9, window=50, warmup=10, refresh=5, per_key=True)
    KeyState(fresh, tracker(), "m", memory=restored).restore(saved)
    assert list(restored.keys) == ["a"] and fresh.threshold("a") == calibrator.threshold("a")
    after = rng.normal(size=(10, 3)).astype(np.float32)
    expected = memory.recall(np.array(["a"] * 10), after, np.full(10, 9.0)).score
    assert np.array_equal(
        restored.recall(np.array(["a"] * 10), after, np.full(10, 9.0)).score, expected
    )
    KeyState(RollingQuantile(0.9, window=50, warmup=10, refresh=5), tracker(), "m").restore(saved)
