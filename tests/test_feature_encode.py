"""Encoding feature columns into the tables a version ships: alignment with the id vocabulary,
defaults on row 0, vocabularies and statistics fitted on the training ids only, bags, and the
encoding of a cold user's raw values."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from modelrepo import Vocabulary
from training.features import (
    EncodedTable,
    FeatureColumn,
    FeatureFile,
    FeatureFileError,
    FeatureKind,
    encode_table,
    read_feature_file,
)

CATEGORICAL, MULTI_HOT, NUMERIC = (
    FeatureKind.CATEGORICAL,
    FeatureKind.MULTI_HOT,
    FeatureKind.NUMERIC,
)

# Ids u1..u6 (lines 2..7) and a stray id "ghost" (line 8) that the interactions do not know.
USERS = (
    "user_id,job,age,genres\n"
    "u1,doctor,20,a|b\n"
    "u2,artist,30,b\n"
    "u3,doctor,,c|b|a\n"
    "u4,,40,\n"
    "u5,pilot,50,d\n"
    "u6,artist,60,b|d\n"
    "ghost,doctor,99,a\n"
)
IDS = ["u6", "u2", "u1", "u3", "u4", "u5", "nobody"]  # vocabulary row order, not the file's


@pytest.fixture
def users(tmp_path: Path) -> FeatureFile:
    path = tmp_path / "users.csv"
    path.write_text(USERS)
    return read_feature_file(path)


def _table(users: FeatureFile, **options: object) -> EncodedTable:
    return encode_table(users, IDS, entity="users", **options)  # type: ignore[arg-type]


def test_rows_follow_the_id_order_and_row_0_holds_the_defaults(users: FeatureFile) -> None:
    table = _table(users)
    job, age, genres = (table.feature(name) for name in ("job", "age", "genres"))
    assert job.vocabulary is not None and genres.vocabulary is not None
    assert job.rows.dtype == np.int64 and job.rows.shape == (len(IDS) + 1,)
    assert genres.rows.dtype == np.int64 and genres.rows.shape == (len(IDS) + 1, 3)
    assert age.rows.dtype == np.float32 and age.rows.shape == (len(IDS) + 1, 1)
    # Vocabularies: job artist, doctor, pilot; genres b, a, d, c (see the next test).
    # Rows: 0 unknown, then u6, u2, u1, u3, u4 (no job, no genres), u5, nobody (no row).
    assert job.rows.tolist() == [0, 1, 1, 2, 2, 0, 3, 0]
    assert genres.rows.tolist() == [
        [0, 0, 0],
        [1, 3, 0],
        [1, 0, 0],
        [2, 1, 0],
        [4, 1, 2],
        [0, 0, 0],
        [3, 0, 0],
        [0, 0, 0],
    ]
    # Ages 20..60 of u1, u2, u4, u5, u6 (u3 has none): mean 40, std sqrt(200); missing: 0.
    np.testing.assert_allclose(
        age.rows[:, 0], np.array([0, 20, -10, -20, 0, 0, 10, 0]) / np.sqrt(200), rtol=1e-6
    )
    assert table.arrays("user").keys() == {"user_job", "user_age", "user_genres"}
    assert table.arrays("user")["user_age"] is age.rows


def test_notes_name_stray_ids_by_line_and_ids_without_a_row(users: FeatureFile) -> None:
    notes = _table(users).notes
    assert "users.csv: 1 id(s) not among the interactions' users (line 8): ignored" in notes
    assert any(
        note.startswith("users.csv: 1 users of the interactions have no row (e.g. 'nobody')")
        for note in notes
    )


def test_vocabularies_list_the_most_frequent_first_then_by_value(users: FeatureFile) -> None:
    table = _table(users)
    job, genres = table.feature("job").vocabulary, table.feature("genres").vocabulary
    assert job is not None and genres is not None
    # The stray "ghost" row is not counted: doctor 2, artist 2, pilot 1.
    assert job.ids == ["artist", "doctor", "pilot"]
    assert genres.ids == ["b", "a", "d", "c"]
    # Valid vocabulary files: what a version ships reads back the same.
    assert Vocabulary.parse(job.to_text(), "vocab").ids == job.ids


def test_statistics_and_vocabularies_come_from_the_fit_ids_only(users: FeatureFile) -> None:
    table = _table(users, fit_ids=["u1", "u2", "u5"])
    age, job, genres = (table.feature(name) for name in ("age", "job", "genres"))
    assert age.mean is not None and age.std is not None
    assert age.mean == pytest.approx(np.mean([20, 30, 50]))
    assert age.std == pytest.approx(np.std([20, 30, 50]))
    expected = (np.array([60, 30, 20, 0, 40, 50, 0]) - age.mean) / age.std
    expected[[3, 6]] = 0.0  # u3 has no age, nobody has no row: the mean
    np.testing.assert_allclose(age.rows[1:, 0], expected, rtol=1e-6)
    assert job.vocabulary is not None and job.vocabulary.ids == ["artist", "doctor", "pilot"]
    assert genres.vocabulary is not None and genres.vocabulary.ids == ["b", "a", "d"]
    # u3's "c" is known only outside the fit ids: left out of u3's bag, and said so.
    u3 = IDS.index("u3") + 1
    assert genres.rows[u3].tolist() == [genres.vocabulary.row("b"), genres.vocabulary.row("a"), 0]
    assert any(
        "'genres': 1 value(s) never seen among the training ids (e.g. 'c'" in note
        for note in table.notes
    )


def test_values_unseen_in_fitting_are_the_unknown_category(users: FeatureFile) -> None:
    table = _table(users, fit_ids=["u1", "u3"])
    job = table.feature("job")
    assert job.vocabulary is not None and job.vocabulary.ids == ["doctor"]
    assert job.rows[1:].tolist() == [0, 0, 1, 1, 0, 0, 0]
    assert any(
        "'job': 2 value(s) never seen among the training ids" in note for note in table.notes
    )


def test_a_constant_or_empty_numeric_column_keeps_std_1(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("id,flat,sparse\n1,5,\n2,5,\n3,5,7\n")
    table = encode_table(read_feature_file(path), ["1", "2", "3"], fit_ids=["1", "2"])
    flat, sparse = table.feature("flat"), table.feature("sparse")
    assert (flat.mean, flat.std) == (5.0, 1.0)
    assert (sparse.mean, sparse.std) == (0.0, 1.0)
    assert flat.rows[:, 0].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert sparse.rows[:, 0].tolist() == [0.0, 0.0, 0.0, 7.0]
    assert "c.csv: column 'flat': the same value for every training id: std 1" in table.notes
    assert "c.csv: column 'sparse': no training id has a value: mean 0, std 1" in table.notes


@pytest.mark.parametrize("ages", ["1e308,1e308,1e308", "0,1,1e308"])
def test_numbers_too_large_to_standardise_are_refused(tmp_path: Path, ages: str) -> None:
    path = tmp_path / "big.csv"
    path.write_text("id,age\n" + "".join(f"{n},{age}\n" for n, age in enumerate(ages.split(","))))
    with pytest.raises(FeatureFileError, match="column 'age': values too large"):
        encode_table(read_feature_file(path), ["0", "1", "2"], fit_ids=["0", "1"])


def test_max_bag_cuts_long_bags_and_says_how_many(users: FeatureFile) -> None:
    table = _table(users, max_bag=2)
    genres = table.feature("genres")
    assert genres.vocabulary is not None
    assert genres.width == 2
    u3 = IDS.index("u3") + 1
    assert genres.rows[u3].tolist() == [genres.vocabulary.row("c"), genres.vocabulary.row("b")]
    assert "users.csv: column 'genres': 1 bag(s) longer than 2 cut to their first 2" in table.notes


def test_a_column_without_any_bag_still_has_one_slot() -> None:
    file = FeatureFile(Path("t.csv"), ("a",), (FeatureColumn("tags", MULTI_HOT, {}),), ())
    assert encode_table(file, ["a"]).feature("tags").rows.tolist() == [[0], [0]]


def test_encode_maps_raw_values_like_the_table(users: FeatureFile) -> None:
    table = _table(users, fit_ids=["u1", "u2", "u5", "u6"])
    job, age, genres = (table.feature(name) for name in ("job", "age", "genres"))
    # Known ids' raw values encode to their table rows.
    rows = [IDS.index(raw) + 1 for raw in ("u1", "u6")]
    for feature in (job, age, genres):
        raw = [users.column(feature.name).values[user] for user in ("u1", "u6")]
        np.testing.assert_array_equal(feature.encode(raw), feature.rows[rows])
    # Unknown categories are row 0; missing values the defaults; a bag keeps its known values.
    assert job.encode(["astronaut", None, "pilot"]).tolist() == [0, 0, 3]
    assert genres.vocabulary is not None
    d, b = genres.vocabulary.row("d"), genres.vocabulary.row("b")
    assert genres.encode([("zzz", "d"), None, ("d", "b", "a", "q")]).tolist() == [
        [d, 0, 0],
        [0, 0, 0],
        [d, b, genres.vocabulary.row("a")],
    ]
    assert age.mean is not None and age.std is not None
    assert age.encode([age.mean, None, 140])[:, 0].tolist() == pytest.approx(
        [0.0, 0.0, (140 - age.mean) / age.std]
    )
    assert age.encode([1.0]).dtype == np.float32
    assert age.encode([np.float32(40.0), np.int64(40)])[:, 0].tolist() == [0.0, 0.0]


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("job", [("doctor",)], "takes a category"),
        ("genres", ["a"], "takes a bag of categories"),
        ("genres", [(1, 2)], "takes a bag of categories"),
        ("age", ["20"], "takes a finite number"),
        ("age", [True], "takes a finite number"),
        ("age", [[1.0]], "takes a finite number"),
        ("age", [float("nan")], "not NaN"),
        ("age", [float("inf")], "takes a finite number"),
        ("age", [1e308, -1e308], "too large to standardise"),
    ],
)
def test_encode_refuses_values_of_the_wrong_type(
    users: FeatureFile, name: str, raw: list[object], expected: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(expected)):
        _table(users).feature(name).encode(raw)  # type: ignore[arg-type]


def test_bad_arguments_are_value_errors(users: FeatureFile) -> None:
    with pytest.raises(ValueError, match="distinct"):
        encode_table(users, ["u1", "u1"])
    with pytest.raises(ValueError, match="max_bag"):
        encode_table(users, IDS, max_bag=0)
    with pytest.raises(KeyError, match="features: job, age, genres"):
        _table(users).feature("height")
