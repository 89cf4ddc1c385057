"""Raw readings cut into windows inside the daemon (``[codec].input = "readings"``; docs/design.md,
"Readings in, windows out").

A sensor or market feed publishes one reading per step per entity. The ``Windower`` keeps, per
key, the last W - 1 readings (W and the channels C from the model: a bundle trained on a series
cut with ``--window W``), how many readings the key's series has had, and the time of its last
one. Each reading then completes the window of the W readings ending with it, every ``stride``
readings once the key has W: exactly the windows ``--window W --stride S`` cuts from a file of
the same readings, stamped and identified by the reading that completes them.

- A reading not after its key's last one (late, or repeated) is a dead letter saying so.
- A gap longer than ``max_gap_ms`` restarts the key's series: no window spans it (0: no limit).
- A missing value (NaN; JSON ``null``) is, under ``[codec].missing = "fill-previous"``, filled
  from the key's previous reading of that channel; with nothing before it, a dead letter.

A batch is cut without touching the buffers (``cut``); ``apply`` makes its result the state once
the batch is delivered, so a batch computed again (scoring failed) or given up (revoked) is cut
the same way. The buffers travel in each partition's checkpoint beside the calibrator state,
so a restart or a rebalance resumes without a hole or a repeat.
"""

from __future__ import annotations

import io
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import pandas as pd
import structlog
from numpy.typing import NDArray

from streamer.capped import drop_oldest, touch
from streamer.ingest.windows import sliding_windows
from streamer.records import DeadLetter, WindowBatch

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class KeyBuffer:
    """One key's series so far: ``tail`` (b, C) float32, its last b <= W - 1 readings, oldest
    first; ``seen`` readings since the series (re)started; ``last_ts`` the last one's time (ms)."""

    tail: NDArray[np.float32]
    seen: int
    last_ts: int


@dataclass
class Cut:
    """What one batch does to the buffers: each key it touched, and its buffer after it."""

    buffers: dict[str, KeyBuffer]


