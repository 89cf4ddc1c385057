"""The run loop: one batch from source to commit, in one order, written once.

    decode → score → recall (each key's memory) → calibrate → judge events → sinks.add (alerts,
    dead letters) → sinks.flush (acknowledged) → apply the events → checkpoint memory, calibrator
    and event state (when due, or an event opened or closed) → commit source positions

A position is committed only after everything its batch produced is acknowledged (and a due
checkpoint saved), so a crash re-delivers at most the uncommitted batch, whose alert records come
again with the same ids. The daemon, backtests and tests differ only in the source, sinks and
checkpoint given here; a backtest also passes an ``observer`` that sees every scored batch.
A partition restored from a checkpoint older than its commit is first replayed up to the commit,
learning again without producing or committing again (``streamer.resume``).

Architecture: docs/design.md; delivery and faults: docs/delivery.md.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Protocol

import numpy as np
import structlog

from calibration.base import Calibrator, Flags
from calibration.memory import Memory
from detectors.base import Detector, Scores
from streamer.alerts import Alert
from streamer.checkpoints import KeyState
from streamer.events import EventTracker, Judgement
from streamer.ingest.codec import Codec
from streamer.ingest.readings import Cut, Windower
from streamer.records import BatchReport, DeadLetter, Partition, SourceRecord, WindowBatch
from streamer.resume import Resumption

log = structlog.get_logger(__name__)


class Source(Protocol):
    """Batches of records, and a way to mark them done."""

    def poll(self) -> list[SourceRecord]:
        """The next batch (bounded by count and wait time); empty when nothing arrived."""
        ...

    def commit(self, records: Sequence[SourceRecord]) -> None:
        """Mark ``records`` (and everything before them in their partitions) as processed."""
        ...

    def rewind(self, records: Sequence[SourceRecord]) -> None:
        """Serve ``records`` again from the next poll on (their batch failed before its commit)."""
        ...

    def seek(self, offsets: Mapping[Partition, int]) -> None:
        """Serve each partition of ``offsets`` from that offset on; what was fetched of it
        beyond is dropped (a partition resumed from its checkpoint, ``streamer.resume``)."""
        ...


class Sink(Protocol):
    """Where alerts or dead letters go; ``flush`` returns once every item added is acknowledged."""

    def add(self, items: Sequence[Any]) -> None: ...

    def flush(self) -> None: ...


class Checkpoint(Protocol):
    """Saves calibrator and event state per source partition, with the positions it reflects
    (``streamer.checkpoints.PartitionCheckpoints``)."""

    def after_batch(
        self,
        state: KeyState,
        batch: WindowBatch,
        records: Sequence[SourceRecord],
        force: Collection[Partition],
    ) -> bool: ...

    def save(self, state: KeyState, partitions: Collection[Partition] | None = None) -> None: ...

    def save_all(self, state: KeyState) -> None: ...

    def restore(
        self, state: KeyState, partitions: Collection[Partition], with_global: bool
    ) -> Mapping[Partition, Any]: ...

    def rewind(self, records: Sequence[SourceRecord]) -> None: ...

    def forget(self, partitions: Collection[Partition]) -> None: ...


class BatchObserver(Protocol):
    """Sees each batch once it is scored, calibrated and judged, before its delivery (a
    backtest's report collects every window's score, threshold and event here). It must not
    modify them."""

    def observe(
        self, batch: WindowBatch, scores: Scores, flags: Flags, judgement: Judgement
    ) -> None: ...


@dataclass
class _Outcome:
    """One batch computed: what it produced, waiting to be delivered and committed."""

    records: Sequence[SourceRecord]
    report: BatchReport
    done: Sequence[SourceRecord] = ()
    """Records counted as done without being computed (already learned before a crash)."""
    batch: WindowBatch = field(default_factory=lambda: WindowBatch.empty(0))
    decoded: WindowBatch = field(default_factory=lambda: WindowBatch.empty(0))
    """What the codec decoded: ``batch`` itself, or with readings input the readings."""
    cut: Cut | None = None
    """With readings input, what the batch does to the windower's buffers once delivered."""
    dead: list[DeadLetter] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    judgement: Judgement | None = None


