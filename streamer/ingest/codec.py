"""Decoding feature windows from record values, and encoding them for replays (formats:
docs/design.md).

Two formats:

- ``json``: ``{"key": "AAPL", "ts": 1764000000123, "features": [0.12, ...]}``; ``ts`` in epoch
  milliseconds or ISO-8601; ``key`` may be left out when the record key is set (the record key
  wins when both are); optional ``"label"`` 0 or 1 for backtests. ``features`` may also name
  its values (``{"temp": [W readings], ...}`` or ``{"feature": value, ...}``:
  ``streamer.ingest.features``); a ``null`` reading is a missing value.
- ``f32``: the value is exactly D little-endian float32 values; the key is the record key and the
  time the record timestamp. A batch is decoded with one ``numpy.frombuffer``.

A positional array is in the model's feature order, or in ``[codec].feature_names`` order when
that is set. A missing value (JSON ``null``, or NaN) is a dead letter naming the feature, unless
``[codec].missing = "fill-previous"`` fills it from the same channel's previous step.

A record that is too large, undecodable, missing or mistyping a field, of the wrong window length,
or holding a NaN, an infinity or a value beyond ``max_abs_value`` becomes a ``DeadLetter`` whose
reason names the field and what was wrong; the good records of the same batch still decode.
Decoding never raises on bad input.

JSON records take a fast path first: msgspec decodes and type-checks each against a schema of
the well-formed window in C (about 3 µs a record where parsing and checking in Python took 7).
Any record it refuses, for whatever reason, goes through the careful path (orjson and one check
at a time), which accepts exactly the same records and names what is wrong with the others; the
fast path never accepts a record the careful one would refuse. Feature values are then checked
for the whole batch at once (one ``numpy.array``, vectorised range checks); only a batch holding
a non-number goes back over its records, to name the record and the value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import chain
from typing import TYPE_CHECKING, Annotated, Any, Protocol

import msgspec
import numpy as np
import orjson
from numpy.typing import NDArray

from streamer.errors import ConfigError
from streamer.ingest.features import FeatureLayout, FeatureMismatchError, fill_previous
from streamer.records import NO_LABEL, DeadLetter, SourceRecord, WindowBatch

if TYPE_CHECKING:
    from streamer.config import CodecConfig

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The types orjson gives JSON numbers. ``type(True)`` is ``bool``, not ``int``, so checking types
# against this set keeps booleans out, though ``isinstance(True, int)`` holds.
NUMBER_TYPES = frozenset((int, float))
LABELS = (0, 1, NO_LABEL)
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


class Codec(Protocol):
    """Turns a batch of source records into decoded windows and dead letters, order kept."""

    format: str

    def decode(self, records: Sequence[SourceRecord]) -> tuple[WindowBatch, list[DeadLetter]]: ...

    def encode(
        self, key: str, ts_ms: int, features: NDArray[np.floating], label: int | None = None
    ) -> bytes: ...


@dataclass(frozen=True)
class Limits:
    """What a record may be: ``window_length`` features, each within ``max_abs_value``, in a value
    of at most ``max_record_bytes``, for an entity key of at most ``max_key_chars`` characters.

    ``layout`` names the model's features (None: positional input only, errors by position);
    ``positions`` (D,) is where each model feature sits in a positional array when the feed's
    order is not the model's (``[codec].feature_names``); ``missing`` the missing-value policy."""

    window_length: int
    max_abs_value: float = 1e12
    max_record_bytes: int = 1_048_576
    max_key_chars: int = 256
    layout: FeatureLayout | None = None
    positions: tuple[int, ...] | None = None
    missing: str = "dead-letter"
    keep_missing: bool = False
    """Let NaNs through (readings under fill-previous: the windower fills them)."""
    readings: bool = False
    """Records are readings, their channels fields of their own (``JsonCodec``)."""

    @classmethod
    def of(cls, feature_names: Sequence[str], codec: CodecConfig) -> Limits:
        """The limits ``[codec]`` sets, for a model with features ``feature_names`` (D,);
        a ``ConfigError`` when ``[codec].feature_names`` are not the model's features."""
        layout = FeatureLayout.of(feature_names)
        positions = None
        if codec.feature_names:
            try:
                order = layout.positions(codec.feature_names)
            except FeatureMismatchError as error:
                raise ConfigError(f"[codec].feature_names: {error}") from None
            if not np.array_equal(order, np.arange(layout.width)):
                positions = tuple(order.tolist())
        return cls(
            layout.width,
            codec.max_abs_value,
            codec.max_record_bytes,
            codec.max_key_chars,
            layout,
            positions,
            codec.missing,
        )

    def feature(self, column: int, position: int | None) -> str:
        """How a dead letter names the model's feature ``column``, found at ``position`` of the
        record's array (None: the record named it; a reading's channels are fields)."""
        name = self.layout.label(column) if self.layout is not None else None
        if self.readings and position is None:
            return f"field {name}"
        if position is None or name is None:
            where = f"feature {name}" if position is None else f"value {position}"
        else:
            where = f"value {position} ({name})"
        return f"field 'features' {where}"

    def to_model_order(
        self, windows: NDArray[np.floating], named: NDArray[np.bool_] | None = None
    ) -> NDArray[np.floating]:
        """(n, D) windows in the model's order: positional rows (not ``named``) rearranged by
        ``positions``; NaNs filled when the policy says so. May return ``windows`` itself."""
        if self.positions is not None:
            order = np.asarray(self.positions, dtype=np.intp)
            if named is None or not named.any():
                windows = windows[:, order]
            else:
                windows = windows.copy()
                windows[~named] = windows[~named][:, order]
        if self.missing == "fill-previous" and np.isnan(windows).any():
            if not windows.flags.writeable:
                windows = windows.copy()
            stride = self.layout.stride if self.layout is not None else self.window_length
            fill_previous(windows, stride)
        return windows


