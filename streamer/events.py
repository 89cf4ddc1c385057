"""Alert events: one story per anomaly and key instead of one alert per flagged window.

Per key, an event *opens* at its first flagged window, absorbs the flagged windows that follow
(peak score, count, summed blame, kinds), publishes an *update* at most every ``update_every``
windows of its key when windows were flagged since its last record, and *closes* once ``quiet``
windows of the key in a row were not flagged. After a close, flags open nothing for
``cooldown`` windows. Everything counts windows of the event's own key, in stream order, so the
records are the same however the stream is cut into batches.

Ids: an event's ``event_id`` is its opening window's position (``topic/partition/offset``); its
records' ids are ``<event_id>`` (opened), ``<event_id>:u<n>`` (the n-th update) and
``<event_id>:closed``, so a record produced twice (a crash before commit) has one id.

Crash safety: ``judge`` changes nothing; the runner ``apply``s a batch's judgement once its
records are acknowledged, before its checkpoint, so a checkpoint never holds an event whose
opening was not delivered. A batch that opens or closes an event forces a checkpoint of those
events' partitions; windows
at offsets a restored checkpoint already reflects (``resume_after``) are skipped. Reasoning:
docs/alerts.md.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import orjson
import structlog
from numpy.typing import NDArray

from calibration.base import Flags
from detectors.base import Scores
from streamer.alerts import (
    SCHEMA_VERSION,
    Alert,
    build_alerts,
    source_of,
    surprise_of,
    top_features,
)
from streamer.capped import drop_oldest, touch
from streamer.config import AlertsConfig
from streamer.errors import EventStateError
from streamer.records import Partition, SourceRecord, WindowBatch

log = structlog.get_logger(__name__)

STATE_FORMAT = 1
NO_EVENT = ""


@dataclass
class OpenEvent:
    """An event in progress. Counts are windows of its key; times epoch ms; ``blame`` (D,) the
    summed blame shares of its flagged windows; ``kinds`` kind name → [windows, summed
    probability]."""

    event_id: str
    source: dict[str, Any]
    opened_ts: int
    last_flagged_ts: int
    peak: dict[str, Any]
    blame: list[float]
    windows: int = 1
    flagged: int = 1
    quiet: int = 0
    updates: int = 0
    since_record: int = 0
    changed: bool = False
    kinds: dict[str, list[float]] = field(default_factory=dict)

    def copy(self) -> OpenEvent:
        return replace(
            self,
            peak=dict(self.peak),
            blame=list(self.blame),
            kinds={k: list(v) for k, v in self.kinds.items()},
        )


@dataclass
class KeyEvents:
    """One key's event state: its open event, if any, and the windows of cooldown left."""

    open: OpenEvent | None = None
    cooldown: int = 0

    def idle(self) -> bool:
        return self.open is None and self.cooldown == 0

    def copy(self) -> KeyEvents:
        return KeyEvents(None if self.open is None else self.open.copy(), self.cooldown)


@dataclass
class Judgement:
    """What one batch's windows made of the events: ``records`` to publish (stream order),
    ``event_ids`` (n,) the event each window belonged to (``NO_EVENT`` if none), and the new
    state of the keys it touched (``after``; ``before`` undoes it)."""

    records: list[Alert]
    event_ids: NDArray[np.str_]
    before: dict[str, KeyEvents] = field(default_factory=dict)
    after: dict[str, KeyEvents] = field(default_factory=dict)
    opened: int = 0
    closed: int = 0
    changed: set[Partition] = field(default_factory=set)
    """The partitions whose events opened or closed: their checkpoints must not wait."""
    applied: bool = False
    floors_passed: list[Partition] = field(default_factory=list)


