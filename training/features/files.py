"""Reading a side-feature file into columns: one value per id, each column of one kind.

The formats (CSV, MovieLens 100K ``u.user``/``u.item``, typed TSV) are described in
:mod:`training.features.formats`. Here every format gets the same treatment, so that a file is
either read whole and right or refused with the lines to fix:

- kinds: declared by the format, else detected (every present value a finite number: numeric; a
  value holding ``|``: multi-hot; otherwise categorical), and ``kinds`` overrides both (a zip code
  that looks numeric is a category);
- refused (:class:`FeatureFileError` naming the lines): ragged rows, duplicate ids, a numeric
  value that does not parse or is NaN or infinite, an empty file, a header without rows or
  without an id column, a name in ``kinds`` or ``drop`` that is not a feature column;
- tolerated with a note: a missing value (an empty field). The id gets no value for that column
  and is served the column's default (the unknown category, an empty bag, the mean); the note
  says how many, which column and the first lines, so that a file full of holes is not mistaken
  for a good one.

A multi-hot value lists each category once: repeats in one bag are dropped (a film is not twice a
comedy).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from training.features.formats import Problems, RawColumn, RawRow, RawTable, parse
from training.features.kinds import FeatureFileError, FeatureKind, lines_text, listed

__all__ = [
    "FeatureColumn",
    "FeatureFile",
    "FeatureFileError",
    "FeatureKind",
    "read_feature_file",
]

Value = str | tuple[str, ...] | float

_SERVED_AS = {
    FeatureKind.CATEGORICAL: "served as the unknown category",
    FeatureKind.MULTI_HOT: "served as an empty bag",
    FeatureKind.NUMERIC: "served as the mean",
}


@dataclass(frozen=True)
class FeatureColumn:
    """One feature: its values by raw id; an id whose value is missing is absent."""

    name: str
    kind: FeatureKind
    values: dict[str, Value]


@dataclass(frozen=True)
class FeatureFile:
    """A feature file as read: its ids in file order, its columns and what the report should say."""

    path: Path
    ids: tuple[str, ...]  # file order
    columns: tuple[FeatureColumn, ...]
    notes: tuple[str, ...]  # warnings for the report, each naming file:line(s)
    lines: tuple[int, ...] = ()  # the line of each id, aligned with ``ids``

    def column(self, name: str) -> FeatureColumn:
        """The column called ``name``; :class:`KeyError` naming the columns otherwise."""
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"{self.path.name} has no column '{name}' ({self._names()})")

    def _names(self) -> str:
        return ", ".join(column.name for column in self.columns)


def read_feature_file(
    path: Path,
    *,
    kinds: Mapping[str, FeatureKind] = {},
    drop: Collection[str] = (),
) -> FeatureFile:
    """Read the feature file ``path`` (format from its name and header), leaving out the columns
    in ``drop`` and reading those in ``kinds`` as the given kind."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FeatureFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    table = parse(path, data)
    chosen = _choose_kinds(path, table, kinds, drop)
    problems = Problems(str(path))
    _check_duplicates(table.rows, problems)
    notes: list[str] = []
    columns = []
    for index, column in enumerate(table.columns):
        if column.name not in chosen:
            continue
        kind = chosen[column.name] or _detect(path.name, column, table.rows, index, notes)
        columns.append(_column(path.name, column, kind, table.rows, index, problems, notes))
    problems.raise_if_any()
    if not columns:
        raise FeatureFileError(f"{path}: no feature column is left to read")
    return FeatureFile(
        path=path,
        ids=tuple(row.id for row in table.rows),
        columns=tuple(columns),
        notes=(*_drop_notes(path.name, table, chosen, drop), *notes),
        lines=tuple(row.line for row in table.rows),
    )


def _choose_kinds(
    path: Path, table: RawTable, kinds: Mapping[str, FeatureKind], drop: Collection[str]
) -> dict[str, FeatureKind | None]:
    """The columns to read, each with its kind (None: detect it); refuses unknown names."""
    names = [column.name for column in table.columns]
    at = f"line {table.header_line}: " if table.header_line else ""
    problems = Problems(str(path))
    for flag, given in (("kinds", list(kinds)), ("drop", list(drop))):
        for name in given:
            if name not in names:
                problems.add(
                    table.header_line,
                    f"{at}{flag} names '{name}', which is not a "
                    f"feature column (columns: {', '.join(names)})",
                )
    for name in sorted(set(kinds).intersection(drop)):
        problems.add(table.header_line, f"{at}'{name}' is both in kinds and in drop")
    chosen: dict[str, FeatureKind | None] = {}
    for column in table.columns:
        if column.name in drop or (column.default_drop and column.name not in kinds):
            continue
        if column.name in kinds:
            try:
                chosen[column.name] = FeatureKind(kinds[column.name])
            except ValueError:
                problems.add(
                    table.header_line,
                    f"{at}kinds gives '{column.name}' the kind "
                    f"'{kinds[column.name]}' ({', '.join(FeatureKind)})",
                )
        elif column.unreadable:
            problems.add(
                table.header_line,
                f"{at}column '{column.name}': {column.unreadable}; drop it or give it a kind",
            )
        else:
            chosen[column.name] = column.declared
    problems.raise_if_any()
    return chosen