class _Candidates:
    """Records that passed their per-record checks, gathered for the batch-wide value checks."""

    def __init__(self) -> None:
        self.records: list[SourceRecord] = []
        self.keys: list[str] = []
        self.ts_ms: list[int] = []
        self.labels: list[int] = []

    def add(self, record: SourceRecord, key: str, ts_ms: int, label: int) -> None:
        self.records.append(record)
        self.keys.append(key)
        self.ts_ms.append(ts_ms)
        self.labels.append(label)

    def select(self, rows: Sequence[int]) -> _Candidates:
        """The candidates at ``rows`` (ascending), in a new collection."""
        kept = _Candidates()
        kept.records = [self.records[row] for row in rows]
        kept.keys = [self.keys[row] for row in rows]
        kept.ts_ms = [self.ts_ms[row] for row in rows]
        kept.labels = [self.labels[row] for row in rows]
        return kept

    def finish(
        self,
        windows: NDArray[np.floating],
        limits: Limits,
        dead: list[DeadLetter],
        named: NDArray[np.bool_] | None = None,
    ) -> WindowBatch:
        """Check every value of the (n, D) windows, in the model's order, at once (before
        narrowing to float32); rows that fail become dead letters naming the feature. ``named``
        (n,) marks rows whose record named its features rather than listing them."""
        if not self.records:
            return WindowBatch.empty(limits.window_length)
        within = np.abs(windows) <= limits.max_abs_value  # False for NaN and ±inf as well
        if limits.keep_missing:
            within |= np.isnan(windows)
        good = within.all(axis=1)
        for row in np.flatnonzero(~good).tolist():
            column = int(np.flatnonzero(~within[row])[0])
            value = float(windows[row, column])
            if math.isnan(value):
                problem = "is missing (null or NaN)"
                if limits.missing == "fill-previous":
                    problem += ", with no earlier step of its channel to fill it from"
            elif not math.isfinite(value):
                problem = f"is {value}"
            else:
                problem = f"is {value:g}, beyond ±{limits.max_abs_value:g}"
            position = None if named is not None and named[row] else column
            if position is not None and limits.positions is not None:
                position = limits.positions[column]
            feature = limits.feature(column, position)
            dead.append(DeadLetter(self.records[row], f"{feature} {problem}"))
        rows = np.flatnonzero(good)
        return WindowBatch(
            records=[self.records[i] for i in rows.tolist()],
            keys=np.array(self.keys, dtype=str)[rows],
            ts_ms=np.array(self.ts_ms, dtype=np.int64)[rows],
            windows=np.ascontiguousarray(windows[rows], dtype=np.float32),
            labels=np.array(self.labels, dtype=np.int8)[rows],
        )


