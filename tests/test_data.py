"""Loaders, format detection, skipped-row reports and the synthetic generator."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from training.data import (
    DataError,
    SyntheticSpec,
    detect_format,
    load,
    parse_csv,
    parse_separated,
    synthetic,
)


def test_csv_with_header_maps_string_ids_to_sorted_vocabularies() -> None:
    text = "user_id,item_id,rating,timestamp\nbob,x,4,100\nalice,y,5,90\nbob,y,3,80\n"
    data = parse_csv(text, "t.csv")
    assert data.user_ids == ["alice", "bob"]
    assert data.item_ids == ["x", "y"]
    assert data.users.tolist() == [1, 0, 1]
    assert data.items.tolist() == [0, 1, 1]
    assert data.timestamps.tolist() == [100, 90, 80]
    assert data.skipped_rows == 0
    assert data.skipped_report() is None


def test_csv_without_timestamp_uses_row_position_and_accepts_movielens_header() -> None:
    data = parse_csv("userId,movieId,rating\n1,10,4\n2,10,5\n1,20,1\n")
    assert data.timestamps.tolist() == [0, 1, 2]
    assert data.user_ids == ["1", "2"]


def test_numeric_ids_sort_numerically() -> None:
    data = parse_csv("user_id,item_id\n10,3\n9,20\n100,100\n")
    assert data.user_ids == ["9", "10", "100"]
    assert data.item_ids == ["3", "20", "100"]


def test_rows_with_missing_fields_are_reported_and_skipped() -> None:
    text = (
        "user_id,item_id,rating,timestamp\n"
        "a,x,4,1\n"
        ",x,4,2\n"  # line 3: no user
        "b,x,4\n"  # line 4: too few fields
        "b,y,4,3\n"
        "c,,5,4\n"  # line 6: no item
        "c,y,five,5\n"  # line 7: malformed rating
        "c,z,4,later\n"  # line 8: malformed timestamp
    )
    data = parse_csv(text, "t.csv")
    assert len(data) == 2
    assert data.skipped_rows == 5
    assert data.skipped_lines == (3, 4, 6, 7, 8)
    report = data.skipped_report()
    assert report is not None
    assert "5 row(s)" in report
    assert "lines 3, 4, 6, 7, 8" in report


def test_skipped_report_lists_only_the_first_lines() -> None:
    text = "user_id,item_id\n" + "a,x\n" + ",x\n" * 25
    data = parse_csv(text)
    assert data.skipped_rows == 25
    assert data.skipped_lines == tuple(range(3, 13))
    report = data.skipped_report()
    assert report is not None
    assert report.endswith("12, ...)")


def test_csv_header_must_name_user_and_item() -> None:
    with pytest.raises(DataError, match="user_id and item_id"):
        parse_csv("who,what\n1,2\n")


def test_no_valid_rows_is_an_error() -> None:
    with pytest.raises(DataError, match="no valid interactions"):
        parse_csv("user_id,item_id\n,\n")


def test_udata_and_ratings_dat() -> None:
    udata = parse_separated("196\t242\t3\t881250949\n186\t302\t3\t891717742\n\n", "\t")
    assert udata.user_ids == ["186", "196"]
    assert udata.timestamps.tolist() == [881250949, 891717742]
    dat = parse_separated("1::1193::5::978300760\n1::661\n2::3408::4::978300275\n", "::")
    assert len(dat) == 2
    assert dat.skipped_lines == (2,)


def test_format_detection(tmp_path: Path) -> None:
    cases = {
        "a.txt": ("1::2::5::3\n", "ratings.dat"),
        "b.txt": ("1\t2\t5\t3\n", "u.data"),
        "c.txt": ("user_id,item_id\n1,2\n", "csv"),
        "ratings.dat": ("", "ratings.dat"),
        "u.data": ("", "u.data"),
    }
    for name, (text, expected) in cases.items():
        assert detect_format(tmp_path / name, text) == expected
    with pytest.raises(DataError, match="--format"):
        detect_format(tmp_path / "d.txt", "just words\n")


def test_load_reads_files_and_hashes_their_bytes(tmp_path: Path) -> None:
    path = tmp_path / "ratings.dat"
    path.write_text("1::10::5::3\n2::10::4::1\n")
    data = load(path)
    assert data.name == "ratings.dat"
    assert len(data) == 2
    assert data.content_hash == hashlib.sha256(path.read_bytes()).hexdigest()
    other = tmp_path / "other.dat"
    other.write_text("1::10::5::3\n2::11::4::1\n")
    assert load(other, "ratings.dat").content_hash != data.content_hash
    assert load(path, "ratings.dat").content_hash == data.content_hash


def test_load_of_a_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read"):
        load(tmp_path / "absent.csv")


def test_synthetic_is_deterministic_and_sized_as_asked() -> None:
    spec = SyntheticSpec(users=120, items=90, interactions=4000, seed=3)
    a, b = synthetic(spec), synthetic(spec)
    assert len(a) == 4000
    assert a.n_users == 120
    assert a.n_items == 90
    np.testing.assert_array_equal(a.users, b.users)
    np.testing.assert_array_equal(a.items, b.items)
    np.testing.assert_array_equal(a.timestamps, b.timestamps)
    assert a.content_hash == b.content_hash
    other = synthetic(SyntheticSpec(users=120, items=90, interactions=4000, seed=4))
    assert other.content_hash != a.content_hash
    assert not np.array_equal(other.items, a.items)


def test_synthetic_users_pick_distinct_items_with_long_tailed_popularity() -> None:
    data = synthetic(SyntheticSpec(users=400, items=600, interactions=20_000, seed=0))
    pairs = data.users * data.n_items + data.items
    assert np.unique(pairs).size == pairs.size
    per_user = np.bincount(data.users, minlength=data.n_users)
    assert per_user.min() >= 20
    popularity = np.sort(np.bincount(data.items, minlength=data.n_items))[::-1]
    # The top tenth of items holds far more than a tenth of the interactions.
    assert popularity[:60].sum() > 0.25 * len(data)
    # Per user, timestamps increase in source order.
    for user in (0, 17, 399):
        stamps = data.timestamps[data.users == user]
        assert np.all(np.diff(stamps) > 0)


def test_synthetic_rejects_impossible_sizes() -> None:
    with pytest.raises(DataError):
        synthetic(SyntheticSpec(users=10, items=5, interactions=3))
