"""From feature columns to the tables a version ships: one array per feature, aligned with the rows
of the id vocabulary, as the feature contract of ``modelrepo.tables`` lays them out.

Row ``r + 1`` of every array holds the features of ``ids[r]``; row 0 (the unknown id) and every id
without a value hold the defaults: category 0, an empty bag, 0.0 (the mean, standardised).

Everything learnt from the data (each categorical feature's vocabulary, each numeric feature's
mean and standard deviation) is learnt from the *training* ids only (``fit_ids``), so that held-out
users (cold start) or evaluation rows leak nothing into the model: a value that only they hold is
an unknown category. Vocabularies list the most frequent value first, then by value, so that two
runs on the same data ship byte-identical files.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from modelrepo import UNKNOWN_ROW, Vocabulary
from training.features.files import FeatureColumn, FeatureFile, Value
from training.features.kinds import FeatureFileError, FeatureKind, lines_text, listed

Raw = str | tuple[str, ...] | float | None
"""A raw value as a caller has it: a category, a bag of categories, a number; None if missing."""


@dataclass(frozen=True, eq=False)
class EncodedFeature:
    """One feature's table column and what it takes to encode new values the same way."""

    name: str  # the feature (column) name, what callers send
    kind: FeatureKind
    rows: np.ndarray  # categorical int64 [n_rows]; multi-hot int64 [n_rows, L];
    # numeric float32 [n_rows, 1] standardised
    vocabulary: Vocabulary | None  # categorical / multi-hot: the values, row 0 unknown
    mean: float | None  # numeric: training statistics (std > 0; a constant column: std 1)
    std: float | None

    @property
    def width(self) -> int:
        """Values per row: 1 for a category or a number, ``L`` for a bag."""
        return int(self.rows.shape[1]) if self.rows.ndim == 2 else 1

    def encode(self, raw: Sequence[Raw]) -> np.ndarray:
        """Raw values (a cold user's, a request's) as rows like :attr:`rows`: an unknown category
        is row 0, a missing value the default; a bag keeps its known categories, at most ``L``.
        A value of the wrong type or a number that is not finite is a :class:`ValueError`."""
        if self.kind is FeatureKind.NUMERIC:
            values = np.array([self._number(value) for value in raw], dtype=np.float64)
            assert self.mean is not None and self.std is not None
            return _standardised(self.name, values, self.mean, self.std).reshape(-1, 1)
        assert self.vocabulary is not None
        if self.kind is FeatureKind.CATEGORICAL:
            return np.array([self._category(value) for value in raw], dtype=np.int64)
        out = np.zeros((len(raw), self.width), dtype=np.int64)
        for at, value in enumerate(raw):
            known = _bag_rows(self.vocabulary, self._bag(value))[: self.width]
            out[at, : len(known)] = known
        return out

    def _category(self, value: Raw) -> int:
        if value is None:
            return UNKNOWN_ROW
        if not isinstance(value, str):
            raise ValueError(f"feature '{self.name}' takes a category (a string), not {value!r}")
        assert self.vocabulary is not None
        return self.vocabulary.row(value)

    def _bag(self, value: Raw) -> tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, tuple | list) and all(isinstance(item, str) for item in value):
            return tuple(value)
        raise ValueError(f"feature '{self.name}' takes a bag of categories, not {value!r}")

    def _number(self, value: Raw) -> float:
        if value is None:
            return math.nan  # the default: standardised to 0.0
        number = math.inf  # refused below unless ``value`` is a finite int or float (NumPy's too)
        if not isinstance(value, str | tuple | bool):
            with contextlib.suppress(TypeError, ValueError):
                number = float(value)
        if math.isnan(number):
            raise ValueError(f"feature '{self.name}' takes a finite number, not NaN")
        if math.isinf(number):
            raise ValueError(f"feature '{self.name}' takes a finite number, not {value!r}")
        return number