class EventTracker:
    """Turns flagged windows into alert records, in ``windows`` or ``events`` mode (see the
    module docstring)."""

    def __init__(
        self,
        config: AlertsConfig,
        feature_names: tuple[str, ...],
        model: Mapping[str, str],
        calibrator: Mapping[str, Any],
        max_keys: int = 0,
    ) -> None:
        """``max_keys``: the most keys with an open event or a cooldown kept (0: no cap; the
        daemon passes ``[calibration].max_keys``). A key that stops sending never closes its
        event, so without a cap such keys would pile up; beyond it the least recently touched
        are dropped without a close record (``dropped`` counts them)."""
        self.config = config
        self.feature_names = feature_names
        self.model, self.calibrator = dict(model), dict(calibrator)
        self.max_keys, self.dropped = max_keys, 0
        self._keys: dict[str, KeyEvents] = {}
        self._floors: dict[Partition, int] = {}

    @property
    def open_events(self) -> int:
        return sum(1 for state in self._keys.values() if state.open is not None)

    def judge(
        self, batch: WindowBatch, scores: Scores, flags: Flags, detected_ms: int | None = None
    ) -> Judgement:
        """The records and event ids of ``batch``'s windows, its state unchanged (``apply``)."""
        if self.config.mode == "windows":
            records = build_alerts(
                batch, scores, flags, self.feature_names, self.model, self.calibrator, detected_ms
            )
            return Judgement(records, np.full(len(batch), NO_EVENT, dtype=object))
        return _BatchJudge(self, batch, scores, flags, detected_ms).run()

    def apply(self, judgement: Judgement) -> None:
        """Make ``judgement``'s key states current (once; its records are acknowledged)."""
        if judgement.applied:
            return
        self._set(judgement.after)
        for partition in judgement.floors_passed:
            self._floors.pop(partition, None)
        judgement.applied = True

    def revert(self, judgement: Judgement) -> None:
        """Undo an applied ``judgement`` (its batch was given up before its commit)."""
        if judgement.applied:
            self._set(judgement.before)
            judgement.applied = False

    def resume_after(self, partition: Partition, offset: int) -> None:
        """The state restored for ``partition`` reflects its records before ``offset``: skip
        those if they come again."""
        self._floors[partition] = max(self._floors.get(partition, 0), offset)

    def state(self, key: str) -> KeyEvents:
        return self._keys.get(key) or KeyEvents()

    def snapshot(self, keys: Collection[str]) -> bytes:
        """The event state of ``keys`` as JSON bytes; an idle key is saved as null, so restoring
        it clears an event that closed elsewhere."""
        states = {key: _encode(self._keys.get(key)) for key in sorted(keys)}
        return orjson.dumps({"format": STATE_FORMAT, "keys": states})

    def restore(self, data: bytes) -> None:
        """Replace the states of the keys ``data`` (a ``snapshot``) holds."""
        self.load(self.parse(data))

    @staticmethod
    def parse(data: bytes) -> dict[str, KeyEvents]:
        """The key states of a ``snapshot``; ``EventStateError`` if it cannot be read whole."""
        try:
            document = orjson.loads(data)
            if document.get("format") != STATE_FORMAT:
                raise EventStateError(f"event state format {document.get('format')!r} unknown")
            return {str(key): _decode(value) for key, value in document["keys"].items()}
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as error:
            raise EventStateError(f"event state unreadable: {error}") from error

    def load(self, states: Mapping[str, KeyEvents]) -> None:
        """Replace the states of ``states``' keys (``parse``'s result)."""
        self._set(states)

    def _set(self, states: Mapping[str, KeyEvents]) -> None:
        for key, state in states.items():
            touch(self._keys, key, None if state.idle() else state)
        dropped = drop_oldest(self._keys, self.max_keys)
        if dropped:
            self.dropped += dropped
            log.warning("event_states_dropped", keys=dropped, max_keys=self.max_keys)