def _too_large(record: SourceRecord, limits: Limits) -> str | None:
    if record.value is None:
        return "the record has no value (a tombstone)"
    if len(record.value) > limits.max_record_bytes:
        return f"value is {len(record.value)} bytes, over the {limits.max_record_bytes}-byte limit"
    return None


def _key_problem(key: str, limits: Limits) -> str | None:
    """Why an entity key cannot be used, or None. A NUL would make two entities one (numpy's
    string arrays drop trailing NULs: ``sensor-1\\x00`` fed ``sensor-1``'s threshold); a huge
    key costs its length in memory for every window of its batch (keys become one fixed-width
    array: one 40,000-character key took a batch of 3,813 from 1.2 to 3.6 GB)."""
    if len(key) > limits.max_key_chars:
        return (
            f"key {key[:32]!r}... is {len(key)} characters, over the "
            f"{limits.max_key_chars}-character limit"
        )
    if "\x00" in key:
        return f"key {key!r} contains a NUL character"
    return None


def _record_key(record: SourceRecord) -> tuple[str | None, str | None]:
    """(key, problem): the UTF-8 record key, or why it cannot be used."""
    if record.key is None:
        return None, None
    try:
        return record.key.decode("utf-8"), None
    except UnicodeDecodeError:
        return None, "the record key is not UTF-8"


def _reading_schema(layout: FeatureLayout) -> msgspec.json.Decoder[Any]:
    """A decoder that accepts only a well-formed JSON reading: ``key``, ``ts`` and ``label`` as
    in a window, and one number per channel (``layout.names``) as fields of its own. Its
    ``features`` are the channels' values, in the model's order."""
    slots = [f"f{i}" for i in range(layout.width)]
    fields: list[tuple[Any, ...]] = [
        ("key", str | msgspec.UnsetType, msgspec.UNSET),
        (
            "ts",
            Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)] | msgspec.UnsetType,
            msgspec.UNSET,
        ),
        ("label", Annotated[int, msgspec.Meta(ge=NO_LABEL, le=1)], NO_LABEL),
        *((slot, float) for slot in slots),
    ]
    reading = msgspec.defstruct(
        "JsonReading",
        fields,
        rename=dict(zip(slots, layout.names, strict=True)),
        forbid_unknown_fields=True,
        kw_only=True,
        namespace={"features": property(lambda self: msgspec.structs.astuple(self)[3:])},
    )
    return msgspec.json.Decoder(reading)


def _window_schema(window_length: int, layout: FeatureLayout | None) -> msgspec.json.Decoder[Any]:
    """A decoder that accepts only a well-formed JSON window of ``window_length`` features:
    an object whose ``features`` are that many numbers (booleans refused, integers read as
    floats), or for a cut series an object of every channel's W numbers, ``key`` a string,
    ``ts`` an int64, ``label`` 0, 1 or -1, and no other field."""
    positional = Annotated[
        list[float], msgspec.Meta(min_length=window_length, max_length=window_length)
    ]
    features: Any = positional
    if layout is not None:
        # By channel (W readings each) for a cut series, else by feature (one number each).
        # Names need not be identifiers: the struct's fields are renamed to them.
        names = layout.channels or layout.names
        value: Any = list[float] if layout.channels else float
        if layout.channels:
            value = Annotated[value, msgspec.Meta(min_length=layout.steps, max_length=layout.steps)]
        slots = [f"f{i}" for i in range(len(names))]
        named = msgspec.defstruct(
            "JsonNamedFeatures",
            [(slot, value) for slot in slots],
            rename=dict(zip(slots, names, strict=True)),
            forbid_unknown_fields=True,
        )
        features = positional | named
    fields: list[tuple[Any, ...]] = [
        ("features", features),
        ("key", str | msgspec.UnsetType, msgspec.UNSET),
        (
            "ts",
            Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)] | msgspec.UnsetType,
            msgspec.UNSET,
        ),
        ("label", Annotated[int, msgspec.Meta(ge=NO_LABEL, le=1)], NO_LABEL),
    ]
    # Unknown fields go to the careful path: msgspec skips them without reading their numbers,
    # where orjson refuses, say, 1e400 in any field.
    window = msgspec.defstruct("JsonWindow", fields, forbid_unknown_fields=True)
    return msgspec.json.Decoder(window)


