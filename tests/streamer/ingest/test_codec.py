"""The input codecs: round trips, the exact dead-letter reasons, and no exception on any bytes."""

from __future__ import annotations

import json

import msgspec
import numpy as np
import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from streamer.ingest.codec import F32Codec, JsonCodec, Limits, make_codec
from streamer.records import NO_LABEL, SourceRecord

D = 4
LIMITS = Limits(window_length=D, max_abs_value=1e6, max_record_bytes=512)


def record(value: bytes | None, key: bytes | None = b"sensor-1", offset: int = 0) -> SourceRecord:
    return SourceRecord("windows", 2, offset, key, value, timestamp_ms=1_764_000_000_000 + offset)


def json_value(**fields: object) -> bytes:
    body: dict[str, object] = {
        "key": "sensor-1",
        "ts": 1_764_000_000_123,
        "features": [0.5, -1.0, 2.0, 3.5],
    }
    body.update(fields)
    return orjson.dumps({k: v for k, v in body.items() if v is not ...})


@pytest.mark.parametrize("codec", [JsonCodec(LIMITS), F32Codec(LIMITS)])
def test_round_trip(codec: JsonCodec | F32Codec) -> None:
    features = np.array([[0.25, -1.5, 3.0, 1e5], [1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    records = [
        record(codec.encode("sensor-9", 1_764_000_000_000 + i, row), key=b"sensor-9", offset=i)
        for i, row in enumerate(features)
    ]
    batch, dead = codec.decode(records)
    assert dead == []
    np.testing.assert_array_equal(batch.windows, features)
    assert batch.keys.tolist() == ["sensor-9", "sensor-9"]
    assert batch.ts_ms.tolist() == [1_764_000_000_000, 1_764_000_000_001]
    assert batch.labels.tolist() == [NO_LABEL, NO_LABEL]
    assert [r.offset for r in batch.records] == [0, 1]


def test_json_fields_keys_times_and_labels() -> None:
    codec = JsonCodec(LIMITS)
    batch, dead = codec.decode(
        [
            record(json_value(ts="2026-01-01T00:00:00.250Z", label=1), key=None),
            record(json_value(key=..., ts=...), offset=1),
            record(json_value(key="from-body"), key=b"from-record", offset=2),
        ]
    )
    assert dead == []
    assert batch.keys.tolist() == ["sensor-1", "sensor-1", "from-record"]
    assert batch.ts_ms.tolist() == [1_767_225_600_250, 1_764_000_000_001, 1_764_000_000_123]
    assert batch.labels.tolist() == [1, NO_LABEL, NO_LABEL]


@pytest.mark.parametrize(
    ("value", "key", "reason"),
    [
        (b"{not json", b"k", "value is not valid JSON"),
        (b"[1, 2]", b"k", "value is a JSON list, not an object"),
        (json_value(key=...), None, "no key: neither the record key nor field 'key' is set"),
        (json_value(key=7), None, "field 'key' is a int, not a string"),
        (json_value(), b"\xff\xfe", "the record key is not UTF-8"),
        (
            json_value(ts="yesterday"),
            b"k",
            "field 'ts' is 'yesterday', neither epoch milliseconds nor ISO-8601",
        ),
        (json_value(ts="2026-01-01T00:00:00"), b"k", "an ISO-8601 time without a UTC offset"),
        (
            json_value(ts=2**64 - 1),
            b"k",
            "field 'ts' is 18446744073709551615, beyond int64 epoch milliseconds",
        ),
        (json_value(ts=True), b"k", "field 'ts' is True, neither epoch milliseconds nor ISO-8601"),
        (json_value(label=2), b"k", "field 'label' is 2, not 0 or 1"),
        (json_value(features=...), b"k", "field 'features' is missing"),
        (json_value(features="1,2,3,4"), b"k", "field 'features' is a str, not a list"),
        (
            json_value(features=[1, 2, 3]),
            b"k",
            "field 'features' has 3 values; the model expects 4",
        ),
        (
            json_value(features=[1, "x", 3, 4]),
            b"k",
            "field 'features' value 1 is 'x', not a number",
        ),
        (
            json_value(features=[1, 2, True, 4]),
            b"k",
            "field 'features' value 2 is True, not a number",
        ),
        (
            json_value(features=[1, None, 3, 4]),
            b"k",
            "field 'features' value 1 is missing (null or NaN)",
        ),
        (
            json_value(features=[1, 2, [3], 4]),
            b"k",
            "field 'features' value 2 is [3], not a number",
        ),
        (
            json_value(features=[1, 2, 3, 2e6]),
            b"k",
            "field 'features' value 3 is 2e+06, beyond ±1e+06",
        ),
        (
            json_value(features=[1, 2, 3, 1e300]),
            b"k",
            "field 'features' value 3 is 1e+300, beyond ±1e+06",
        ),
        (b'{"key": "k", "features": [1, 2, NaN, 4]}', b"k", "value is not valid JSON"),
        (b" " * 600, b"k", "value is 600 bytes, over the 512-byte limit"),
        (None, b"k", "the record has no value (a tombstone)"),
    ],
)
def test_json_bad_records_are_dead_letters_with_specific_reasons(
    value: bytes | None, key: bytes | None, reason: str
) -> None:
    good = record(json_value(), offset=1)
    batch, dead = JsonCodec(LIMITS).decode([record(value, key=key), good])
    assert len(dead) == 1 and dead[0].stage == "decode"
    assert reason in dead[0].reason
    assert dict(dead[0].headers())["tandem.source"] == b"windows/2/0"
    assert [r.offset for r in batch.records] == [1], (
        "the good record of the same batch still decodes"
    )


def test_json_non_numbers_among_good_records_each_named_in_input_order() -> None:
    """The batch-wide type check fails; each record is then judged on its own values."""
    features = [
        [1, 2, 3, 4],
        [1.5, False, "x", 4],
        [0, 0, 0, 0],
        [1, 2, 3, {"v": 4}],
        [1e7, "late", 3, 4],
        [-1, -2.5, 3, 4],
    ]
    records = [record(json_value(features=f), offset=i) for i, f in enumerate(features)]
    batch, dead = JsonCodec(LIMITS).decode(records)
    assert [(d.record.offset, d.reason) for d in dead] == [
        (1, "field 'features' value 1 is False, not a number"),
        (3, "field 'features' value 3 is {'v': 4}, not a number"),
        (4, "field 'features' value 1 is 'late', not a number"),
    ]
    assert [r.offset for r in batch.records] == [0, 2, 5]
    assert batch.windows.tolist() == [[1, 2, 3, 4], [0, 0, 0, 0], [-1, -2.5, 3, 4]]


NUMBERS = st.one_of(st.floats(-1e3, 1e3), st.integers(-1000, 1000))
ODD_VALUES = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
    st.lists(st.integers(-9, 9), max_size=1),
)
FEATURE_LISTS = st.one_of(
    st.lists(NUMBERS, min_size=D, max_size=D),
    st.lists(st.one_of(NUMBERS, ODD_VALUES), min_size=D - 1, max_size=D + 1),
)


def expected_outcome(values: list[object]) -> str | None:
    """The reason value by value, as the codec documents it, or None when the window is good."""
    if len(values) != D:
        return f"field 'features' has {len(values)} values; the model expects {D}"
    for index, value in enumerate(values):
        if value is None:
            continue  # a missing value, judged with the ranges below
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"field 'features' value {index} is {value!r}, not a number"
    for index, value in enumerate(values):
        if value is None:
            return f"field 'features' value {index} is missing (null or NaN)"
        if abs(float(value)) > LIMITS.max_abs_value:
            return f"field 'features' value {index} is {float(value):g}, beyond ±1e+06"
    return None


@settings(max_examples=60, deadline=None)
@given(st.lists(FEATURE_LISTS, max_size=25))
def test_json_batch_checks_match_the_value_by_value_rules(windows: list[list[object]]) -> None:
    records = [record(json_value(features=f), offset=i) for i, f in enumerate(windows)]
    batch, dead = JsonCodec(LIMITS).decode(records)
    expected = [expected_outcome(values) for values in windows]
    assert [(d.record.offset, d.reason) for d in dead] == [
        (i, reason) for i, reason in enumerate(expected) if reason is not None
    ]
    good = [i for i, reason in enumerate(expected) if reason is None]
    assert [r.offset for r in batch.records] == good
    np.testing.assert_array_equal(
        batch.windows, np.array([windows[i] for i in good], np.float64).reshape(-1, D).astype("f4")
    )


@pytest.mark.parametrize(
    ("value", "key", "reason"),
    [
        (
            np.zeros(3, "<f4").tobytes(),
            b"k",
            "value is 12 bytes (3 float32 values); the model expects 4 values (16 bytes)",
        ),
        (
            np.array([1, np.nan, 3, 4], "<f4").tobytes(),
            b"k",
            "field 'features' value 1 is missing (null or NaN)",
        ),
        (np.array([1, 2, np.inf, 4], "<f4").tobytes(), b"k", "field 'features' value 2 is inf"),
        (
            np.array([1, 2, 3, -5e6], "<f4").tobytes(),
            b"k",
            "field 'features' value 3 is -5e+06, beyond ±1e+06",
        ),
        (
            np.zeros(4, "<f4").tobytes(),
            None,
            "no key: f32 records carry the entity in the record key",
        ),
    ],
)
def test_f32_bad_records_are_dead_letters_with_specific_reasons(
    value: bytes, key: bytes | None, reason: str
) -> None:
    good = record(np.ones(4, "<f4").tobytes(), offset=1)
    batch, dead = F32Codec(LIMITS).decode([record(value, key=key), good])
    assert [letter.reason for letter in dead] == [reason]
    assert len(batch) == 1 and batch.windows.tolist() == [[1.0, 1.0, 1.0, 1.0]]


@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.binary(max_size=40)),
            st.one_of(st.none(), st.binary(max_size=700)),
        ),
        max_size=30,
    ),
    st.sampled_from(["json", "f32"]),
)
def test_any_bytes_decode_or_dead_letter_never_raise(
    pairs: list[tuple[bytes | None, bytes | None]], fmt: str
) -> None:
    records = [record(value, key=key, offset=i) for i, (key, value) in enumerate(pairs)]
    batch, dead = make_codec(fmt, LIMITS).decode(records)
    offsets = sorted([r.offset for r in batch.records] + [d.record.offset for d in dead])
    assert offsets == list(range(len(records))), (
        "every record is either decoded or dead-lettered, once"
    )
    assert batch.windows.shape == (len(batch), D) and np.isfinite(batch.windows).all()
    assert all(letter.reason for letter in dead)


