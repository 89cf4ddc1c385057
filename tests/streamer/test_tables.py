"""Reading windows and series from CSV and Parquet, and the errors that name file and column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from streamer.errors import MissingFileError, TableError
from streamer.tables import load_windows, write_table


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


def test_missing_value_names_the_row(tmp_path: Path) -> None:
    path = tmp_path / "gap.csv"
    pd.DataFrame({"x": [1.0, None, 3.0]}).to_csv(path, index=False)
    with pytest.raises(TableError, match="row 1 holds an empty, NaN or infinite value"):
        load_windows(path)


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
