"""What a partition's checkpoint holds: its keys' calibrator state and their open alert events.

Both must move together (a key's thresholds and its open event belong to one partition), so a
checkpoint is one envelope of the two: ``MAGIC``, the calibrator snapshot's length (8 bytes,
big-endian), the calibrator snapshot (``calibration.state``), then the event state
(``streamer.events``, JSON). A checkpoint written before events existed is a bare calibrator
snapshot (a zip archive); it restores with no open events.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Protocol

from calibration.base import Calibrator
from calibration.state import GLOBAL, entity_names

MAGIC = b"TNDMKS1\n"
_LENGTH_BYTES = 8


class EventState(Protocol):
    """The event side of a key's state (``streamer.events.EventTracker``)."""

    def snapshot(self, keys: Collection[str]) -> bytes: ...

    def parse(self, data: bytes) -> Any:
        """The states ``data`` holds; raises if it cannot be read whole."""
        ...

    def load(self, states: Any) -> None: ...


class KeyState:
    """A calibrator and its event tracker, saved and restored as one checkpoint."""

    def __init__(self, calibrator: Calibrator, events: EventState) -> None:
        self.calibrator, self.events = calibrator, events

    def snapshot(self, keys: Collection[str]) -> bytes:
        """The global calibrator state and that of ``keys``, with their events."""
        calibrator = self.calibrator.snapshot(sorted(keys))
        length = len(calibrator).to_bytes(_LENGTH_BYTES, "big")
        return MAGIC + length + calibrator + self.events.snapshot(keys)

    def restore(self, data: bytes, with_global: bool = True) -> None:
        """Load a checkpoint (its global calibrator state only when ``with_global``). The event
        state is read first, so a damaged one changes nothing (the calibrator's restore refuses
        damage before changing anything too)."""
        calibrator, events = split(data)
        states = None if events is None else self.events.parse(events)
        self.calibrator.restore(calibrator, with_global=with_global)
        if states is not None:
            self.events.load(states)


def keys_in(data: bytes) -> list[str]:
    """The keys a checkpoint (either form) holds, the global state left out."""
    return [name for name in entity_names(split(data)[0]) if name != GLOBAL]


def split(data: bytes) -> tuple[bytes, bytes | None]:
    """A checkpoint's calibrator snapshot and event state (None in a calibrator-only one)."""
    if not data.startswith(MAGIC):
        return data, None
    start = len(MAGIC) + _LENGTH_BYTES
    length = int.from_bytes(data[len(MAGIC) : start], "big")
    return data[start : start + length], data[start + length :]