@dataclass(frozen=True)
class EncodedTable:
    """Every feature of one file, encoded for one id vocabulary, and notes for the report."""

    features: tuple[EncodedFeature, ...]
    notes: tuple[str, ...]  # ids without a row, rows without an id, values only held-out ids hold

    def feature(self, name: str) -> EncodedFeature:
        """The feature called ``name``; :class:`KeyError` naming the features otherwise."""
        for feature in self.features:
            if feature.name == name:
                return feature
        names = ", ".join(feature.name for feature in self.features)
        raise KeyError(f"no feature '{name}' (features: {names})")

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """The table file's arrays keyed by input name (``<prefix>_<feature>``, e.g. ``user_age``),
        as ``modelrepo.write_version(tables=...)`` takes them."""
        return {f"{prefix}_{feature.name}": feature.rows for feature in self.features}


def encode_table(
    file: FeatureFile,
    ids: Sequence[str],
    *,
    fit_ids: Sequence[str] | None = None,
    max_bag: int | None = None,
    entity: str = "ids",
) -> EncodedTable:
    """Encode ``file`` for the id vocabulary whose ids in row order are ``ids``.

    Vocabularies and numeric statistics come from the values of ``fit_ids`` (default ``ids``).
    A bag holds at most ``max_bag`` categories (default: as many as the longest bag). ``entity``
    names the ids in the notes (``"users"``, ``"items"``)."""
    if len(set(ids)) != len(ids):
        raise ValueError("encode_table: ids must be distinct (they are a vocabulary's rows)")
    if max_bag is not None and max_bag < 1:
        raise ValueError(f"encode_table: max_bag must be at least 1, got {max_bag}")
    fit = list(dict.fromkeys(ids if fit_ids is None else fit_ids))
    name = file.path.name
    notes = _coverage_notes(file, ids, entity)
    features = []
    for column in file.columns:
        where = f"{name}: column '{column.name}'"
        if column.kind is FeatureKind.NUMERIC:
            features.append(_numeric(where, column, ids, fit, notes))
        elif column.kind is FeatureKind.CATEGORICAL:
            features.append(_categorical(where, column, ids, fit, notes))
        else:
            features.append(_multi_hot(where, column, ids, fit, max_bag, notes))
    return EncodedTable(tuple(features), tuple(notes))


def _standardised(name: str, values: np.ndarray, mean: float, std: float) -> np.ndarray:
    """``(values - mean) / std`` as float32, NaN (a missing value) as 0.0, the mean."""
    with np.errstate(over="ignore", invalid="ignore"):
        standard = ((values - mean) / std).astype(np.float32)
    standard[np.isnan(values)] = 0.0
    if not np.isfinite(standard).all():
        raise ValueError(f"feature '{name}': a value is too large to standardise")
    return standard


def _coverage_notes(file: FeatureFile, ids: Sequence[str], entity: str) -> list[str]:
    name = file.path.name
    known = set(ids)
    lines = file.lines or tuple(range(1, len(file.ids) + 1))
    stray = [line for raw, line in zip(file.ids, lines, strict=True) if raw not in known]
    notes = []
    if stray:
        notes.append(
            f"{name}: {len(stray)} id(s) not among the interactions' {entity} "
            f"({lines_text(stray)}): ignored"
        )
    present = set(file.ids)
    absent = [raw for raw in ids if raw not in present]
    if absent:
        notes.append(
            f"{name}: {len(absent)} {entity} of the interactions have no row "
            f"(e.g. {listed([repr(raw) for raw in absent], 3)}): served with default features"
        )
    return notes


def _fitted_vocabulary(counts: Counter[str]) -> Vocabulary:
    """Most frequent first, then by value: stable across runs."""
    return Vocabulary(sorted(counts, key=lambda value: (-counts[value], value)))


def _fit_values(column: FeatureColumn, fit: Iterable[str]) -> list[Value]:
    return [column.values[raw] for raw in fit if raw in column.values]