class _RefuseEverything:
    """Stands in for the msgspec decoder: every record takes the careful path."""

    def decode(self, value: bytes) -> object:
        raise msgspec.DecodeError("refused")


def careful_only() -> JsonCodec:
    codec = JsonCodec(LIMITS)
    codec._fast = _RefuseEverything()  # type: ignore[assignment]
    return codec


ODD_NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([True, False, None, "1", 1.0, 0.0, -1.0, 10**400]),
)
ODD_FIELDS = {
    "key": st.one_of(st.text(max_size=5), ODD_NUMBERS),
    "ts": st.one_of(
        ODD_NUMBERS,
        st.sampled_from(
            ["2026-11-24T10:00:00+00:00", "2026-11-24T10:00:00", "yesterday", 2**63, 2**63 - 1]
        ),
    ),
    "label": st.one_of(ODD_NUMBERS, st.sampled_from([0, 1, -1, 2])),
    "features": st.one_of(
        st.lists(ODD_NUMBERS, min_size=D - 1, max_size=D + 1),
        st.lists(st.floats(-10, 10), min_size=D, max_size=D),
        ODD_NUMBERS,
    ),
    "extra": st.one_of(ODD_NUMBERS, st.lists(st.integers(), max_size=2)),
}


def valid_body(**changes: object) -> dict[str, object]:
    """A well-formed window body, with ``changes`` applied."""
    return {"key": "sensor-1", "ts": 1_764_000_000_123, "features": [1.0] * D, **changes}