def _drop_notes(
    file: str, table: RawTable, chosen: Mapping[str, object], drop: Collection[str]
) -> list[str]:
    return [
        f"{file}: column '{column.name}' left out ({column.default_drop}); "
        "give it a kind to read it"
        for column in table.columns
        if column.default_drop and column.name not in chosen and column.name not in drop
    ]


def _check_duplicates(rows: tuple[RawRow, ...], problems: Problems) -> None:
    lines: dict[str, list[int]] = {}
    for row in rows:
        lines.setdefault(row.id, []).append(row.line)
    for raw, found in lines.items():
        if len(found) > 1:
            problems.add(found[0], f"{lines_text(found)}: duplicate id '{raw}'")


def _number(text: str) -> float | None:
    """``text`` as a float, or None; ``1_000`` is not a number here though Python reads it."""
    if "_" in text:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _present(rows: tuple[RawRow, ...], index: int) -> list[tuple[int, str]]:
    return [(row.line, row.values[index]) for row in rows if row.values[index]]


def _detect(
    file: str, column: RawColumn, rows: tuple[RawRow, ...], index: int, notes: list[str]
) -> FeatureKind:
    """The kind of an undeclared column, from its present values; a note says what was chosen."""
    present = _present(rows, index)
    numbers = [(line, value) for line, value in present if _number(value) is not None]
    if any(column.bag_separator in value for _, value in present):
        kind = FeatureKind.MULTI_HOT
        why = f"values hold '{column.bag_separator}'"
    elif present and len(numbers) == len(present):
        kind = FeatureKind.NUMERIC
        why = "every value is a number"
        coded = [value for _, value in numbers if len(value) > 1 and value.startswith("0")]
        if coded:
            why += f" (but '{coded[0]}' has a leading zero: a code?)"
    else:
        kind = FeatureKind.CATEGORICAL
        why = "values are words" if present else "no value at all"
        if present and 2 * len(numbers) >= len(present):
            others = [(line, value) for line, value in present if _number(value) is None]
            why = f"{len(numbers)} of {len(present)} values are numbers, but not " + listed(
                [f"'{value}' (line {line})" for line, value in others], 3
            )
    notes.append(f"{file}: column '{column.name}' read as {kind}: {why}; kinds overrides it")
    return kind


def _column(
    file: str,
    column: RawColumn,
    kind: FeatureKind,
    rows: tuple[RawRow, ...],
    index: int,
    problems: Problems,
    notes: list[str],
) -> FeatureColumn:
    values: dict[str, Value] = {}
    missing: list[int] = []
    for row in rows:
        value = _value(column, kind, row.values[index], row.line, problems)
        if value is None:
            missing.append(row.line)
        else:
            values[row.id] = value
    if missing:
        notes.append(
            f"{file}: column '{column.name}': {len(missing)} id(s) without a value "
            f"({lines_text(missing)}): {_SERVED_AS[kind]}"
        )
    return FeatureColumn(column.name, kind, values)


def _value(
    column: RawColumn, kind: FeatureKind, text: str, line: int, problems: Problems
) -> Value | None:
    """The value of one field (None when missing); a bad number goes to ``problems``."""
    if not text:
        return None
    if kind is FeatureKind.CATEGORICAL:
        return text
    if kind is FeatureKind.MULTI_HOT:
        tokens = (token.strip() for token in text.split(column.bag_separator))
        bag = tuple(dict.fromkeys(token for token in tokens if token))
        return bag or None
    number = _number(text)
    if number is None:
        problems.add(line, f"line {line}: column '{column.name}': '{text}' is not a number")
    elif not math.isfinite(number):
        problems.add(
            line,
            f"line {line}: column '{column.name}': '{text}' is not finite (numeric features "
            "must be; give the column the kind categorical if it is a category)",
        )
    else:
        return number
    return None
