"""Checkpoints, one per input partition, so thresholds and open alert events move with their
partition.

An entity's windows all arrive on one partition, so a partition's checkpoint is the calibrator
state and open events of the entities it carried (``KeyState``) plus the offset after
the last record it reflects; it is restored when the partition is assigned. Saved after every
batch when ``interval_s`` is 0, else at most every ``interval_s`` seconds, and always after a batch
that opened or closed an alert event, with a partition's first batch, for partitions being
revoked and at a graceful stop. Alerts and offsets never depend on checkpoints, and a crash costs
no learning: a restored partition replays from its checkpoint's offset (``streamer.resume``).

A checkpoint names the model version whose scores it learned. Thresholds fitted to one model's
scores mean nothing for another's, so a daemon running another model does not restore it: its
keys warm up afresh from its own bundle (``checkpoint_of_another_model`` is logged).

Reasoning: docs/delivery.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from calibration.base import Calibrator
from calibration.memory import Memory
from calibration.state import GLOBAL, entity_names
from streamer.ingest.readings import Windower
from streamer.records import Partition, SourceRecord, WindowBatch, first_offsets, next_offsets

log = structlog.get_logger(__name__)


# A checkpoint's envelope. A key's thresholds, its open alert events and (readings input) its
# buffered readings belong to one partition, so all travel in one checkpoint: ``MODEL_MAGIC``,
# the model version's length (2 bytes, big-endian) and the version (UTF-8); with readings input
# ``READINGS_MAGIC``, the buffers' length (8 bytes, big-endian) and the buffers
# (``streamer.ingest.readings``); with a memory ``MEMORY_MAGIC``, its length (8 bytes,
# big-endian) and the keys' memories (``calibration.memory``); then ``MAGIC``, the calibrator
# snapshot's length (8 bytes, big-endian), the calibrator snapshot (``calibration.state``),
# then the event state (``streamer.events``, JSON). Older checkpoints start at ``MAGIC`` (no
# model named) or are a bare calibrator snapshot (a zip archive: no open events either).

MODEL_MAGIC = b"TNDMKM1\n"
READINGS_MAGIC = b"TNDMKR1\n"
MEMORY_MAGIC = b"TNDMKY1\n"
MAGIC = b"TNDMKS1\n"
_LENGTH_BYTES = 8
_MODEL_LENGTH_BYTES = 2


class ForeignCheckpointError(ValueError):
    """A checkpoint learned another model's scores; ``model`` is that model's version."""

    def __init__(self, model: str) -> None:
        super().__init__(f"checkpoint of model {model}")
        self.model = model


class EventState(Protocol):
    """The event side of a key's state (``streamer.events.EventTracker``)."""

    def snapshot(self, keys: Collection[str]) -> bytes: ...

    def parse(self, data: bytes) -> Any:
        """The states ``data`` holds; raises if it cannot be read whole."""
        ...

    def load(self, states: Any) -> None: ...


class KeyState:
    """A calibrator and its event tracker (and with readings input, the ``windower``'s
    buffers; with a memory, the keys' memories), saved and restored as one checkpoint, for the
    model whose version is ``model``."""

    def __init__(
        self,
        calibrator: Calibrator,
        events: EventState,
        model: str,
        windower: Windower | None = None,
        memory: Memory | None = None,
    ) -> None:
        self.calibrator, self.events, self.model = calibrator, events, model
        self.windower, self.memory = windower, memory

    def snapshot(self, keys: Collection[str]) -> bytes:
        """The global calibrator state and that of ``keys``, with their events (and buffers)."""
        calibrator = self.calibrator.snapshot(sorted(keys))
        length = len(calibrator).to_bytes(_LENGTH_BYTES, "big")
        model = self.model.encode()
        named = MODEL_MAGIC + len(model).to_bytes(_MODEL_LENGTH_BYTES, "big") + model
        if self.windower is not None:
            buffers = self.windower.snapshot(keys)
            named += READINGS_MAGIC + len(buffers).to_bytes(_LENGTH_BYTES, "big") + buffers
        if self.memory is not None:
            memories = self.memory.snapshot(keys)
            named += MEMORY_MAGIC + len(memories).to_bytes(_LENGTH_BYTES, "big") + memories
        return named + MAGIC + length + calibrator + self.events.snapshot(keys)

    def restore(self, data: bytes, with_global: bool = True) -> None:
        """Load a checkpoint (its global calibrator state only when ``with_global``). A
        ``ForeignCheckpointError`` when it learned another model's scores. The event state is
        read first, so a damaged one changes nothing (the calibrator's restore refuses damage
        before changing anything too)."""
        model = model_of(data)
        if model is not None and model != self.model:
            raise ForeignCheckpointError(model)
        calibrator, events = split(data)
        states = None if events is None else self.events.parse(events)
        memories = memories_of(data)
        if self.memory is not None and memories is not None:
            self.memory.restore(memories)
        self.calibrator.restore(calibrator, with_global=with_global)
        if states is not None:
            self.events.load(states)
        buffers = readings_of(data)
        if self.windower is not None and buffers is not None:
            self.windower.restore(buffers)