@st.composite
def json_bodies(draw: st.DrawFn) -> dict[str, object]:
    """A well-formed window with zero to two fields changed or left out: most records are one
    step from valid, where a lenient fast path would show."""
    body = valid_body()
    for name in draw(st.lists(st.sampled_from(sorted(ODD_FIELDS)), max_size=2, unique=True)):
        if draw(st.booleans()):
            body[name] = draw(ODD_FIELDS[name])
        else:
            body.pop(name, None)
    return body


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(
            json_bodies(),
            st.sampled_from([None, b"sensor-1", b"sensor-1", b"\xff\xfe", b""]),
            st.sampled_from(["", "", "", " ", "[]", "x"]),
        ),
        min_size=1,
        max_size=8,
    )
)
@example([(valid_body(ts=2**63), b"sensor-1", "")])  # beyond int64
@example([(valid_body(ts=-(2**63) - 1), None, "")])
@example([(valid_body(label=2), b"sensor-1", "")])
@example([(valid_body(label=True), b"sensor-1", "")])
@example([(valid_body(extra=10**400), b"sensor-1", "")])  # orjson refuses the number
@example([(valid_body(features=[1, 2, 3, 10**400]), b"sensor-1", "")])
@example([(valid_body(key=None), None, "")])
def test_json_fast_path_agrees_with_the_careful_path(
    bodies: list[tuple[dict[str, object], bytes | None, str]],
) -> None:
    """msgspec's fast path accepts exactly what the careful path accepts, with the same values,
    and leaves every refusal (and its reason) to the careful path."""
    records = [
        record(json.dumps(body).encode() + suffix.encode(), key=key, offset=i)
        for i, (body, key, suffix) in enumerate(bodies)
    ]
    fast_batch, fast_dead = JsonCodec(LIMITS).decode(records)
    careful_batch, careful_dead = careful_only().decode(records)
    assert [(d.record.offset, d.reason) for d in fast_dead] == [
        (d.record.offset, d.reason) for d in careful_dead
    ]
    assert [r.offset for r in fast_batch.records] == [r.offset for r in careful_batch.records]
    assert fast_batch.keys.tolist() == careful_batch.keys.tolist()
    assert fast_batch.ts_ms.tolist() == careful_batch.ts_ms.tolist()
    assert fast_batch.labels.tolist() == careful_batch.labels.tolist()
    np.testing.assert_array_equal(fast_batch.windows, careful_batch.windows)


