"""Reading windows and series from CSV and Parquet, and the errors that name file and column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from streamer.errors import MissingFileError, TableError
from streamer.ingest.tables import load_windows, windows_from_frame, write_table
from streamer.ingest.windows import window_feature_names


def test_windows_file_keeps_rows_and_reserved_columns(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "key": ["a", "b"],
            "ts": ["2026-01-01T00:00:00Z", "2026-01-01T00:00:01.5Z"],
            "x": [1.0, 2.0],
            "y": [3.0, 4.0],
            "label": [0, 1],
        }
    )
    path = tmp_path / "w.parquet"
    write_table(frame, path)
    table = load_windows(path)
    assert table.feature_names == ("x", "y")
    np.testing.assert_array_equal(table.windows, [[1, 3], [2, 4]])
    assert table.keys.tolist() == ["a", "b"]
    assert table.ts_ms.tolist() == [1767225600000, 1767225601500]
    assert table.labels is not None and table.labels.tolist() == [0, 1]
    assert table.kinds is None


def test_series_are_cut_per_key_and_merged_back_in_time_order(tmp_path: Path) -> None:
    steps = 6
    frame = pd.DataFrame(
        {
            "key": ["a", "b"] * steps,
            "ts": np.repeat(np.arange(steps) * 1000, 2),
            "v": np.r_[np.arange(steps) * 10.0, np.arange(steps) * -10.0][
                np.argsort(np.r_[np.arange(steps) * 2, np.arange(steps) * 2 + 1])
            ],
            "label": [0] * 8 + [1, 0, 0, 0],
            "kind": [""] * 8 + ["spike", "", "", ""],
        }
    )
    path = tmp_path / "s.csv"
    write_table(frame, path)
    table = load_windows(path, window=3, stride=1)
    assert table.keys.tolist() == ["a", "b"] * 4
    assert table.ts_ms.tolist() == [2000, 2000, 3000, 3000, 4000, 4000, 5000, 5000]
    np.testing.assert_array_equal(table.windows[0], [0.0, 10.0, 20.0])
    np.testing.assert_array_equal(table.windows[1], [0.0, -10.0, -20.0])
    assert table.labels is not None and table.kinds is not None
    assert table.labels.tolist() == [0, 0, 0, 0, 1, 0, 1, 0]
    assert table.kinds.tolist() == ["", "", "", "", "spike", "", "spike", ""]
    assert table.feature_names == ("v[t-2]", "v[t-1]", "v[t-0]")
    assert table.head_per_key(0.5).tolist() == [True, True, True, True, False, False, False, False]


def test_non_numeric_feature_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    pd.DataFrame({"x": [1.0], "note": ["hello"]}).to_csv(path, index=False)
    with pytest.raises(TableError, match="column 'note' is not numeric"):
        load_windows(path)


def test_missing_value_names_the_row_key_and_column_or_follows_the_policy(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gap.csv"
    frame = pd.DataFrame({"key": ["a", "b", "a", "b"], "x": [1.0, 5.0, 2.0, 6.0]})
    frame["y"] = [1.0, 2.0, None, 4.0]
    frame.to_csv(path, index=False)
    with pytest.raises(TableError, match="row 2 \\(key 'a'\\): column 'y' is empty, NaN or inf"):
        load_windows(path)
    filled = load_windows(path, missing="fill-previous")
    assert filled.windows[:, 1].tolist() == [1.0, 2.0, 1.0, 4.0], "a's previous row, not b's"
    kept = load_windows(path, keep_missing=True)
    assert np.isnan(kept.windows[2, 1])
    frame.loc[0, "y"] = None
    frame.to_csv(path, index=False)
    with pytest.raises(TableError, match="nothing before it to fill it from"):
        load_windows(path, missing="fill-previous")


def reading_rows(columns: list[str], steps: int = 6) -> pd.DataFrame:
    """Two sensors' readings, one row per step, with the channels ``columns`` in that order."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"key": ["a", "b"] * steps, "ts": np.repeat(np.arange(steps), 2)})
    for column in sorted(columns):
        frame[column] = rng.normal(size=2 * steps)
    return frame[["key", "ts", *columns]]