class JsonCodec:
    """JSON windows: a msgspec fast path for well-formed records, orjson and careful
    checks for the rest (see the module docstring)."""

    format = "json"

    def __init__(self, limits: Limits, readings: bool = False) -> None:
        """``readings``: records are single readings whose channels are fields of their own
        (``{"key": "pump-7", "ts": ..., "temp": 71.2, "flow": 3.1}``; ``streamer.ingest.readings``),
        decoded as windows of one step; ``limits.layout`` names the channels."""
        self.limits, self.readings = limits, readings
        if readings and limits.layout is None:
            raise ValueError("readings need the channels' names (limits.layout)")
        self._fast = (
            _reading_schema(limits.layout)
            if readings and limits.layout is not None
            else _window_schema(limits.window_length, limits.layout)
        )

    def decode(self, records: Sequence[SourceRecord]) -> tuple[WindowBatch, list[DeadLetter]]:
        dead: list[DeadLetter] = []
        candidates = _Candidates()
        features: list[list[Any]] = []
        careful_rows = False  # whether any candidate's features are not known to be floats
        named_rows: list[int] = []  # candidates whose record named its features
        fast, largest = self._fast.decode, self.limits.max_record_bytes
        largest_key = self.limits.max_key_chars
        add_record, add_key = candidates.records.append, candidates.keys.append
        add_ts, add_label, add_features = (
            candidates.ts_ms.append,
            candidates.labels.append,
            features.append,
        )
        for record in records:
            value = record.value
            if value is not None and len(value) <= largest:
                try:
                    window = fast(value)
                    if record.key is not None:
                        key = record.key.decode("utf-8")
                    elif window.key is msgspec.UNSET:
                        raise ValueError("no key")
                    else:
                        key = window.key
                    if len(key) > largest_key or "\x00" in key:  # _key_problem, inlined
                        raise ValueError("key")  # the careful path below says what is wrong
                except (msgspec.DecodeError, ValueError):
                    pass  # the careful path below says what is wrong
                else:
                    add_record(record)
                    add_key(key)
                    add_ts(record.timestamp_ms if window.ts is msgspec.UNSET else window.ts)
                    add_label(window.label)
                    if type(window.features) is list:
                        add_features(window.features)
                    else:
                        named_rows.append(len(features))
                        add_features(self._in_model_order(window.features))
                    continue
            problem, parsed = self._parse(record)
            if problem is not None:
                dead.append(DeadLetter(record, problem))
                continue
            key, ts_ms, label, values, named = parsed
            if named:
                named_rows.append(len(features))
            candidates.add(record, key, ts_ms, label)
            features.append(values)
            careful_rows = True
        if careful_rows and not NUMBER_TYPES.issuperset(map(type, chain.from_iterable(features))):
            candidates, features, named_rows = _numbers_only(
                candidates, features, dead, named_rows, self.limits
            )
        width = self.limits.window_length
        # Every list has ``width`` ints or floats now, so this is one exact float64 conversion.
        windows: NDArray[np.floating] = np.array(features, dtype=np.float64).reshape(
            len(features), width
        )
        named = None
        if named_rows:
            named = np.zeros(len(features), dtype=bool)
            named[named_rows] = True
        windows = self.limits.to_model_order(windows, named)
        batch = candidates.finish(windows, self.limits, dead, named)
        return batch, _in_input_order(dead, records)

    def _in_model_order(self, named: Any) -> list[float]:
        """The (D,) values of a fast-path named ``features`` struct, in the model's order:
        channels' readings interleaved step by step, or the features as they are."""
        if type(named) is tuple:  # a reading's channels
            return list(named)
        values = msgspec.structs.astuple(named)
        if self.limits.layout is not None and self.limits.layout.channels:
            return list(chain.from_iterable(zip(*values, strict=True)))
        return list(values)

    def encode(
        self, key: str, ts_ms: int, features: NDArray[np.floating], label: int | None = None
    ) -> bytes:
        body: dict[str, Any] = {"key": key, "ts": int(ts_ms)}
        if self.readings and self.limits.layout is not None:
            values = np.asarray(features, np.float64).tolist()
            body.update(zip(self.limits.layout.names, values, strict=True))
        else:
            body["features"] = np.asarray(features, np.float64)
        if label is not None:
            body["label"] = int(label)
        return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)

    def _parse(self, record: SourceRecord) -> tuple[str | None, Any]:
        """(problem, (key, ts_ms, label, features, named)) for one record; problem None when
        usable. ``features`` (D,) are in the model's order when ``named``, else as listed; a
        ``null`` among them is NaN (a missing value)."""
        problem = _too_large(record, self.limits)
        if problem:
            return problem, None
        try:
            body = orjson.loads(record.value or b"")
        except orjson.JSONDecodeError as error:
            return f"value is not valid JSON: {error}", None
        if not isinstance(body, dict):
            return f"value is a JSON {type(body).__name__}, not an object", None
        record_key, key_problem = _record_key(record)
        if key_problem:
            return key_problem, None
        key = record_key if record_key is not None else body.get("key")
        if key is None:
            return "no key: neither the record key nor field 'key' is set", None
        if not isinstance(key, str):
            return f"field 'key' is a {type(key).__name__}, not a string", None
        key_problem = _key_problem(key, self.limits)
        if key_problem:
            return key_problem, None
        ts_ms = body.get("ts", record.timestamp_ms)
        if "ts" in body and (type(ts_ms) is not int or not INT64_MIN <= ts_ms <= INT64_MAX):
            ts_problem, ts_ms = _timestamp(ts_ms)
            if ts_problem:
                return ts_problem, None
        label = body.get("label", NO_LABEL)
        if label not in LABELS or isinstance(label, bool):
            return f"field 'label' is {label!r}, not 0 or 1", None
        if self.readings:
            values: Any = {k: v for k, v in body.items() if k not in ("key", "ts", "label")}
        else:
            values = body.get("features")
        named = isinstance(values, dict)
        if isinstance(values, dict) and self.limits.layout is not None:
            what = (
                "the reading's fields do not match the model's channels"
                if self.readings
                else "field 'features' does not match the model"
            )
            problem, values = self.limits.layout.from_named(values, what)
            if problem:
                return problem, None
        elif not isinstance(values, list):
            what = "missing" if values is None else f"a {type(values).__name__}, not a list"
            return f"field 'features' is {what}", None
        elif len(values) != self.limits.window_length:
            return (
                f"field 'features' has {len(values)} values; the model expects "
                f"{self.limits.window_length}"
            ), None
        if None in values:
            values = [math.nan if value is None else value for value in values]
        return None, (key, ts_ms, label, values, named)