def test_well_formed_records_take_the_fast_path() -> None:
    """The fast path is what decodes ordinary records (a regression to the careful path for all
    of them would pass the agreement test and lose the speed)."""
    codec = JsonCodec(LIMITS)
    codec._parse = None  # type: ignore[assignment,method-assign]  # calling it would fail
    batch, dead = codec.decode([record(json_value(), offset=i) for i in range(3)])
    assert dead == [] and len(batch) == 3


@pytest.mark.parametrize("codec", [JsonCodec(LIMITS), F32Codec(LIMITS)])
@pytest.mark.parametrize(
    ("key", "reason"),
    [
        (b"sensor-1\x00", "key 'sensor-1\\x00' contains a NUL character"),
        (
            b"k" * 300,
            "key 'kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk'... is 300 characters, over the "
            "256-character limit",
        ),
    ],
    ids=["nul", "long"],
)
def test_keys_that_would_merge_entities_or_blow_up_memory_are_dead_letters(
    codec: JsonCodec | F32Codec, key: bytes, reason: str
) -> None:
    """``sensor-1\\x00`` would be entity ``sensor-1`` once the batch's keys are a numpy string
    array (it drops trailing NULs); a key of 10s of KB costs its length for every window of its
    batch. Both are bad records, on either path of the JSON codec."""
    value = json_value() if isinstance(codec, JsonCodec) else np.ones(4, "<f4").tobytes()
    good = record(value, offset=1)
    batch, dead = codec.decode([record(value, key=key), good])
    assert [letter.reason for letter in dead] == [reason]
    assert batch.keys.tolist() == ["sensor-1"]
    in_body = JsonCodec(LIMITS).decode([record(json_value(key=key.decode()), key=None)])
    assert [letter.reason for letter in in_body[1]] == [reason]