def keys_in(data: bytes) -> list[str]:
    """The keys a checkpoint (either form) holds, the global state left out."""
    return [name for name in entity_names(split(data)[0]) if name != GLOBAL]


def model_of(data: bytes) -> str | None:
    """The version of the model whose scores a checkpoint learned (None: an older checkpoint,
    which does not say)."""
    if not data.startswith(MODEL_MAGIC):
        return None
    start = len(MODEL_MAGIC) + _MODEL_LENGTH_BYTES
    length = int.from_bytes(data[len(MODEL_MAGIC) : start], "big")
    return data[start : start + length].decode()


def readings_of(data: bytes) -> bytes | None:
    """A checkpoint's buffered readings (None: it has none)."""
    return _section(_after_model(data), READINGS_MAGIC)[0]


def memories_of(data: bytes) -> bytes | None:
    """A checkpoint's keys' memories (None: it has none)."""
    return _section(_after_readings(_after_model(data)), MEMORY_MAGIC)[0]


def _section(data: bytes, magic: bytes) -> tuple[bytes | None, bytes]:
    """The length-prefixed section ``data`` starts with if its magic is ``magic`` (else None),
    and what follows it."""
    if not data.startswith(magic):
        return None, data
    start = len(magic) + _LENGTH_BYTES
    end = start + int.from_bytes(data[len(magic) : start], "big")
    return data[start:end], data[end:]


def _after_readings(data: bytes) -> bytes:
    """``data`` (past its model section) past its readings section, if any."""
    return _section(data, READINGS_MAGIC)[1]


def _after_model(data: bytes) -> bytes:
    """``data`` past its model section, if any."""
    if not data.startswith(MODEL_MAGIC):
        return data
    start = len(MODEL_MAGIC) + _MODEL_LENGTH_BYTES
    return data[start + int.from_bytes(data[len(MODEL_MAGIC) : start], "big") :]


def split(data: bytes) -> tuple[bytes, bytes | None]:
    """A checkpoint's calibrator snapshot and event state (None in a calibrator-only one)."""
    data = _section(_after_readings(_after_model(data)), MEMORY_MAGIC)[1]
    if not data.startswith(MAGIC):
        return data, None
    start = len(MAGIC) + _LENGTH_BYTES
    length = int.from_bytes(data[len(MAGIC) : start], "big")
    return data[start : start + length], data[start + length :]


@dataclass(frozen=True)
class SavedState:
    """One partition's checkpoint: calibrator ``snapshot`` bytes, the ``offset`` of the next
    record it does not reflect, and its ``generation`` (1 for the first save, then +1 per save)."""

    snapshot: bytes
    offset: int
    generation: int


class Checkpointed(Protocol):
    """What a checkpoint saves: a calibrator, or one with its events (``KeyState``)."""

    def snapshot(self, keys: list[str]) -> bytes: ...

    def restore(self, data: bytes, with_global: bool) -> None: ...


class StateStore(Protocol):
    """Where checkpoints are kept: the compacted state topic, or memory in tests."""

    def write(self, partition: Partition, saved: SavedState) -> None: ...

    def flush(self) -> None:
        """Return once every write is durable; raise if one is not."""
        ...

    def read(self, partitions: Collection[Partition]) -> dict[Partition, SavedState]:
        """The latest complete checkpoint of each of ``partitions`` that has one."""
        ...