def test_files_are_matched_to_the_model_by_name_in_any_column_order() -> None:
    model = window_feature_names(["temp", "flow", "rpm"], 3)
    original = windows_from_frame(reading_rows(["temp", "flow", "rpm"]), 3)
    reordered = windows_from_frame(reading_rows(["rpm", "temp", "flow"]), 3)
    assert reordered.feature_names != model
    matched = original.for_model(model, "a.csv"), reordered.for_model(model, "b.csv")
    assert matched[0].feature_names == matched[1].feature_names == model
    np.testing.assert_array_equal(matched[0].windows, matched[1].windows)
    # Readings (no --window) are cut into the model's windows, as --window 3 would.
    readings = windows_from_frame(reading_rows(["flow", "rpm", "temp"])).for_model(model, "c.csv")
    np.testing.assert_array_equal(readings.windows, matched[0].windows)
    assert readings.keys.tolist() == matched[0].keys.tolist()


@pytest.mark.parametrize(
    ("columns", "window", "reason"),
    [
        (["temp", "flow"], 3, "the model's 'rpm' is missing"),
        (["temp", "flow", "rpm", "vib"], 3, "'vib' is not the model's"),
        (["temp", "flw", "rpm"], 3, "renamed? 'flw' → 'flow'"),
        (["temp", "flw", "rpm"], None, "renamed? 'flw' → 'flow'"),
        (
            ["temp", "flow", "rpm"],
            2,
            "cut into windows of 2 steps, but the model reads windows of 3",
        ),
    ],
)
def test_a_file_that_does_not_fit_the_model_names_what_differs(
    columns: list[str], window: int | None, reason: str
) -> None:
    table = windows_from_frame(reading_rows(columns), window)
    with pytest.raises(TableError, match=r"^x\.csv: ") as error:
        table.for_model(window_feature_names(["temp", "flow", "rpm"], 3), "x.csv")
    assert reason in str(error.value)


def test_a_window_model_refuses_a_cut_file_saying_to_leave_out_the_window() -> None:
    table = windows_from_frame(reading_rows(["x", "y"]), 2)
    with pytest.raises(TableError, match="leave out --window"):
        table.for_model(["x", "y"], "x.csv")


def test_unknown_format_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="unknown format"):
        load_windows(tmp_path / "data.xlsx")
    with pytest.raises(MissingFileError, match=r"absent\.csv: no such file"):
        load_windows(tmp_path / "absent.csv")


@pytest.mark.parametrize("name", ["empty.csv", "empty.parquet"])
def test_a_file_with_columns_but_no_rows_says_so(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    write_table(pd.DataFrame({"ts": pd.Series([], dtype="int64"), "temp": []}), path)
    with pytest.raises(TableError, match=f"{name}: no rows, only column names"):
        load_windows(path)
    with pytest.raises(TableError, match="no rows"):
        load_windows(path, window=4)


def test_semicolon_files_and_a_timestamp_column_read_as_nab_and_skab_write_them(
    tmp_path: Path,
) -> None:
    skab = tmp_path / "skab.csv"
    skab.write_text(
        "datetime;Current;Pressure\n2020-03-09 10:14:33;1.33;0.05\n2020-03-09 10:14:34;1.35;0.38\n"
    )
    table = load_windows(skab)
    assert table.feature_names == ("Current", "Pressure")
    assert table.ts_ms.tolist() == [1583748873000, 1583748874000]
    nab = tmp_path / "nab.csv"
    nab.write_text("timestamp,value\n2013-07-04 00:00:00,69.9\n2013-07-04 01:00:00,71.2\n")
    table = load_windows(nab)
    assert table.feature_names == ("value",)
    assert table.ts_ms[1] - table.ts_ms[0] == 3_600_000


def test_a_clock_stepping_back_keeps_each_entitys_order(tmp_path: Path) -> None:
    path = tmp_path / "series.csv"
    pd.DataFrame(
        {
            "key": ["a"] * 5 + ["b"] * 3,
            "ts": [1000, 2000, 3000, 2500, 4000, 1500, 2600, 3500],
            "v": [1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 30.0],
        }
    ).to_csv(path, index=False)
    table = load_windows(path, window=2)
    a = table.windows[table.keys == "a"][:, -1].tolist()
    assert a == [2.0, 3.0, 4.0, 5.0], "a's window ending at 2500 stays after the one at 3000"
    assert table.ts_ms.tolist() == [2000, 2600, 3000, 2500, 3500, 4000]
    shuffled = load_windows(path).select(np.array([1, 0, 1, 1, 1, 1, 1, 1], dtype=bool))
    ordered = shuffled.in_time_order()
    assert ordered.windows[ordered.keys == "a"][:, 0].tolist() == [1.0, 3.0, 4.0, 5.0]
