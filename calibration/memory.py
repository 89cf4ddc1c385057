"""A per-key memory of normal windows: a window like one its key has shown is no news.

The detector is trained once, so a daily pattern training never saw, or a valve's operating
point that drifted after it, scores as anomalous for ever. The memory keeps, per key, a sample
of the windows it learned and judges each window's *novelty*: the distance to its nearest
remembered neighbour, as tail decades of a robust z-score of the log-distance against the
same distances of the windows it learned (``-log10 Q(z)``). The window's score becomes
``min(score, novelty)``: anomalous only if the model finds it unlike training *and* the key has
shown nothing like it. A window whose combined score is under ``gate`` decades is learned; an
anomaly is not, so it stays news while it lasts.

Every key starts from the model's training windows (``MemorySeed``), numbered from 0 in the
order they were trained on; a key's own windows are numbered from 0 as they arrive, and
remembered windows numbered within ``exclude`` of a window are not its neighbours (they
overlap it). A backtest over the training series thus judges each training window against the
others, as leave-one-out.

Deterministic whatever the batching: a key's windows are taken in blocks of ``block`` of its
own windows; each is judged against the memory as it stood at its block's start, and the
block's learned windows join at its end. Nearest neighbours are ranked by one float32 matrix
product and every window within its rounding of the best is measured again in float64, row by
row, so a window's novelty does not depend on what else was in its batch. Measurements and
reasoning: docs/evaluation.md (a memory of normal windows).
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy.special import log_ndtr

ROUNDING = 1e-5
"""Relative rounding of the float32 product's squared distances (about 80 float32 epsilons):
every remembered window this close to the best is measured again exactly."""
DISTANCE_FLOOR = 1e-3
"""Distances below this (scaled units: a thousandth of a feature's spread) are equal."""
SPREAD_FLOOR = 0.1
"""Least spread of the reference log-distances: 10 % further than usual is not news."""
MAGIC = b"TNDMMEM1"
_LOG10 = math.log(10.0)


@dataclass(frozen=True)
class MemorySettings:
    """How much a key remembers, counted in its own windows.

    ``capacity`` windows are kept, one learned window in every ``stride`` (2,500 of 4: the last
    10,000 learned windows, a week of 1-minute windows); the last ``reference`` learned windows'
    nearest distances set the scale, and novelty is judged once ``min_reference`` of them are
    in. ``exclude``: remembered windows numbered this close to a window overlap it. ``gate``:
    the combined score, in tail decades, under which a window is learned (3: one in 1,000).
    ``max_keys``: keys remembered (least recently seen dropped; one that returns starts from
    the seed again); a key costs 4 ``capacity`` D bytes.
    """

    capacity: int = 2500
    stride: int = 4
    block: int = 256
    reference: int = 2000
    min_reference: int = 128
    exclude: int = 32
    gate: float = 3.0
    max_keys: int = 1000


@dataclass(frozen=True)
class MemorySeed:
    """Where every key starts: ``windows`` (m, D) raw training windows, oldest first, and the
    per-feature ``center`` and ``scale`` (D,) that put windows in the memory's units."""

    windows: NDArray[np.float32]
    center: NDArray[np.float32]
    scale: NDArray[np.float32]


@dataclass
class _KeyMemory:
    """One key's memory: ``windows`` (k, D) scaled with their ``numbers`` (k,), the
    ``reference`` distances, and what the current block learned, joining at its end."""

    windows: NDArray[np.float32]
    numbers: NDArray[np.int64]
    reference: NDArray[np.float64]
    seen: int = 0
    learned: int = 0
    """Of ``windows``, how many (the last) the key learned; the rest are the seed's last."""
    centre: float = math.nan
    spread: float = math.nan
    pending_windows: list[NDArray[np.float32]] = field(default_factory=list)
    pending_numbers: list[int] = field(default_factory=list)
    pending_reference: list[float] = field(default_factory=list)
    augmented: NDArray[np.float32] = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    """(k, D + 1): ``windows`` with their squared norms, so that one product with a query
    ``[-2 q, 1]`` gives each squared distance less the query's own norm (computed when not
    given: a new key shares the seed's)."""

    def __post_init__(self) -> None:
        if len(self.augmented) != len(self.windows):
            self.augment()

    def augment(self) -> None:
        """Recompute ``augmented`` after ``windows`` changed."""
        norms = np.einsum("ij,ij->i", self.windows, self.windows)
        self.augmented = np.hstack([self.windows, norms[:, None]]).astype(np.float32)


@dataclass(frozen=True)
class Recalled:
    """What the memory made of n windows: ``score`` (n,) the combined score, ``novelty`` (n,)
    tail decades (+inf where the key's memory does not judge yet), ``learned`` (n,) bool."""

    score: NDArray[np.float64]
    novelty: NDArray[np.float64]
    learned: NDArray[np.bool_]


class Memory:
    """Per-key memories of normal windows, every key started from ``seed`` (module docstring)."""

    def __init__(self, seed: MemorySeed, settings: MemorySettings | None = None) -> None:
        self.settings = settings or MemorySettings()
        self.center = np.asarray(seed.center, np.float32)
        self.scale = np.asarray(seed.scale, np.float32)
        self.keys: OrderedDict[str, _KeyMemory] = OrderedDict()
        self.evicted = 0
        """Keys dropped so far to stay within ``max_keys``."""
        self._start = self._seeded(self._scaled(seed.windows))

    def _scaled(self, windows: NDArray[np.floating]) -> NDArray[np.float32]:
        return ((np.asarray(windows, np.float32) - self.center) / self.scale).astype(np.float32)

    def _seeded(self, scaled: NDArray[np.float32]) -> _KeyMemory:
        """A key's memory before its first window: the seed windows and their leave-out
        distances to each other."""
        s = self.settings
        kept = scaled[-s.capacity :]
        numbers = np.arange(len(scaled), dtype=np.int64)[-s.capacity :]
        start = _KeyMemory(kept, numbers, np.zeros(0))
        if len(kept):
            distances = self._nearest(start, kept, numbers)
            start.reference = distances[np.isfinite(distances)][-s.reference :]
        _fit_scale(start, s.min_reference)
        return start

    def recall(
        self,
        keys: NDArray[np.str_],
        windows: NDArray[np.floating],
        scores: NDArray[np.floating],
    ) -> Recalled:
        """Judge and learn (n,) ``keys``' (n, D) raw ``windows`` with their (n,) model
        ``scores``, in stream order."""
        raw = np.asarray(scores, dtype=np.float64)
        combined, novelty = raw.copy(), np.full(len(raw), np.inf)
        learned = np.zeros(len(raw), dtype=bool)
        if len(raw) == 0:
            return Recalled(combined, novelty, learned)
        data = self._scaled(windows)
        names, inverse = np.unique(np.asarray(keys), return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(names) + 1))
        for row, name in enumerate(names.tolist()):
            at = order[bounds[row] : bounds[row + 1]]
            self._run(self._memory_of(name), at, data, raw, combined, novelty, learned)
        self._evict(set(names.tolist()))
        return Recalled(combined, novelty, learned)

    def _evict(self, keep: Collection[str]) -> None:
        """Drop the least recently seen keys beyond ``max_keys``, never one of ``keep`` (the
        batch's own keys, so a batch with more keys than the cap loses none of them)."""
        while len(self.keys) > self.settings.max_keys:
            oldest = next(iter(self.keys))
            if oldest in keep:
                return
            del self.keys[oldest]
            self.evicted += 1

    def _memory_of(self, name: str) -> _KeyMemory:
        memory = self.keys.get(name)
        if memory is None:
            start = self._start
            memory = _KeyMemory(
                start.windows,
                start.numbers,
                start.reference,
                centre=start.centre,
                spread=start.spread,
                augmented=start.augmented,
            )
            self.keys[name] = memory
        else:
            self.keys.move_to_end(name)
        return memory

    def _run(
        self,
        memory: _KeyMemory,
        at: NDArray[np.intp],
        data: NDArray[np.float32],
        raw: NDArray[np.float64],
        combined: NDArray[np.float64],
        novelty: NDArray[np.float64],
        learned: NDArray[np.bool_],
    ) -> None:
        """One key's windows ``at`` (stream order), block by block of its own count."""
        s = self.settings
        start = 0
        while start < len(at):
            part = at[start : start + s.block - memory.seen % s.block]
            numbers = memory.seen + np.arange(len(part), dtype=np.int64)
            distances = self._nearest(memory, data[part], numbers)
            if math.isfinite(memory.spread):
                floored = np.log(np.maximum(distances, DISTANCE_FLOOR))
                novelty[part] = -log_ndtr(-(floored - memory.centre) / memory.spread) / _LOG10
            combined[part] = np.minimum(raw[part], novelty[part])
            take = combined[part] < s.gate
            learned[part] = take
            memory.pending_reference.extend(distances[take & np.isfinite(distances)].tolist())
            kept = take & (numbers % s.stride == 0)
            memory.pending_windows.extend(data[part[kept]])
            memory.pending_numbers.extend(numbers[kept].tolist())
            memory.seen += len(part)
            start += len(part)
            if memory.seen % s.block == 0:
                self._close_block(memory)

    def _nearest(
        self, memory: _KeyMemory, queries: NDArray[np.float32], numbers: NDArray[np.int64]
    ) -> NDArray[np.float64]:
        """(k,) Euclidean distance of each of the (k, D) ``queries`` numbered ``numbers`` to
        its nearest remembered window that does not overlap it (+inf when there is none).

        A float32 product ranks the remembered windows; every window within its rounding of
        the best is measured again in float64, one row at a time, so a product's rounding
        (which depends on the batch's shape) cannot change a distance. Only the few remembered
        windows numbered near the queries are checked for overlap."""
        kept = memory.windows
        if len(kept) == 0 or len(queries) == 0:
            return np.full(len(queries), np.inf)
        exclude = self.settings.exclude
        lifted = np.hstack([-2.0 * queries, np.ones((len(queries), 1), np.float32)])
        rough = lifted @ memory.augmented.T
        low, high = int(numbers.min()) - exclude, int(numbers.max()) + exclude
        close = np.flatnonzero((memory.numbers > low) & (memory.numbers < high))
        if len(close):
            overlap = np.abs(memory.numbers[close][None, :] - numbers[:, None]) < exclude
            rough[:, close] = np.where(overlap, np.inf, rough[:, close])
        best = rough.min(axis=1)
        sizes = np.einsum("ij,ij->i", queries, queries) + float(memory.augmented[:, -1].max())
        margin = np.where(np.isfinite(best), best + ROUNDING * sizes, -np.inf)
        rows, columns = np.divmod(np.flatnonzero(rough <= margin[:, None]), len(kept))
        picked = kept[columns].astype(np.float64) - queries[rows].astype(np.float64)
        nearest = np.full(len(queries), np.inf)
        np.minimum.at(nearest, rows, np.einsum("ij,ij->i", picked, picked))
        distances: NDArray[np.float64] = np.sqrt(nearest)
        return distances

    def _close_block(self, memory: _KeyMemory) -> None:
        """A block ends: its learned windows and distances join the memory; the scale is
        refitted on the last ``reference`` distances."""
        s = self.settings
        if memory.pending_windows:
            memory.learned = min(memory.learned + len(memory.pending_windows), s.capacity)
            memory.windows = np.concatenate([memory.windows, np.stack(memory.pending_windows)])[
                -s.capacity :
            ]
            memory.numbers = np.concatenate(
                [memory.numbers, np.asarray(memory.pending_numbers, np.int64)]
            )[-s.capacity :]
            memory.augment()
        if memory.pending_reference:
            memory.reference = np.concatenate(
                [memory.reference, np.asarray(memory.pending_reference)]
            )[-s.reference :]
        memory.pending_windows, memory.pending_numbers, memory.pending_reference = [], [], []
        _fit_scale(memory, s.min_reference)

    def snapshot(self, keys: Collection[str]) -> bytes:
        """The memories of ``keys`` (those it holds), as bytes for ``restore``. Of a key's
        windows only those it learned are written; the seed's are counted (every key starts
        from the same seed), so a key that learned little costs little."""
        arrays: dict[str, NDArray[np.generic]] = {}
        header = []
        for index, name in enumerate(sorted(set(keys) & set(self.keys))):
            m = self.keys[name]
            header.append(
                {
                    "key": name,
                    "seen": m.seen,
                    "from_seed": len(m.windows) - m.learned,
                    "centre": m.centre,
                    "spread": m.spread,
                    "pending_numbers": m.pending_numbers,
                    "pending_reference": m.pending_reference,
                }
            )
            width = len(self.center)
            pending = np.stack(m.pending_windows) if m.pending_windows else np.zeros((0, width))
            arrays[f"{index}.windows"] = m.windows[len(m.windows) - m.learned :]
            arrays[f"{index}.numbers"] = m.numbers[len(m.numbers) - m.learned :]
            arrays[f"{index}.reference"] = m.reference
            arrays[f"{index}.pending"] = pending.astype(np.float32)
        buffer = io.BytesIO()
        arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
        np.savez(buffer, allow_pickle=False, **arrays)
        return MAGIC + buffer.getvalue()

    def restore(self, data: bytes) -> None:
        """Load the memories a ``snapshot`` holds, replacing those keys' own; a damaged
        snapshot raises ``ValueError`` and changes nothing."""
        if not data.startswith(MAGIC):
            raise ValueError("not a memory snapshot")
        loaded = {}
        try:
            with np.load(io.BytesIO(data[len(MAGIC) :]), allow_pickle=False) as saved:
                header = json.loads(saved["header"].tobytes())
                for index, entry in enumerate(header):
                    windows = saved[f"{index}.windows"].astype(np.float32)
                    from_seed = self._start.windows[len(self._start.windows) - entry["from_seed"] :]
                    numbers = self._start.numbers[len(self._start.numbers) - entry["from_seed"] :]
                    loaded[str(entry["key"])] = _KeyMemory(
                        windows=np.concatenate([from_seed, windows]),
                        numbers=np.concatenate([numbers, saved[f"{index}.numbers"]]),
                        learned=len(windows),
                        reference=saved[f"{index}.reference"].astype(np.float64),
                        seen=int(entry["seen"]),
                        centre=float(entry["centre"]),
                        spread=float(entry["spread"]),
                        pending_windows=[
                            row.astype(np.float32) for row in saved[f"{index}.pending"]
                        ],
                        pending_numbers=[int(v) for v in entry["pending_numbers"]],
                        pending_reference=[float(v) for v in entry["pending_reference"]],
                    )
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
            raise ValueError(f"damaged memory snapshot: {error}") from None
        for name, memory in loaded.items():
            self.keys[name] = memory
            self.keys.move_to_end(name)
        self._evict(loaded)


def _fit_scale(memory: _KeyMemory, min_reference: int) -> None:
    """The centre and spread of the log reference distances, once ``min_reference`` are in."""
    if len(memory.reference) < min_reference:
        return
    logs = np.log(np.maximum(memory.reference, DISTANCE_FLOOR))
    memory.centre = float(np.median(logs))
    memory.spread = max(1.4826 * float(np.median(np.abs(logs - memory.centre))), SPREAD_FLOOR)