SERIES_NAMES = ("temp[t-1]", "flow[t-1]", "temp[t-0]", "flow[t-0]")


def series_limits(**codec: object) -> Limits:
    """Limits for a model cut from a series of channels temp and flow, two steps a window."""
    from streamer.config import CodecConfig

    return Limits.of(SERIES_NAMES, CodecConfig.model_validate({"max_record_bytes": 512, **codec}))


def test_named_features_decode_to_the_model_order_as_positional_ones_do() -> None:
    """Channels with their readings, features by name and a positional array: one window."""
    codec = JsonCodec(series_limits())
    batch, dead = codec.decode(
        [
            record(json_value(features=[1, 10, 2, 20]), offset=0),
            record(json_value(features={"flow": [10, 20], "temp": [1, 2]}), offset=1),
            record(json_value(features=dict(zip(SERIES_NAMES, [1, 10, 2, 20], strict=True)))),
        ]
    )
    assert dead == []
    assert batch.windows.tolist() == [[1, 10, 2, 20]] * 3


def test_a_declared_positional_order_is_matched_by_name_in_both_codecs() -> None:
    """``[codec].feature_names`` lists the feed's channel order; named records are unaffected."""
    limits = series_limits(feature_names=["flow", "temp"])
    batch, dead = JsonCodec(limits).decode(
        [
            record(json_value(features=[10, 1, 20, 2]), offset=0),
            record(json_value(features={"temp": [1, 2], "flow": [10, 20]}), offset=1),
            record(json_value(features=[10, 1, None, 2]), offset=2),
        ]
    )
    assert batch.windows.tolist() == [[1, 10, 2, 20]] * 2
    assert [d.reason for d in dead] == [
        "field 'features' value 2 ('flow[t-0]') is missing (null or NaN)"
    ]
    f32 = np.array([10, 1, 20, 2], "<f4").tobytes()
    batch, dead = F32Codec(limits).decode([record(f32)])
    assert dead == [] and batch.windows.tolist() == [[1, 10, 2, 20]]


def test_a_feature_list_that_is_not_the_models_is_refused_at_start() -> None:
    from streamer.errors import ConfigError

    with pytest.raises(ConfigError, match="'pressure' is not the model's"):
        series_limits(feature_names=["flow", "pressure"])


@pytest.mark.parametrize(
    ("features", "reason"),
    [
        ({"temp": [1, 2]}, "field 'features' does not match the model: the model's 'flow' is"),
        ({"temp": [1, 2], "flw": [3, 4]}, "renamed? 'flw' → 'flow'"),
        ({"temp": [1, 2], "flow": [3]}, "channel 'flow' is 1 readings; the model's windows are 2"),
        ({"temp": [1, 2], "flow": [3, "x"]}, "feature 'flow[t-0]' is 'x', not a number"),
        ({"temp": [1, 2], "flow": [3, None]}, "feature 'flow[t-0]' is missing (null or NaN)"),
        ([1, 2, 3, 2e12], "value 3 ('flow[t-0]') is 2e+12, beyond ±1e+12"),
    ],
)
def test_named_features_that_do_not_fit_are_dead_letters_naming_them(
    features: object, reason: str
) -> None:
    batch, dead = JsonCodec(series_limits()).decode([record(json_value(features=features))])
    assert len(batch) == 0 and len(dead) == 1
    assert reason in dead[0].reason