class _BatchJudge:
    """One batch through the lifecycle, window by window for the keys that need it."""

    def __init__(
        self,
        tracker: EventTracker,
        batch: WindowBatch,
        scores: Scores,
        flags: Flags,
        detected_ms: int | None,
    ) -> None:
        self.tracker, self.config = tracker, tracker.config
        self.batch, self.scores, self.flags = batch, scores, flags
        self.detected = int(time.time() * 1000) if detected_ms is None else detected_ms
        self.judgement = Judgement([], np.full(len(batch), NO_EVENT, dtype=object))
        self._blame: dict[int, NDArray[np.float64]] = {}
        self._kinds: dict[int, tuple[str, float]] = {}

    def run(self) -> Judgement:
        rows = self._rows_to_visit()
        self._prepare_flagged(rows)
        for row in rows.tolist():
            self._visit(row)
        return self.judgement

    def _rows_to_visit(self) -> NDArray[np.intp]:
        """Rows of the keys with an open event or cooldown, or a flagged window in this batch,
        in stream order, less those a restored checkpoint already reflects."""
        busy = {key for key, state in self.tracker._keys.items() if not state.idle()}
        busy.update(np.unique(self.batch.keys[self.flags.flags]).tolist())
        if not busy:
            return np.empty(0, dtype=np.intp)
        wanted = np.isin(self.batch.keys, list(busy))
        if self.tracker._floors:
            wanted &= ~self._already_reflected()
        return np.flatnonzero(wanted)

    def _already_reflected(self) -> NDArray[np.bool_]:
        """Rows below their partition's floor. A partition whose records reach its floor
        needs it no more once this batch is applied (its offsets only rise from there)."""
        floors = self.tracker._floors
        below = np.fromiter(
            (r.offset < floors.get((r.topic, r.partition), 0) for r in self.batch.records),
            dtype=bool,
            count=len(self.batch),
        )
        reached = {
            (r.topic, r.partition)
            for r, old in zip(self.batch.records, below, strict=True)
            if not old
        }
        self.judgement.floors_passed = sorted(reached & floors.keys())
        return below

    def _prepare_flagged(self, rows: NDArray[np.intp]) -> None:
        """Blame and kinds of the flagged windows among ``rows``, computed in one call each."""
        flagged = rows[self.flags.flags[rows]]
        if len(flagged) == 0:
            return
        blame = self.scores.contributions(flagged)
        self._blame = {int(r): np.asarray(blame[i], np.float64) for i, r in enumerate(flagged)}
        kinds = self.scores.kinds(flagged)
        if kinds is not None:
            names, probabilities = kinds
            self._kinds = {
                int(r): (names[i], float(probabilities[i])) for i, r in enumerate(flagged)
            }

    def _state(self, key: str) -> KeyEvents:
        judgement = self.judgement
        if key not in judgement.after:
            current = self.tracker.state(key)
            judgement.before[key] = current.copy()
            judgement.after[key] = current.copy()
        return judgement.after[key]

    def _visit(self, row: int) -> None:
        key = str(self.batch.keys[row])
        state = self._state(key)
        flagged = bool(self.flags.flags[row])
        event = state.open
        if event is None:
            if state.cooldown > 0:
                state.cooldown -= 1
            elif flagged:
                state.open = self._open(key, row)
            return
        self.judgement.event_ids[row] = event.event_id
        event.windows += 1
        event.since_record += 1
        if flagged:
            self._absorb(event, row)
        else:
            event.quiet += 1
        if event.quiet >= self.config.quiet:
            self._emit(key, event, "closed", row)
            state.open, state.cooldown = None, self.config.cooldown
            self.judgement.closed += 1
            self.judgement.changed.add(_partition_of(self.batch.records[row]))
        elif event.changed and event.since_record >= self.config.update_every:
            event.updates += 1
            self._emit(key, event, "updated", row)

    def _open(self, key: str, row: int) -> OpenEvent:
        record = self.batch.records[row]
        ts = int(self.batch.ts_ms[row])
        event = OpenEvent(
            event_id=record.position,
            source=source_of(record),
            opened_ts=ts,
            last_flagged_ts=ts,
            peak=self._window(row),
            blame=self._blame[row].tolist(),
        )
        self._count_kind(event, row)
        self.judgement.event_ids[row] = event.event_id
        self.judgement.opened += 1
        self.judgement.changed.add(_partition_of(record))
        self._emit(key, event, "opened", row)
        return event

    def _absorb(self, event: OpenEvent, row: int) -> None:
        event.flagged += 1
        event.quiet = 0
        event.changed = True
        event.last_flagged_ts = int(self.batch.ts_ms[row])
        if float(self.scores.score[row]) > event.peak["score"]:
            event.peak = self._window(row)
        event.blame = (np.asarray(event.blame) + self._blame[row]).tolist()
        self._count_kind(event, row)

    def _count_kind(self, event: OpenEvent, row: int) -> None:
        if row in self._kinds:
            name, probability = self._kinds[row]
            tally = event.kinds.setdefault(name, [0.0, 0.0])
            tally[0] += 1.0
            tally[1] += probability

    def _window(self, row: int) -> dict[str, Any]:
        """What an event keeps of one window: its score, parts, threshold, surprise and time."""
        return {
            "score": float(self.scores.score[row]),
            "threshold": float(self.flags.thresholds[row]),
            "parts": {name: float(part[row]) for name, part in self.scores.parts.items()},
            "surprise": surprise_of(self.flags, row),
            "ts": int(self.batch.ts_ms[row]),
        }

    def _emit(self, key: str, event: OpenEvent, kind: str, row: int) -> None:
        event.since_record, event.changed = 0, False
        record_id = {
            "opened": event.event_id,
            "updated": f"{event.event_id}:u{event.updates}",
            "closed": f"{event.event_id}:closed",
        }[kind]
        body = event_body(self.tracker, key, event, kind, record_id, self.batch.records[row])
        body["event_ts"] = int(self.batch.ts_ms[row])
        body["detected_ts"] = self.detected
        self.judgement.records.append(Alert(alert_id=record_id, key=key, body=body))


