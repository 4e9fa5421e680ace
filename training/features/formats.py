"""The three side-feature file formats, read into one raw shape: named columns of stripped text.

- **CSV** with a header whose first column is the id (comma-separated; tab-separated when the
  header holds tabs and no commas). No column declares its kind: :mod:`training.features.files`
  detects it from the values; a multi-hot value separates its categories with ``|``.
- **MovieLens 100K** ``u.user`` (``id|age|gender|occupation|zip code``, no header: age is numeric,
  the rest categorical) and ``u.item`` (``id|title|release date|video release date|IMDb URL|`` and
  19 genre flags, latin-1). Of ``u.item`` only two features are read: the 19 flags become one
  multi-hot ``genres`` (genre names in MovieLens' ``u.genre`` order) and the release date becomes
  a categorical ``release_year``. The title, the video release date (empty throughout) and the
  IMDb URL are dropped: each is nearly unique per item, so as a feature it would only repeat the
  item id. Recognised by the file name.
- **Typed TSV** (RecBole's atomic files, as MovieLens' ``ml-100k.user`` and ``ml-100k.item``): a
  header of ``name:type`` fields, ``token`` categorical, ``token_seq`` multi-hot split on spaces,
  ``float`` numeric. A ``token_seq`` title column (``movie_title``: the words of the title) is
  left out unless the caller names it in ``kinds``, for the reason above: as a bag of words it
  would mostly identify the item and would make the bag as long as the longest title.

Every line number is the line of the file (1-based) where the row starts.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from training.features.kinds import FeatureFileError, FeatureKind

MAX_PROBLEMS = 10
"""Problems an error lists before it says how many more there are."""

GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
"""MovieLens 100K's genres in ``u.genre`` order: the order of ``u.item``'s 19 flags."""

_TYPES = {
    "token": FeatureKind.CATEGORICAL,
    "token_seq": FeatureKind.MULTI_HOT,
    "float": FeatureKind.NUMERIC,
}
_TYPED_FIELD = re.compile(r"[^:\s]+:[A-Za-z_]+")
_COLUMN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_RELEASE_DATE = re.compile(r"\d{1,2}-[A-Za-z]{3}-(\d{4})")
_BREAKS = frozenset("\r\n")
_U_ITEM_FIELDS = 5 + len(GENRES)


@dataclass(frozen=True)
class RawColumn:
    """A feature column as the file declares it."""

    name: str
    declared: FeatureKind | None  # None: detected from the values
    bag_separator: str  # how a multi-hot value splits into categories
    default_drop: str | None = None  # why the column is left out unless ``kinds`` names it
    unreadable: str | None = None  # why the column cannot be read (it must be dropped)


@dataclass(frozen=True)
class RawRow:
    line: int
    id: str
    values: tuple[str, ...]  # one per column, stripped; "" is a missing value


@dataclass(frozen=True)
class RawTable:
    header_line: int  # 0 when the format has no header
    columns: tuple[RawColumn, ...]
    rows: tuple[RawRow, ...]


class Problems:
    """Collects what is wrong with a file, so that one error reports them all (the first few)."""

    def __init__(self, where: str) -> None:
        self.where = where
        self._found: list[tuple[int, str]] = []

    def add(self, line: int, text: str) -> None:
        """``text`` names its line(s) itself; ``line`` orders the report."""
        self._found.append((line, text))

    def __bool__(self) -> bool:
        return bool(self._found)

    def raise_if_any(self) -> None:
        if not self._found:
            return
        found = sorted(self._found, key=lambda item: item[0])
        if len(found) == 1:
            raise FeatureFileError(f"{self.where} {found[0][1]}")
        shown = [f"  {text}" for _, text in found[:MAX_PROBLEMS]]
        if len(found) > MAX_PROBLEMS:
            shown.append(f"  ... and {len(found) - MAX_PROBLEMS} more")
        raise FeatureFileError(f"{self.where}: {len(found)} problems:\n" + "\n".join(shown))


def parse(path: Path, data: bytes) -> RawTable:
    """The raw table of the feature file ``path`` whose bytes are ``data``."""
    where = str(path)
    if path.name in ("u.user", "u.item"):
        text = data.decode("latin-1")  # MovieLens 100K's encoding; every byte string decodes
        records = list(_split_lines(text, "|"))
        if not records:
            raise FeatureFileError(f"{where}: empty file")
        return _u_user(where, records) if path.name == "u.user" else _u_item(where, records)
    text = _decode_utf8(where, data)
    first = next(_split_lines(text, None), None)
    if first is None:
        raise FeatureFileError(f"{where}: empty file")
    header_fields = first[1][0].split("\t")
    if len(header_fields) > 1 and all(_TYPED_FIELD.fullmatch(f.strip()) for f in header_fields):
        return _typed(where, list(_split_lines(text, "\t")))
    delimiter = "\t" if "\t" in first[1][0] and "," not in first[1][0] else ","
    return _csv(where, text, delimiter)


def _decode_utf8(where: str, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise FeatureFileError(
            f"{where} line {line}: not UTF-8 (byte 0x{data[exc.start]:02x}); save the file as UTF-8"
        ) from None


def _split_lines(text: str, separator: str | None) -> Iterator[tuple[int, list[str]]]:
    """Non-blank lines with their numbers, split on ``separator`` (None: the whole line).

    Splits on ``\\n`` only: ``str.splitlines`` would also break latin-1 text at ``\\x85``."""
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if line.strip():
            yield number, [line] if separator is None else line.split(separator)


def _csv(where: str, text: str, delimiter: str) -> RawTable:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    records: list[tuple[int, list[str]]] = []
    start = 1
    try:
        for fields in reader:
            line, start = start, reader.line_num + 1
            if fields and (len(fields) > 1 or fields[0].strip()):
                records.append((line, fields))
    except csv.Error as exc:
        raise FeatureFileError(f"{where} line {reader.line_num}: {exc}") from None
    if not records:
        raise FeatureFileError(f"{where}: empty file")
    header_line, header = records[0]
    columns = [RawColumn(name.strip(), None, "|") for name in header[1:]]
    return _table(where, header_line, header[0], columns, records[1:])


def _typed(where: str, records: list[tuple[int, list[str]]]) -> RawTable:
    header_line, header = records[0]
    columns = []
    for field in header[1:]:
        name, _, type_name = field.strip().partition(":")
        kind = _TYPES.get(type_name)
        default_drop = None
        if kind is FeatureKind.MULTI_HOT and (name == "title" or name.endswith("_title")):
            default_drop = "title words identify the item more than they describe it"
        unreadable = None
        if kind is None:
            unreadable = f"type '{type_name}' is not supported ({', '.join(_TYPES)})"
        columns.append(RawColumn(name, kind, " ", default_drop, unreadable))
    id_name = header[0].strip().partition(":")[0]
    return _table(where, header_line, id_name, columns, records[1:])


def _u_user(where: str, records: list[tuple[int, list[str]]]) -> RawTable:
    columns = [
        RawColumn("age", FeatureKind.NUMERIC, "|"),
        *(RawColumn(name, FeatureKind.CATEGORICAL, "|") for name in ("gender", "occupation")),
        RawColumn("zip_code", FeatureKind.CATEGORICAL, "|"),
    ]
    problems = Problems(where)
    rows = _rows(problems, records, 1 + len(columns), "expected 5 (id|age|gender|occupation|zip)")
    problems.raise_if_any()
    return RawTable(0, tuple(columns), tuple(rows))


def _u_item(where: str, records: list[tuple[int, list[str]]]) -> RawTable:
    problems = Problems(where)
    expected = f"expected {_U_ITEM_FIELDS} (id|title|dates|URL|19 genre flags)"
    rows = []
    for row in _rows(problems, records, _U_ITEM_FIELDS, expected):
        release, flags = row.values[1], row.values[4:]
        year = ""
        if release:
            match = _RELEASE_DATE.fullmatch(release)
            if match is None:
                problems.add(
                    row.line,
                    f"line {row.line}: release date '{release}' is not a date like 01-Jan-1995",
                )
            else:
                year = match.group(1)
        bad = [flag for flag in flags if flag not in ("0", "1")]
        if bad:
            problems.add(row.line, f"line {row.line}: genre flags must be 0 or 1, got '{bad[0]}'")
        genres = "|".join(genre for genre, flag in zip(GENRES, flags, strict=True) if flag == "1")
        rows.append(RawRow(row.line, row.id, (year, genres)))
    problems.raise_if_any()
    columns = (
        RawColumn("release_year", FeatureKind.CATEGORICAL, "|"),
        RawColumn("genres", FeatureKind.MULTI_HOT, "|"),
    )
    return RawTable(0, columns, tuple(rows))


def _table(
    where: str,
    header_line: int,
    id_name: str,
    columns: list[RawColumn],
    records: list[tuple[int, list[str]]],
) -> RawTable:
    """A headed table: header checks, then the rows."""
    problems = Problems(where)
    at = f"line {header_line}"
    if not id_name.strip():
        problems.add(header_line, f"{at}: no id column: the header's first column has no name")
    if not columns:
        problems.add(header_line, f"{at}: no feature columns: the header names only the id")
    names = [column.name for column in columns]
    for name in names:
        if not _COLUMN_NAME.fullmatch(name):
            problems.add(
                header_line,
                f"{at}: column name '{name}' must be letters, digits, '_', '.' or '-' "
                "(it names the feature in requests and files)",
            )
    for name in sorted({name for name in names if names.count(name) > 1}):
        problems.add(header_line, f"{at}: column '{name}' appears more than once")
    problems.raise_if_any()
    if not records:
        raise FeatureFileError(f"{where}: no rows after the header ({at})")
    rows = _rows(problems, records, 1 + len(columns), f"the header ({at}) has {1 + len(columns)}")
    problems.raise_if_any()
    return RawTable(header_line, tuple(columns), tuple(rows))


def _rows(
    problems: Problems, records: Iterable[tuple[int, list[str]]], width: int, expected: str
) -> list[RawRow]:
    """Rows of ``width`` fields with an id; ragged rows and unusable ids go to ``problems``."""
    rows = []
    for line, fields in records:
        if len(fields) != width:
            problems.add(line, f"line {line}: {len(fields)} field(s), {expected}")
            continue
        stripped = [field.strip() for field in fields]
        if not stripped[0]:
            problems.add(line, f"line {line}: empty id")
        elif any(_BREAKS.intersection(field) for field in stripped):
            problems.add(line, f"line {line}: a field holds a line break")
        else:
            rows.append(RawRow(line, stripped[0], tuple(stripped[1:])))
    return rows