def _numbers_only(
    candidates: _Candidates,
    features: list[list[Any]],
    dead: list[DeadLetter],
    named_rows: list[int],
    limits: Limits,
) -> tuple[_Candidates, list[list[Any]], list[int]]:
    """The candidates whose features are all numbers, their features, and which of them were
    named; the others become dead letters naming their first non-number. For a batch that failed
    the batch-wide type check: record by record, and value by value only within the records that
    hold a non-number."""
    kept: list[int] = []
    named = set(named_rows)
    for row, values in enumerate(features):
        if NUMBER_TYPES.issuperset(map(type, values)):
            kept.append(row)
        else:
            reason = _non_number(values, limits, row in named)
            dead.append(DeadLetter(candidates.records[row], reason))
    still_named = [i for i, row in enumerate(kept) if row in named]
    return candidates.select(kept), [features[row] for row in kept], still_named


def _non_number(values: list[Any], limits: Limits, named: bool) -> str:
    """The first value of ``values`` whose type is not in ``NUMBER_TYPES``, as a reason naming
    the feature when the model's names are known; only for lists that hold one (the caller's
    check uses the same test). ``named``: ``values`` are in the model's order, from names."""
    index, value = next((i, v) for i, v in enumerate(values) if type(v) not in NUMBER_TYPES)
    if named:
        feature = limits.feature(index, None)
    else:
        column = index if limits.positions is None else limits.positions.index(index)
        feature = limits.feature(column, index)
    return f"{feature} is {value!r}, not a number"