class Runner:
    """Runs batches through the pipeline (see the module docstring for the order)."""

    def __init__(
        self,
        source: Source,
        codec: Codec,
        detector: Detector,
        calibrator: Calibrator,
        alert_sink: Sink,
        dead_letter_sink: Sink,
        checkpoint: Checkpoint,
        events: EventTracker,
        observer: BatchObserver | None = None,
        windower: Windower | None = None,
        memory: Memory | None = None,
    ) -> None:
        self.source, self.codec, self.windower = source, codec, windower
        self.observer = observer
        self.detector, self.calibrator, self.events = detector, calibrator, events
        self.memory = memory
        self.state = KeyState(calibrator, events, detector.version or "unsaved", windower, memory)
        self.alert_sink, self.dead_letter_sink = alert_sink, dead_letter_sink
        self.checkpoint = checkpoint
        self.scored_any = False
        self.resumption = Resumption()
        self.pending: _Outcome | None = None
        """A batch computed but not delivered (its sinks failed); ``step`` delivers it first."""

    def step(self) -> BatchReport | None:
        """Deliver the batch whose delivery failed last time, if any; else poll one batch and
        run it through. None when the source had nothing."""
        if self.pending is not None:
            return self._deliver(self.pending)
        while True:
            records = self.source.poll()
            if not records:
                return None
            plan = self.resumption.plan(records)
            if plan.seek:  # a restored partition first seen: its records come again, replayed
                self.source.seek(plan.seek)
            if plan.process or plan.skipped:
                return self.process(plan.process, plan.skipped)

    def process(
        self, records: Sequence[SourceRecord], done: Sequence[SourceRecord] = ()
    ) -> BatchReport:
        """The whole order for one batch (and ``done``: records learned before a crash,
        committed with it; see ``streamer.resume``).

        If decoding, scoring or calibrating fails, the source is rewound to serve ``records``
        again. If delivery fails (a sink cannot flush: the broker is gone), the batch's alerts
        and dead letters are kept and the next ``step`` delivers them again before polling
        anything new: the calibrator learns each record once, and each alert keeps its flag.
        Either way nothing is committed and the error is raised.
        """
        try:
            outcome = self._compute(records)
        except Exception:
            self.source.rewind([*done, *records])
            raise
        outcome.done = done
        return self._deliver(outcome)

    def _compute(self, records: Sequence[SourceRecord]) -> _Outcome:
        outcome = _Outcome(records, BatchReport(records=len(records)))
        clock = partial(_timed, outcome.report.seconds)
        with clock("decode"):
            outcome.decoded, outcome.dead = self.codec.decode(records)
            outcome.batch = outcome.decoded
            if self.windower is not None:
                outcome.batch, refused, outcome.cut = self.windower.cut(outcome.decoded)
                if refused:
                    outcome.dead = sorted([*outcome.dead, *refused], key=_dead_letter_position)
        batch = outcome.batch
        if len(batch):
            self.scored_any = True
            with clock("score"):
                scores = self.detector.score(batch.windows)
            if self.memory is not None:
                with clock("recall"):
                    scores = recalled(self.memory, batch, scores)
            with clock("calibrate"):
                flags = self.calibrator.update(batch.keys, scores.score)
            with clock("alerts"):
                outcome.judgement = self.events.judge(batch, scores, flags)
                outcome.alerts = outcome.judgement.records
            if self.observer is not None:
                self.observer.observe(batch, scores, flags, outcome.judgement)
        if not self.resumption.idle:
            self._leave_out_replayed(outcome)
        for letter in outcome.dead:
            log.warning(
                "dead_letter",
                source=letter.record.position,
                stage=letter.stage,
                error=letter.reason,
            )
        return outcome

    def _leave_out_replayed(self, outcome: _Outcome) -> None:
        """Drop the alert records and dead letters of replayed records: they were delivered
        before the crash that made the replay (``streamer.resume``)."""
        replayed = self.resumption.replayed
        outcome.alerts = [a for a in outcome.alerts if not replayed(*_made_at(a))]
        outcome.dead = [d for d in outcome.dead if not replayed(*_address(d.record))]

    def _deliver(self, outcome: _Outcome) -> BatchReport:
        self.pending = outcome
        report, records = outcome.report, outcome.records
        clock = partial(_timed, report.seconds)
        with clock("produce"):
            self.alert_sink.add(outcome.alerts)
            self.dead_letter_sink.add(outcome.dead)
            self.alert_sink.flush()
            self.dead_letter_sink.flush()
        judgement = outcome.judgement
        if judgement is not None:
            self.events.apply(judgement)
        if outcome.cut is not None and self.windower is not None:
            self.windower.apply(outcome.cut)
        with clock("checkpoint"):
            report.checkpointed = self.checkpoint.after_batch(
                self.state,
                outcome.decoded,
                [*outcome.done, *records],
                force=() if judgement is None else judgement.changed,
            )
        with clock("commit"):
            self.source.commit(self.resumption.to_commit([*outcome.done, *records]))
        self.pending = None
        report.scored, report.alerts = len(outcome.batch), len(outcome.alerts)
        report.dead_letters = len(outcome.dead)
        log.info(
            "batch_scored",
            records=report.records,
            scored=report.scored,
            alerts=report.alerts,
            dead_letters=report.dead_letters,
            model=self.events.model.get("version"),
            **{f"{stage}_ms": round(s * 1000, 2) for stage, s in report.seconds.items()},
        )
        return report

    def use_model(
        self,
        detector: Detector,
        codec: Codec,
        calibrator: Calibrator,
        model: Mapping[str, str],
        windower: Windower | None = None,
        memory: Memory | None = None,
    ) -> bool:
        """Score with ``detector`` (decoding with ``codec``, judging with ``calibrator``, fresh
        from its bundle: another model's thresholds do not apply) from the next batch on, and
        say so in alerts (``model``: name and version). Called between batches, so no batch is
        scored by two models. Every held partition's state is saved at once, so a crash before
        the next save resumes with this model from here. Returns False, changing nothing, while
        a batch waits for delivery or a restored partition replays: try after the next batch.
        ``windower``: the new model's, when its windows differ (else the buffers carry on).
        ``memory``: the new model's (its own training windows start every key's memory)."""
        if self.pending is not None or not self.resumption.idle:
            return False
        before = self.events.model.get("version")
        self.detector, self.codec, self.calibrator = detector, codec, calibrator
        self.memory = memory
        self.events.feature_names = detector.feature_names
        self.events.model = dict(model)
        if windower is not None:
            self.windower = windower
        self.state = KeyState(
            calibrator, self.events, detector.version or "unsaved", self.windower, memory
        )
        self.checkpoint.save_all(self.state)
        self.source.commit(())  # a transactional source commits the saved state; others no-op
        log.info("model_swapped", previous=before, version=model.get("version"))
        return True

    def partitions_revoked(self, partitions: Collection[Partition]) -> None:
        """The source is losing ``partitions``: save their state for their next owner.

        Runs on the Kafka client's network thread, where nothing may commit offsets. A batch
        still waiting for delivery is given up and rewound: it is uncommitted, so whoever owns
        its partitions next, this runner included, reads it again (any of its alerts that did
        reach the broker come again with the same ids)."""
        if self.pending is not None:
            self._release(self.pending)
        self.checkpoint.save(self.state, partitions)
        self.source.commit(())  # a transactional source commits the saved state; others no-op
        self.checkpoint.forget(partitions)
        self.resumption.forget(partitions)
        log.info("partitions_revoked", partitions=_names(partitions))

    def partitions_assigned(self, partitions: Collection[Partition]) -> None:
        """The source now owns ``partitions``: resume their calibrator state. The global state
        comes from a checkpoint only while this runner has scored nothing of its own."""
        found = self.checkpoint.restore(self.state, partitions, with_global=not self.scored_any)
        self.resumption.forget(partitions)
        for partition, saved in found.items():
            self.events.resume_after(partition, saved.offset)
            self.resumption.restored(partition, saved.offset)
        log.info(
            "partitions_assigned",
            partitions=_names(partitions),
            restored=_names(found),
        )

    def _release(self, outcome: _Outcome) -> None:
        """Give up a batch whose delivery failed: its events are undone and its records read
        again by whoever owns their partitions next."""
        log.warning("pending_batch_released", records=len(outcome.records))
        if outcome.judgement is not None:
            self.events.revert(outcome.judgement)
        self.checkpoint.rewind(outcome.records)
        self.source.rewind(outcome.records)
        self.pending = None

    def close(self) -> None:
        """Save every partition's state (a graceful stop; offsets are already committed)."""
        self.checkpoint.save(self.state)
        self.source.commit(())


def recalled(memory: Memory, batch: WindowBatch, scores: Scores) -> Scores:
    """``scores`` after ``memory`` has judged the batch's windows: each score at most its
    window's novelty, the difference a ``memory`` part (<= 0) so the parts still sum to it."""
    recall = memory.recall(batch.keys, batch.windows, scores.score)
    combined = recall.score.astype(np.float32)
    parts = {**scores.parts, "memory": combined - scores.score}
    return replace(scores, score=combined, parts=parts)


def _made_at(alert: Alert) -> tuple[str, int, int]:
    """The topic, partition and offset of the window that made ``alert`` (an event record's
    ``at``, a window alert's ``source``)."""
    made = alert.body.get("at") or alert.body["source"]
    return made["topic"], made["partition"], made["offset"]


def _address(record: SourceRecord) -> tuple[str, int, int]:
    return record.topic, record.partition, record.offset


def _names(partitions: Collection[Partition]) -> list[str]:
    return [f"{topic}/{number}" for topic, number in sorted(partitions)]


@contextmanager
def _timed(into: dict[str, float], stage: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        into[stage] = time.perf_counter() - started


def _dead_letter_position(letter: DeadLetter) -> tuple[str, int, int]:
    record = letter.record
    return record.topic, record.partition, record.offset
