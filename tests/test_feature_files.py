"""Reading side-feature files: the three formats, kind detection and overrides, every refusal with
its line numbers, missing values and their notes, and a small fuzz (never another exception)."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from training.features import FeatureFile, FeatureFileError, FeatureKind, read_feature_file
from training.features.formats import GENRES

CATEGORICAL, MULTI_HOT, NUMERIC = (
    FeatureKind.CATEGORICAL,
    FeatureKind.MULTI_HOT,
    FeatureKind.NUMERIC,
)

USERS_CSV = (
    "user_id,age,occupation,zip,tags\n"
    "u1,24,technician,01234,a|b\n"
    "u2,53,other,94043,b\n"
    "u3,33.5,writer,32067,c|a|c\n"
)
TYPED_ITEMS = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\tprice:float\n"
    "1\tToy Story\t1995\tAnimation Children's Comedy\t9.5\n"
    "2\tGoldenEye\t1995\tAction Adventure Thriller\t7\n"
    "3\tFour Rooms\t\tThriller\t-1e2\n"
)


def _write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def _read(tmp_path: Path, name: str, text: str | bytes, **options: object) -> FeatureFile:
    return read_feature_file(_write(tmp_path, name, text), **options)  # type: ignore[arg-type]


def _u_item_line(item: str, date: str, genres: tuple[str, ...], title: str = "Film") -> str:
    flags = "|".join("1" if genre in genres else "0" for genre in GENRES)
    return f"{item}|{title}|{date}||http://imdb/{item}|{flags}"


def _kinds(file: FeatureFile) -> dict[str, FeatureKind]:
    return {column.name: column.kind for column in file.columns}


def test_csv_kinds_are_detected_from_the_values(tmp_path: Path) -> None:
    file = _read(tmp_path, "users.csv", USERS_CSV)
    assert file.ids == ("u1", "u2", "u3")
    assert file.lines == (2, 3, 4)
    assert _kinds(file) == {
        "age": NUMERIC,
        "occupation": CATEGORICAL,
        "zip": NUMERIC,
        "tags": MULTI_HOT,
    }
    assert file.column("age").values == {"u1": 24.0, "u2": 53.0, "u3": 33.5}
    assert file.column("occupation").values["u3"] == "writer"
    # A bag splits on "|" and lists each category once, in the file's order.
    assert file.column("tags").values == {"u1": ("a", "b"), "u2": ("b",), "u3": ("c", "a")}
    notes = "\n".join(file.notes)
    assert "'age' read as numeric" in notes
    assert "'tags' read as multi_hot" in notes
    assert "'01234' has a leading zero" in notes  # the zip code looks like a number: said so


def test_kinds_override_detection_and_drop_removes_columns(tmp_path: Path) -> None:
    file = _read(
        tmp_path,
        "users.csv",
        USERS_CSV,
        kinds={"zip": CATEGORICAL, "occupation": MULTI_HOT},
        drop=("tags",),
    )
    assert _kinds(file) == {"age": NUMERIC, "occupation": MULTI_HOT, "zip": CATEGORICAL}
    assert file.column("zip").values["u1"] == "01234"  # the leading zero kept
    assert file.column("occupation").values["u2"] == ("other",)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"kinds": {"height": NUMERIC}}, "kinds names 'height'"),
        ({"drop": ["user_id"]}, "drop names 'user_id'"),  # the id is not a feature column
        ({"drop": ["age"], "kinds": {"age": NUMERIC}}, "'age' is both in kinds and in drop"),
        ({"kinds": {"age": "ordinal"}}, "the kind 'ordinal'"),
        ({"drop": ["age", "occupation", "zip", "tags"]}, "no feature column is left"),
        ({"kinds": {"occupation": NUMERIC}}, "line 2: column 'occupation': 'technician' is not"),
    ],
)
def test_bad_options_are_refused_naming_the_column(
    tmp_path: Path, options: dict[str, object], expected: str
) -> None:
    with pytest.raises(FeatureFileError, match=re.escape(expected)):
        _read(tmp_path, "users.csv", USERS_CSV, **options)


def test_u_user_reads_age_as_number_and_the_rest_as_categories(tmp_path: Path) -> None:
    file = _read(tmp_path, "u.user", "1|24|M|technician|85711\n2|53|F|other|94043\n")
    assert _kinds(file) == {
        "age": NUMERIC,
        "gender": CATEGORICAL,
        "occupation": CATEGORICAL,
        "zip_code": CATEGORICAL,
    }
    assert file.column("zip_code").values == {"1": "85711", "2": "94043"}
    assert file.column("age").values == {"1": 24.0, "2": 53.0}
    assert file.notes == ()


def test_u_item_keeps_genres_and_release_year_and_reads_latin1(tmp_path: Path) -> None:
    lines = [
        _u_item_line("1", "01-Jan-1995", ("Animation", "Children's", "Comedy"), "Café"),
        _u_item_line("2", "", ("Western", "Action")),
        _u_item_line("3", "12-Mar-1971", ()),
    ]
    file = _read(tmp_path, "u.item", ("\n".join(lines) + "\n").encode("latin-1"))
    assert _kinds(file) == {"release_year": CATEGORICAL, "genres": MULTI_HOT}
    assert file.column("release_year").values == {"1": "1995", "3": "1971"}
    # The genres in u.genre order, whatever order the test listed them in.
    assert file.column("genres").values == {
        "1": ("Animation", "Children's", "Comedy"),
        "2": ("Action", "Western"),
    }
    notes = "\n".join(file.notes)
    assert "'release_year': 1 id(s) without a value (line 2): served as the unknown category" in (
        notes
    )
    assert "'genres': 1 id(s) without a value (line 3): served as an empty bag" in notes


def test_typed_tsv_follows_its_header_and_leaves_the_title_out(tmp_path: Path) -> None:
    file = _read(tmp_path, "ml.item", TYPED_ITEMS)
    assert _kinds(file) == {"release_year": CATEGORICAL, "class": MULTI_HOT, "price": NUMERIC}
    assert file.column("class").values["2"] == ("Action", "Adventure", "Thriller")
    assert file.column("price").values == {"1": 9.5, "2": 7.0, "3": -100.0}
    assert "3" not in file.column("release_year").values
    assert any("'movie_title' left out" in note for note in file.notes)
    kept = _read(tmp_path, "ml.item", TYPED_ITEMS, kinds={"movie_title": MULTI_HOT})
    assert kept.column("movie_title").values["3"] == ("Four", "Rooms")
    assert not any("left out" in note for note in kept.notes)


def test_typed_tsv_with_an_unsupported_type_must_drop_it(tmp_path: Path) -> None:
    text = "id:token\tvec:float_seq\tcity:token\n1\t0.1 0.2\tParis\n"
    with pytest.raises(FeatureFileError, match="line 1: column 'vec': type 'float_seq'"):
        _read(tmp_path, "x.user", text)
    assert _kinds(_read(tmp_path, "x.user", text, drop=["vec"])) == {"city": CATEGORICAL}


def test_tab_separated_csv_without_types(tmp_path: Path) -> None:
    file = _read(tmp_path, "f.tsv", "id\tcolour\n1\tred\n2\tblue\n")
    assert file.column("colour").values == {"1": "red", "2": "blue"}


def test_missing_values_are_noted_with_count_column_lines_and_default(tmp_path: Path) -> None:
    rows = "".join(f"u{n},{'' if n % 2 else n},{'' if n < 3 else 'x'}\n" for n in range(14))
    file = _read(tmp_path, "m.csv", "\n\nid,score,kind\n" + rows)  # blank lines before the header
    assert file.lines[0] == 4
    assert list(file.column("score").values) == [f"u{n}" for n in range(0, 14, 2)]
    assert file.column("score").kind is NUMERIC
    notes = "\n".join(file.notes)
    assert "'score': 7 id(s) without a value (lines 5, 7, 9, 11, 13, ...): served as the mean" in (
        notes
    )
    assert "'kind': 3 id(s) without a value (lines 4, 5, 6): served as the unknown category" in (
        notes
    )


def test_a_column_of_mostly_numbers_read_as_categories_says_why(tmp_path: Path) -> None:
    file = _read(tmp_path, "a.csv", "id,age\n1,24\n2,NA\n3,31\n")
    assert file.column("age").kind is CATEGORICAL
    assert any("2 of 3 values are numbers, but not 'NA' (line 3)" in note for note in file.notes)


def test_a_quoted_field_over_two_lines_is_refused_at_its_first_line(tmp_path: Path) -> None:
    text = 'id,note\n1,plain\n2,"two\nlines"\n3,x\n'
    with pytest.raises(FeatureFileError, match="line 3: a field holds a line break"):
        _read(tmp_path, "q.csv", text)
    file = _read(tmp_path, "q.csv", 'id,note\n1,"a, b"\n2,x\n')
    assert file.column("note").values["1"] == "a, b"


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("r.csv", "id,a,b\n1,x,y\n2,x\n3,x,y\n", "line 3: 2 field(s), the header (line 1) has 3"),
        ("u.user", "1|24|M|tech|857\n2|53|F|other\n", "line 2: 4 field(s), expected 5"),
        ("u.item", "1|Film|01-Jan-1995||url|0|1\n", "line 1: 7 field(s), expected 24"),
        ("d.csv", "id,a\n7,x\n8,y\n7,z\n", "lines 2, 4: duplicate id '7'"),
        ("t.user", "id:token\tage:float\n1\t20\n2\tabc\n", "line 3: column 'age': 'abc' is not"),
        ("n.csv", "id,w\n1,2.5\n2,nan\n", "line 3: column 'w': 'nan' is not finite"),
        ("i.csv", "id,w\n1,2.5\n2,-inf\n", "line 3: column 'w': '-inf' is not finite"),
        ("u.user", "1|old|M|tech|85711\n", "line 1: column 'age': 'old' is not a number"),
        ("e.csv", "", "empty file"),
        ("b.csv", "\n  \n", "empty file"),
        ("h.csv", "id,a,b\n", "no rows after the header (line 1)"),
        ("o.csv", ",a\n1,x\n", "line 1: no id column"),
        ("s.csv", "id\n1\n", "line 1: no feature columns"),
        ("c.csv", "id,a,a\n1,x,y\n", "line 1: column 'a' appears more than once"),
        ("w.csv", "id,my col\n1,x\n", "line 1: column name 'my col'"),
        ("z.csv", "id,a\n  ,x\n", "line 2: empty id"),
        ("u.item", _u_item_line("1", "1995", ()), "line 1: release date '1995' is not a date"),
        ("u.item", _u_item_line("1", "", ()).replace("|0", "|2", 1), "must be 0 or 1, got '2'"),
        ("x.csv", b"id,a\n1,ok\n2,\xff\n", "line 3: not UTF-8"),
    ],
)
def test_malformed_files_are_refused_naming_the_line(
    tmp_path: Path, name: str, text: str | bytes, expected: str
) -> None:
    path = _write(tmp_path, name, text)
    with pytest.raises(FeatureFileError, match=re.escape(expected)) as raised:
        read_feature_file(path)
    assert str(path) in str(raised.value)


def test_many_problems_are_reported_together_and_capped(tmp_path: Path) -> None:
    rows = "".join(f"{n},x\n" for n in range(15)) * 2  # 15 duplicated ids
    with pytest.raises(FeatureFileError) as raised:
        _read(tmp_path, "many.csv", "id,a\n" + rows)
    message = str(raised.value)
    assert "15 problems" in message
    assert "lines 2, 17: duplicate id '0'" in message
    assert "... and 5 more" in message


def test_a_missing_file_is_a_feature_file_error(tmp_path: Path) -> None:
    with pytest.raises(FeatureFileError, match="cannot read"):
        read_feature_file(tmp_path / "absent.csv")
    with pytest.raises(FeatureFileError, match="cannot read"):
        read_feature_file(tmp_path)  # a directory


def _garbled(rng: random.Random, text: str) -> str:
    """``text`` cut short, with a line replaced or added by random bytes of feature-file text."""
    alphabet = "|,\t\n\"':01ab .-e"
    lines = text.splitlines(keepends=True)
    junk = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
    at = rng.randrange(len(lines) + 1)
    lines[at : at + rng.randint(0, 1)] = [junk]
    garbled = "".join(lines)
    return garbled[: rng.randint(0, len(garbled))]


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("f.csv", USERS_CSV),
        ("f.item", TYPED_ITEMS),
        ("u.user", "1|24|M|technician|85711\n2|53|F|other|94043\n3|30|F|x|1\n"),
        ("u.item", "\n".join(_u_item_line(str(n), "01-Jan-1990", ("Drama",)) for n in range(3))),
    ],
)
def test_fuzzed_files_are_read_or_refused_never_crash(tmp_path: Path, name: str, text: str) -> None:
    rng = random.Random(name)
    outcomes = set()
    for _ in range(150):
        path = _write(tmp_path, name, _garbled(rng, text))
        try:
            file = read_feature_file(path)
        except FeatureFileError as exc:
            assert str(path) in str(exc)
            outcomes.add("refused")
            continue
        outcomes.add("read")
        assert len(set(file.ids)) == len(file.ids) == len(file.lines)
        assert all(set(column.values) <= set(file.ids) for column in file.columns)
    assert outcomes == {"read", "refused"}  # the fuzz reached both sides