class PartitionCheckpoints:
    """Tracks which entities and offsets each partition has seen, and saves and restores their
    calibrator state (see the module docstring)."""

    def __init__(
        self,
        store: StateStore,
        interval_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.interval_s, self.clock = store, interval_s, clock
        self._keys: dict[Partition, set[str]] = {}
        self._offsets: dict[Partition, int] = {}
        self._generations: dict[Partition, int] = {}
        self._superseded: dict[Partition, int] = {}
        """The generation of another model's checkpoint, not restored: the next save follows it."""
        self._dirty: set[Partition] = set()
        self._saved_at = clock()

    def after_batch(
        self,
        state: Checkpointed,
        batch: WindowBatch,
        records: Sequence[SourceRecord],
        force: Collection[Partition] = (),
    ) -> bool:
        """Note what ``records`` (whose good part is ``batch``) brought; save every partition if a
        save is due, else only those in ``force`` (an alert event of theirs opened or closed): a
        checkpoint costs its partitions' whole calibrator state. Returns whether it saved."""
        seen = set(
            zip(((r.topic, r.partition) for r in batch.records), batch.keys.tolist(), strict=True)
        )
        for partition, key in seen:
            self._keys.setdefault(partition, set()).add(key)
        for partition, offset in next_offsets(records).items():
            self._offsets[partition] = max(self._offsets.get(partition, 0), offset)
            self._dirty.add(partition)
        if self.clock() - self._saved_at >= self.interval_s:
            self.save(state)
            return True
        # A partition never saved is saved with its first batch, before its first commit: so
        # every committed offset has a checkpoint to resume from (``streamer.resume``).
        force = {*force, *(p for p in self._dirty if p not in self._generations)}
        if force:
            self.save(state, force)
            return True
        return False

    def save(self, state: Checkpointed, partitions: Collection[Partition] | None = None) -> None:
        """Write the state of ``partitions`` (all held, when None) that changed since their last
        save, and wait until it is durable."""
        chosen = self._dirty if partitions is None else self._dirty & set(partitions)
        for partition in sorted(chosen):
            generation = self._generations.get(partition, self._superseded.get(partition, 0)) + 1
            keys = sorted(self._keys.get(partition, ()))
            saved = SavedState(state.snapshot(keys), self._offsets[partition], generation)
            self.store.write(partition, saved)
            self._generations[partition] = generation
        self.store.flush()
        self._dirty -= chosen
        if partitions is None:
            self._saved_at = self.clock()

    def save_all(self, state: Checkpointed) -> None:
        """Write every held partition's state, changed or not (a new model's fresh state
        supersedes the previous model's checkpoints), and wait until it is durable."""
        self._dirty |= set(self._offsets)
        self.save(state)

    def restore(
        self, state: Checkpointed, partitions: Collection[Partition], with_global: bool
    ) -> dict[Partition, SavedState]:
        """Load the last checkpoint of each of ``partitions`` into ``state``; the global
        state is taken (from the first) only when ``with_global``. Returns what was found."""
        found = self.store.read(partitions)
        for partition, saved in sorted(found.items()):
            try:
                state.restore(saved.snapshot, with_global=with_global)
            except ForeignCheckpointError as foreign:
                log.warning(
                    "checkpoint_of_another_model",
                    topic=partition[0],
                    partition=partition[1],
                    checkpoint_model=foreign.model,
                    model=getattr(state, "model", None),
                    action="not restored: its keys warm up afresh from this model's bundle",
                )
                self._superseded[partition] = saved.generation
                del found[partition]
                continue
            with_global = False
            keys = set(keys_in(saved.snapshot))
            self._keys.setdefault(partition, set()).update(keys)
            self._offsets[partition] = max(self._offsets.get(partition, 0), saved.offset)
            self._generations[partition] = saved.generation
            log.info(
                "calibrator_restored",
                topic=partition[0],
                partition=partition[1],
                offset=saved.offset,
                keys=len(keys),
                generation=saved.generation,
            )
        return found

    def rewind(self, records: Sequence[SourceRecord]) -> None:
        """``records`` were given up after ``after_batch`` noted them: a later save must not
        claim them (their next owner reads them again)."""
        for (topic, number), offset in first_offsets(records).items():
            partition = (topic, number)
            if partition in self._offsets:
                self._offsets[partition] = min(self._offsets[partition], offset)

    def forget(self, partitions: Collection[Partition]) -> None:
        """Stop tracking ``partitions`` (revoked: their next owner restores their checkpoint)."""
        for partition in partitions:
            self._keys.pop(partition, None)
            self._offsets.pop(partition, None)
            self._generations.pop(partition, None)
            self._superseded.pop(partition, None)
            self._dirty.discard(partition)