def event_body(
    tracker: EventTracker,
    key: str,
    event: OpenEvent,
    kind: str,
    record_id: str,
    at: SourceRecord,
) -> dict[str, Any]:
    """An event record (``schemas/alert-v2.schema.json``): the event so far, as of window ``at``.
    ``score``, ``threshold``, ``parts`` and ``surprise`` are the event's peak window's."""
    blame = np.asarray(event.blame, dtype=np.float64)
    shares = blame / blame.sum() if blame.sum() > 0 else blame
    peak = event.peak
    body: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "type": kind,
        "alert_id": record_id,
        "event_id": event.event_id,
        "key": key,
        "score": peak["score"],
        "threshold": peak["threshold"],
        "parts": dict(peak["parts"]),
        "top_features": top_features(shares, tracker.feature_names),
        "source": dict(event.source),
        "at": source_of(at),
        "event": {
            "opened_ts": event.opened_ts,
            "last_flagged_ts": event.last_flagged_ts,
            "peak_ts": peak["ts"],
            "windows": event.windows,
            "flagged": event.flagged,
            "updates": event.updates,
        },
        "model": dict(tracker.model),
        "calibrator": dict(tracker.calibrator),
    }
    if peak["surprise"] is not None:
        body["surprise"] = peak["surprise"]
    if event.kinds:
        name, (count, total) = max(event.kinds.items(), key=lambda item: (item[1][0], item[0]))
        body["kind"] = name
        body["kind_confidence"] = round(total / count, 4)
    return body


def _partition_of(record: SourceRecord) -> Partition:
    return (record.topic, record.partition)


def _encode(state: KeyEvents | None) -> dict[str, Any] | None:
    if state is None or state.idle():
        return None
    event = None if state.open is None else state.open.__dict__
    return {"open": event, "cooldown": state.cooldown}


def _decode(value: Any) -> KeyEvents:
    if value is None:
        return KeyEvents()
    event = value["open"]
    return KeyEvents(None if event is None else OpenEvent(**event), int(value["cooldown"]))