def _timestamp(value: Any) -> tuple[str | None, int]:
    """(problem, epoch ms) from a ``ts`` field that is not an int64 (those are used as they are):
    ISO-8601, or a mistake. orjson reads integers up to 2**64 - 1, which int64 cannot hold."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"field 'ts' is {value}, beyond int64 epoch milliseconds", 0
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return f"field 'ts' is {value!r}, neither epoch milliseconds nor ISO-8601", 0
        if parsed.tzinfo is None:
            return f"field 'ts' is {value!r}, an ISO-8601 time without a UTC offset", 0
        return None, (parsed - EPOCH) // timedelta(milliseconds=1)
    return f"field 'ts' is {value!r}, neither epoch milliseconds nor ISO-8601", 0


class F32Codec:
    """Raw little-endian float32 windows, decoded with one ``numpy.frombuffer`` per batch."""

    format = "f32"

    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    def decode(self, records: Sequence[SourceRecord]) -> tuple[WindowBatch, list[DeadLetter]]:
        dead: list[DeadLetter] = []
        candidates = _Candidates()
        values: list[bytes] = []
        expected = 4 * self.limits.window_length
        for record in records:
            problem = _too_large(record, self.limits)
            key, key_problem = _record_key(record)
            problem = problem or key_problem
            if problem is None and key is None:
                problem = "no key: f32 records carry the entity in the record key"
            if problem is None and key is not None:
                problem = _key_problem(key, self.limits)
            if problem is None and len(record.value or b"") != expected:
                size = len(record.value or b"")
                problem = (
                    f"value is {size} bytes ({size / 4:g} float32 values); the model expects "
                    f"{self.limits.window_length} values ({expected} bytes)"
                )
            if problem is not None:
                dead.append(DeadLetter(record, problem))
                continue
            assert key is not None and record.value is not None
            candidates.add(record, key, record.timestamp_ms, NO_LABEL)
            values.append(record.value)
        windows = np.frombuffer(b"".join(values), dtype="<f4").reshape(
            -1, self.limits.window_length
        )
        windows = self.limits.to_model_order(windows)
        batch = candidates.finish(windows, self.limits, dead)
        return batch, _in_input_order(dead, records)

    def encode(
        self, key: str, ts_ms: int, features: NDArray[np.floating], label: int | None = None
    ) -> bytes:
        return np.asarray(features, dtype="<f4").tobytes()


def _in_input_order(dead: list[DeadLetter], records: Sequence[SourceRecord]) -> list[DeadLetter]:
    if len(dead) < 2:
        return dead
    index = {id(record): i for i, record in enumerate(records)}
    return sorted(dead, key=lambda letter: index[id(letter.record)])


def make_codec(format: str, limits: Limits, readings: bool = False) -> Codec:
    """The codec for ``[codec].format``; with ``readings``, JSON records are single readings
    (``JsonCodec``), f32 records C values."""
    if format == "json":
        return JsonCodec(limits, readings)
    return F32Codec(limits)