def test_fill_previous_fills_a_missing_reading_from_its_channel_and_no_further() -> None:
    codec = JsonCodec(series_limits(missing="fill-previous"))
    batch, dead = codec.decode(
        [
            record(json_value(features={"temp": [1, None], "flow": [10, 20]}), offset=0),
            record(json_value(features=[1, 10, 2, None]), offset=1),
            record(json_value(features={"temp": [None, 2], "flow": [10, 20]}), offset=2),
        ]
    )
    assert batch.windows.tolist() == [[1, 10, 1, 20], [1, 10, 2, 10]]
    assert [(d.record.offset, d.reason) for d in dead] == [
        (
            2,
            "field 'features' feature 'temp[t-1]' is missing (null or NaN), with no earlier "
            "step of its channel to fill it from",
        )
    ]
    nan_f32 = np.array([1, 10, np.nan, 20], "<f4").tobytes()
    f32 = F32Codec(series_limits(missing="fill-previous"))
    assert f32.decode([record(nan_f32)])[0].windows.tolist() == [[1, 10, 1, 20]]


def test_features_named_one_by_one_decode_in_the_model_order() -> None:
    from streamer.config import CodecConfig

    codec = JsonCodec(Limits.of(["a", "b", "c", "d"], CodecConfig()))
    batch, dead = codec.decode(
        [
            record(json_value(features={"d": 4, "c": 3.0, "b": 2, "a": 1}), offset=0),
            record(json_value(features=[1, 2, 3, 4]), offset=1),
            record(json_value(features={"d": 4, "c": 3, "b": 2}), offset=2),
            record(json_value(features={"d": 4, "c": 3, "b": None, "a": 1}), offset=3),
        ]
    )
    assert batch.windows.tolist() == [[1, 2, 3, 4]] * 2
    assert [(d.record.offset, d.reason) for d in dead] == [
        (2, "field 'features' does not match the model: the model's 'a' is missing"),
        (3, "field 'features' feature 'b' is missing (null or NaN)"),
    ]


def test_readings_name_their_channels_as_fields_of_their_own() -> None:
    from dataclasses import replace

    from streamer.config import CodecConfig

    limits = replace(Limits.of(["temp", "flow"], CodecConfig()), readings=True)
    codec = JsonCodec(limits, readings=True)
    good = codec.encode("pump-7", 5, np.array([71.5, 3.25]))
    assert orjson.loads(good) == {"key": "pump-7", "ts": 5, "temp": 71.5, "flow": 3.25}
    batch, dead = codec.decode(
        [
            record(good, offset=0),
            record(b'{"key": "p", "flow": 3, "temp": 70}', offset=1),
            record(b'{"key": "p", "temp": 70, "flw": 3}', offset=2),
            record(b'{"key": "p", "temp": null, "flow": 3}', offset=3),
        ]
    )
    assert batch.windows.tolist() == [[71.5, 3.25], [70, 3]]
    assert [(d.record.offset, d.reason) for d in dead] == [
        (
            2,
            "the reading's fields do not match the model's channels: the model's 'flow' is "
            "missing; 'flw' is not the model's; renamed? 'flw' → 'flow'",
        ),
        (3, "field 'temp' is missing (null or NaN)"),
    ]
    filling = JsonCodec(replace(limits, keep_missing=True), readings=True)
    batch, dead = filling.decode([record(b'{"key": "p", "temp": null, "flow": 3}')])
    assert dead == [] and np.isnan(batch.windows[0, 0]), "left for the windower to fill"