def _unseen_note(where: str, unseen: Counter[str], what: str, notes: list[str]) -> None:
    if unseen:
        examples = listed([repr(value) for value, _ in unseen.most_common()], 3)
        notes.append(
            f"{where}: {len(unseen)} value(s) never seen among the training ids "
            f"(e.g. {examples}, held by {unseen.total()} id(s)): {what}"
        )


def _categorical(
    where: str, column: FeatureColumn, ids: Sequence[str], fit: list[str], notes: list[str]
) -> EncodedFeature:
    vocabulary = _fitted_vocabulary(Counter(str(value) for value in _fit_values(column, fit)))
    rows = np.zeros(len(ids) + 1, dtype=np.int64)
    unseen: Counter[str] = Counter()
    for at, raw in enumerate(ids, start=1):
        value = column.values.get(raw)
        if isinstance(value, str):
            rows[at] = vocabulary.row(value)
            if value not in vocabulary:
                unseen[value] += 1
    _unseen_note(where, unseen, "encoded as the unknown category", notes)
    return EncodedFeature(column.name, column.kind, rows, vocabulary, None, None)


def _bag_rows(vocabulary: Vocabulary, bag: Iterable[str]) -> list[int]:
    """The rows of a bag's known categories, in the bag's order."""
    return [row for row in map(vocabulary.row, bag) if row != UNKNOWN_ROW]


def _multi_hot(
    where: str,
    column: FeatureColumn,
    ids: Sequence[str],
    fit: list[str],
    max_bag: int | None,
    notes: list[str],
) -> EncodedFeature:
    bags: Mapping[str, tuple[str, ...]] = {
        raw: value for raw, value in column.values.items() if isinstance(value, tuple)
    }
    vocabulary = _fitted_vocabulary(Counter(t for raw in fit for t in bags.get(raw, ())))
    longest = max((len(bags.get(raw, ())) for raw in ids), default=0)
    length = max(1, longest if max_bag is None else min(longest, max_bag))
    rows = np.zeros((len(ids) + 1, length), dtype=np.int64)
    unseen: Counter[str] = Counter()
    cut = 0
    for at, raw in enumerate(ids, start=1):
        bag = bags.get(raw, ())
        known = _bag_rows(vocabulary, bag)
        unseen.update(token for token in bag if token not in vocabulary)
        cut += len(known) > length
        rows[at, : min(len(known), length)] = known[:length]
    _unseen_note(where, unseen, "left out of the bags", notes)
    if cut:
        notes.append(f"{where}: {cut} bag(s) longer than {length} cut to their first {length}")
    return EncodedFeature(column.name, column.kind, rows, vocabulary, None, None)


def _numeric(
    where: str, column: FeatureColumn, ids: Sequence[str], fit: list[str], notes: list[str]
) -> EncodedFeature:
    fitted = np.array(_fit_values(column, fit), dtype=np.float64)
    mean, std = 0.0, 1.0
    if not fitted.size:
        notes.append(f"{where}: no training id has a value: mean 0, std 1")
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            mean, spread = float(fitted.mean()), float(fitted.std())
        if not (math.isfinite(mean) and math.isfinite(spread)):
            raise FeatureFileError(f"{where}: values too large to standardise")
        if spread > 0:
            std = spread
        else:
            notes.append(f"{where}: the same value for every training id: std 1")
    raw = [column.values.get(raw, None) for raw in ids]
    values = np.array([math.nan if value is None else value for value in raw], dtype=np.float64)
    rows = np.zeros((len(ids) + 1, 1), dtype=np.float32)
    try:
        rows[1:, 0] = _standardised(column.name, values, mean, std)
    except ValueError:
        raise FeatureFileError(f"{where}: values too large to standardise") from None
    return EncodedFeature(column.name, column.kind, rows, None, mean, std)
