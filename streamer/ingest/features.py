"""Matching input features to a model's, by name (docs/design.md, "Features by name").

A bundle names its D features. A model trained on a series cut with ``--window W`` has W steps
of C channels, named step-major (``temp[t-3]`` is channel ``temp`` three steps before the last:
``streamer.ingest.windows``); its layout also knows the channels, so input may name channels and
carry W readings each. Files are matched to the model by column name, JSON records may carry
named values, and a positional array is in the model's order (or ``[codec].feature_names`` order).
Every mismatch names the features missing and the ones the model does not know.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from streamer.ingest.windows import window_feature_names

STEP_NAME = re.compile(r"^(?P<channel>.+)\[t-(?P<lag>0|[1-9][0-9]*)\]$")
SHOWN = 5
"""Names a mismatch message lists before saying how many more there are."""


class FeatureMismatchError(ValueError):
    """Input names features the model does not have, or lacks some it has; the message names
    them (channels rather than their W per-step names, when the model is a cut series)."""


@dataclass(frozen=True)
class FeatureLayout:
    """A model's features: ``names`` (D,) in the model's order; for a cut series also its
    ``channels`` (C,) and ``steps`` W (D = W * C), else ``channels`` empty and ``steps`` 1."""

    names: tuple[str, ...]
    channels: tuple[str, ...] = ()
    steps: int = 1
    _index: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {name: i for i, name in enumerate(self.names)})

    @classmethod
    def of(cls, names: Sequence[str]) -> FeatureLayout:
        """The layout of ``names``: a cut series when they are exactly
        ``window_feature_names(channels, W)`` for some channels and W."""
        names = tuple(str(name) for name in names)
        matches = [STEP_NAME.match(name) for name in names]
        if not names or not all(matches):
            return cls(names)
        steps = 1 + max(int(m["lag"]) for m in matches if m is not None)
        last = tuple(m["channel"] for m in matches if m is not None and m["lag"] == "0")
        if window_feature_names(last, steps) != names:
            return cls(names)
        return cls(names, last, steps)

    @property
    def width(self) -> int:
        """D, the number of features."""
        return len(self.names)

    @property
    def stride(self) -> int:
        """C: positions between one step of a channel and the next (1 for a window of
        features that are not steps)."""
        return len(self.channels) or len(self.names)

    def order_of(self, given: Sequence[str]) -> NDArray[np.intp]:
        """(D,) the position in ``given`` of each of the model's features, in the model's order;
        ``FeatureMismatchError`` unless ``given`` holds exactly the model's features."""
        position = {name: i for i, name in enumerate(given)}
        if len(position) == len(self.names) and all(n in position for n in self.names):
            return np.array([position[name] for name in self.names], dtype=np.intp)
        missing = [name for name in self.names if name not in position]
        unknown = [name for name in given if name not in self._index]
        raise FeatureMismatchError(self.mismatch(missing, unknown))

    def positions(self, given: Sequence[str]) -> NDArray[np.intp]:
        """(D,) as ``order_of``, for the names of a positional array's positions
        (``[codec].feature_names``): the model's D feature names, or, for a cut series, its C
        channel names, positions then being step-major (W steps of C channels in that order)."""
        if self.channels and not set(given) & set(self.names):
            return self.order_of(window_feature_names(given, self.steps))
        return self.order_of(given)

    def mismatch(self, missing: Sequence[str], unknown: Sequence[str]) -> str:
        """What is wrong, naming the ``missing`` and ``unknown`` features (or channels)."""
        missing, unknown = self._channels_of(missing), self._channels_of(unknown)
        parts = []
        if missing:
            parts.append(f"the model's {_listed(missing)} missing")
        if unknown:
            parts.append(f"{_listed(unknown)} not the model's")
        if len(missing) == len(unknown) == 1:
            parts.append(f"renamed? {unknown[0]!r} → {missing[0]!r}")
        if not parts:
            parts.append("a feature name is repeated")
        return "; ".join(parts)

    def from_named(
        self, values: Mapping[str, Any], what: str = "field 'features' does not match the model"
    ) -> tuple[str | None, list[Any]]:
        """(problem, values (D,) in the model's order) from a JSON object of named features:
        ``{"feature": number, ...}`` with every feature of the model, or for a cut series
        ``{"channel": [W readings, oldest first], ...}`` with every channel. ``None`` readings
        are kept (the codec's missing-value policy handles them); problem names what is wrong,
        introduced by ``what``."""
        if self.channels and not set(values) & set(self.names):
            present = [name for name in self.channels if name in values]
            if len(present) != len(self.channels) or len(values) != len(self.channels):
                return self._object_mismatch(values, self.channels, what), []
            readings = [values[name] for name in self.channels]
            for name, steps in zip(self.channels, readings, strict=True):
                if not isinstance(steps, list) or len(steps) != self.steps:
                    what = f"{len(steps)} readings" if isinstance(steps, list) else "not a list"
                    return (
                        f"field 'features' channel {name!r} is {what}; the model's windows are "
                        f"{self.steps} readings, oldest first"
                    ), []
            return None, [channel[s] for s in range(self.steps) for channel in readings]
        if len(values) != len(self.names) or not all(name in values for name in self.names):
            return self._object_mismatch(values, self.names, what), []
        return None, [values[name] for name in self.names]

    def label(self, column: int) -> str:
        """How an error names feature ``column`` of the model's order: its name."""
        return repr(self.names[column])

    def _object_mismatch(
        self, values: Mapping[str, Any], expected: Sequence[str], what: str
    ) -> str:
        missing = [name for name in expected if name not in values]
        unknown = [name for name in values if name not in set(expected)]
        return f"{what}: {self.mismatch(missing, unknown)}"

    def _channels_of(self, names: Sequence[str]) -> list[str]:
        """``names`` with each cut-series step name replaced by its channel, once each."""
        if not self.channels:
            return list(names)
        seen: dict[str, None] = {}
        for name in names:
            match = STEP_NAME.match(name)
            seen[match["channel"] if match else name] = None
        return list(seen)


def _listed(names: Sequence[str]) -> str:
    """``'a', 'b' and 3 more are`` / ``'a' is``."""
    shown = ", ".join(repr(name) for name in names[:SHOWN])
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return f"{shown}{more} {'is' if len(names) == 1 else 'are'}"


def fill_previous(windows: NDArray[np.floating], stride: int) -> int:
    """Fill each NaN of ``windows`` (n, D), in place, with the same channel's value one step
    earlier in the same window (``stride`` C positions before it), oldest step first, so a run
    of missing readings takes the last one present. A window's first step has nothing before
    it and stays NaN. Returns how many values were filled."""
    filled = 0
    for start in range(stride, windows.shape[1], stride):
        step = windows[:, start : start + stride]
        holes = np.isnan(step)
        if holes.any():
            step[holes] = windows[:, start - stride : start][holes]
            filled += int(np.count_nonzero(holes & ~np.isnan(step)))
    return filled