class Windower:
    """Per-key buffers of readings, cut into windows of ``steps`` readings of ``channels``
    (see the module docstring). At most ``max_keys`` keys are kept (0: no cap), the least
    recently seen dropped first: a dropped key that returns starts its series afresh."""

    def __init__(
        self,
        steps: int,
        channels: tuple[str, ...],
        stride: int = 1,
        max_gap_ms: int = 0,
        fill_previous: bool = False,
        max_keys: int = 0,
    ) -> None:
        self.steps, self.channels, self.stride = steps, channels, stride
        self.max_gap_ms, self.fill_previous, self.max_keys = max_gap_ms, fill_previous, max_keys
        self._keys: dict[str, KeyBuffer] = {}
        self.dropped = 0

    @property
    def keys(self) -> list[str]:
        return list(self._keys)

    def cut(self, readings: WindowBatch) -> tuple[WindowBatch, list[DeadLetter], Cut]:
        """The windows ``readings`` (n, C) complete, in stream order, the readings refused (as
        dead letters), and the buffers' change (``apply`` it once the batch is delivered)."""
        width = self.steps * len(self.channels)
        if not len(readings):
            return WindowBatch.empty(width), [], Cut({})
        codes, uniques = pd.factorize(readings.keys)
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
        rows_out: list[NDArray[np.intp]] = []
        windows_out: list[NDArray[np.float32]] = []
        dead: list[DeadLetter] = []
        buffers: dict[str, KeyBuffer] = {}
        for index, key in enumerate(uniques.tolist()):
            rows = order[bounds[index] : bounds[index + 1]]
            made, windows, refused, buffer = self._cut_key(
                self._keys.get(key), readings.ts_ms[rows], readings.windows[rows]
            )
            rows_out.append(rows[made])
            windows_out.append(windows)
            dead.extend(DeadLetter(readings.records[rows[i]], why) for i, why in refused)
            if buffer is not None:
                buffers[key] = buffer
        rows = np.concatenate(rows_out)
        stream = np.argsort(rows, kind="stable")
        rows = rows[stream]
        dead.sort(key=lambda letter: (letter.record.partition, letter.record.offset))
        return (
            WindowBatch(
                records=[readings.records[i] for i in rows.tolist()],
                keys=readings.keys[rows],
                ts_ms=readings.ts_ms[rows],
                windows=np.concatenate(windows_out)[stream].reshape(-1, width),
                labels=readings.labels[rows],
            ),
            dead,
            Cut(buffers),
        )

    def apply(self, cut: Cut) -> None:
        """Make a delivered batch's buffers the state (the keys it touched become the most
        recently seen); drop the least recently seen keys beyond ``max_keys``."""
        for key, buffer in cut.buffers.items():
            touch(self._keys, key, buffer)
        dropped = drop_oldest(self._keys, self.max_keys)
        if dropped:
            self.dropped += dropped
            log.warning("reading_buffers_dropped", keys=dropped, max_keys=self.max_keys)

    def _cut_key(
        self, buffer: KeyBuffer | None, ts: NDArray[np.int64], values: NDArray[np.float32]
    ) -> tuple[NDArray[np.intp], NDArray[np.float32], list[tuple[int, str]], KeyBuffer | None]:
        """One key's readings of a batch (r,) / (r, C): the positions among them that complete a
        window, those windows (m, W*C), the refused positions with reasons, and its new buffer
        (None: unchanged)."""
        refused: list[tuple[int, str]] = []
        last = buffer.last_ts if buffer is not None else None
        before = np.maximum.accumulate(np.concatenate([[ts[0] - 1 if last is None else last], ts]))
        in_order = ts > before[:-1]
        for i in np.flatnonzero(~in_order).tolist():
            refused.append(
                (
                    i,
                    f"reading at ts {int(ts[i])} is not after its key's last at "
                    f"{int(before[i])} (late or repeated)",
                )
            )
        positions = np.flatnonzero(in_order)
        made: list[NDArray[np.intp]] = []
        windows: list[NDArray[np.float32]] = []
        for start, stop, restart in self._segments(buffer, ts[positions]):
            tail, seen = (
                (np.empty((0, len(self.channels)), np.float32), 0)
                if restart or buffer is None
                else (buffer.tail, buffer.seen)
            )
            part = positions[start:stop]
            series = np.concatenate([tail, values[part]]).astype(np.float32)
            if self.fill_previous:
                series, unfilled = _forward_filled(series)
                unfilled = unfilled[len(tail) :]
                for i in np.flatnonzero(unfilled).tolist():
                    column = self.channels[int(np.flatnonzero(np.isnan(series[len(tail) + i]))[0])]
                    refused.append(
                        (
                            int(part[i]),
                            f"reading's {column!r} is missing, with no earlier "
                            "reading of its key to fill it from",
                        )
                    )
                keep = ~unfilled
                series = np.concatenate([series[: len(tail)], series[len(tail) :][keep]])
                part = part[keep]
            count = seen + np.arange(len(part))
            wanted = (count >= self.steps - 1) & ((count - (self.steps - 1)) % self.stride == 0)
            ends = len(tail) + np.flatnonzero(wanted)
            if ends.size:
                cut = sliding_windows(series, self.steps, 1)
                windows.append(cut[ends - (self.steps - 1)])
                made.append(part[wanted])
            keep_rows = self.steps - 1
            buffer = KeyBuffer(
                series[max(len(series) - keep_rows, 0) :] if keep_rows else series[:0],
                seen + len(part),
                int(ts[part[-1]]) if len(part) else (buffer.last_ts if buffer else 0),
            )
        width = self.steps * len(self.channels)
        return (
            np.concatenate(made) if made else np.empty(0, np.intp),
            np.concatenate(windows) if windows else np.empty((0, width), np.float32),
            sorted(refused),
            buffer if positions.size else None,
        )

    def _segments(
        self, buffer: KeyBuffer | None, ts: NDArray[np.int64]
    ) -> list[tuple[int, int, bool]]:
        """(start, stop, restarts) spans of a key's in-order readings ``ts`` between gaps longer
        than ``max_gap_ms``; ``restarts``: the span does not continue the buffer."""
        if not ts.size:
            return []
        if not self.max_gap_ms:
            return [(0, len(ts), False)]
        previous = np.concatenate([[ts[0] if buffer is None else buffer.last_ts], ts[:-1]])
        gaps = np.flatnonzero(ts - previous > self.max_gap_ms)
        starts = [0, *gaps.tolist()]
        if gaps.size and gaps[0] == 0:
            starts = gaps.tolist()
        stops = [*starts[1:], len(ts)]
        return [(a, b, a in gaps) for a, b in zip(starts, stops, strict=True)]

    def snapshot(self, keys: Collection[str]) -> bytes:
        """The buffers of ``keys`` (those held), as bytes for a checkpoint."""
        held = [key for key in sorted(keys) if key in self._keys]
        buffers = [self._keys[key] for key in held]
        stream = io.BytesIO()
        np.savez(
            stream,
            keys=np.array(held, dtype=object).astype(str) if held else np.empty(0, str),
            seen=np.array([b.seen for b in buffers], np.int64),
            last_ts=np.array([b.last_ts for b in buffers], np.int64),
            sizes=np.array([len(b.tail) for b in buffers], np.int64),
            tails=(
                np.concatenate([b.tail for b in buffers])
                if buffers
                else np.empty((0, len(self.channels)), np.float32)
            ),
        )
        return stream.getvalue()

    def restore(self, data: bytes) -> None:
        """Take the buffers a snapshot holds (replacing those of the same keys). Buffers of
        another shape (another model's windows) are left out."""
        with np.load(io.BytesIO(data), allow_pickle=False) as saved:
            keys, seen, last_ts = saved["keys"], saved["seen"], saved["last_ts"]
            sizes, tails = saved["sizes"], saved["tails"]
        if (
            tails.ndim != 2
            or tails.shape[1] != len(self.channels)
            or sizes.max(initial=0) >= (self.steps)
        ):
            log.warning("reading_buffers_not_restored", reason="another window shape")
            return
        starts = np.concatenate([[0], np.cumsum(sizes)])
        for i, key in enumerate(keys.tolist()):
            tail = tails[starts[i] : starts[i + 1]].astype(np.float32)
            self._keys[key] = KeyBuffer(tail, int(seen[i]), int(last_ts[i]))


def _forward_filled(
    series: NDArray[np.float32],
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """``series`` (L, C) with each NaN replaced by the last value before it in its column, and
    (L,) which rows still hold a NaN (nothing before it to fill it from)."""
    present = ~np.isnan(series)
    if present.all():
        return series, np.zeros(len(series), dtype=bool)
    index = np.where(present, np.arange(len(series))[:, None], 0)
    np.maximum.accumulate(index, axis=0, out=index)
    filled = series[index, np.arange(series.shape[1])]
    filled[~np.maximum.accumulate(present, axis=0)] = np.nan
    unfilled = np.asarray(np.isnan(filled).any(axis=1), dtype=bool)
    return filled, unfilled
