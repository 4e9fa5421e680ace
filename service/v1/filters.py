"""Filters on item attributes: which items a ``/v1 recommend`` request's ``filters`` keep.

An *attribute* is an item feature of the version: an ``item_table`` input of its signature, called
by its ``feature`` name, with the values the version's item table holds for each item row. That
is the only attribute table in scope: a version publishes its item features with the model, and
a table of attributes the model does not take would be a second copy of the same contract for no
request that the features do not already serve. A two-id version has no attributes.

What each kind of attribute takes (anything else is a 400 naming the filter, ``filters.<i>``):

- categorical (role ``id``) and multi-hot: ``any_of`` (keep an item holding at least one of the
  values) and/or ``none_of`` (drop an item holding any of them); values through the attribute's
  vocabulary. A value the vocabulary does not hold matches nothing (it is counted in
  ``recserve_unknown_ids_total`` with ``kind="filters:<feature>"``);
- numeric (role ``dense``, one column): ``min`` and/or ``max``, inclusive, in raw units: the bounds
  are standardised with the input's ``mean`` and ``std`` and compared with the table's float32
  values, rounded the way the table was (so an item at exactly ``min`` is kept). An item without
  a value was published with the training mean, and is filtered as having it.

The item on row 0 (a candidate the version does not know) has no attributes: it passes
``none_of`` and fails ``any_of`` and every range.

What makes a filter cheap is built once per version and attribute, on first use, never per
request: for a categorical or multi-hot attribute an inverted index (CSR: the item rows holding
each category), for a numeric one the item rows in value order. A request then costs one boolean
mask over the item rows per filter, set from the matching rows (for a range, from the others when
more than half match): no Python loop over items. :func:`keep_mask` is what recommend (catalog,
``candidates``) and the two-stage path use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from modelrepo import UNKNOWN_ROW, InputSpec, Role, Source, Vocabulary
from service.errors import InvalidInput
from service.v1.feature_values import refuse
from service.v1.per_version import PerVersion
from service.v1.schemas import ItemFilter

if TYPE_CHECKING:
    from service.models.served import ServedVersion

FIELD = "filters"
_NAME_CHARS = 64  # of an attribute name a caller sent that the version does not have, when quoted


def _mask(n_rows: int, rows: np.ndarray, value: bool) -> np.ndarray:
    """A mask over ``n_rows`` item rows that is ``value`` at ``rows`` and not elsewhere."""
    mask = np.full(n_rows, not value, dtype=bool)
    mask[rows] = value
    return mask


class _Postings:
    """A CSR inverted index: the item rows holding each category (category 0, the unknown one
    and a bag's padding, holds none)."""

    def __init__(self, column: np.ndarray, n_categories: int) -> None:
        n_items, width = column.shape[0], (column.shape[1] if column.ndim == 2 else 1)
        categories = column.reshape(-1)
        items = np.repeat(np.arange(n_items, dtype=np.int64), width)
        present = categories != UNKNOWN_ROW
        categories, items = categories[present], items[present]
        # Sorted as 16-bit keys when they fit: NumPy radix-sorts them, several times faster.
        keys = categories.astype(np.uint16) if n_categories <= 1 << 16 else categories
        order = np.argsort(keys, kind="stable")
        self.items = items[order].astype(np.int32 if n_items < 1 << 31 else np.int64)
        self.offsets = np.zeros(n_categories + 1, dtype=np.int64)
        np.cumsum(np.bincount(categories, minlength=n_categories), out=self.offsets[1:])

    def rows_of(self, categories: np.ndarray) -> np.ndarray:
        """The item rows holding any of ``categories`` (an item may appear more than once)."""
        starts, ends = self.offsets[categories], self.offsets[categories + 1]
        if categories.size == 1:
            one: np.ndarray = self.items[int(starts[0]) : int(ends[0])]
            return one
        return np.concatenate(
            [self.items[s:e] for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]
        )


class _Ordered:
    """The item rows in the order of one numeric column, for ranges by binary search."""

    def __init__(self, column: np.ndarray) -> None:
        self.rows = np.argsort(column)
        self.values = column[self.rows]

    def between(self, low: np.float32, high: np.float32) -> np.ndarray:
        """Keep-mask of the items with ``low <= value <= high``; row 0 is never kept."""
        start = int(np.searchsorted(self.values, low, side="left"))
        end = int(np.searchsorted(self.values, high, side="right"))
        n_rows = self.rows.size
        if 2 * (end - start) <= n_rows:
            mask = _mask(n_rows, self.rows[start:end], True)
        else:  # most items match: mark the fewer that do not
            outside = np.concatenate([self.rows[:start], self.rows[end:]])
            mask = _mask(n_rows, outside, False)
        mask[UNKNOWN_ROW] = False
        return mask


class _Attribute:
    """One item feature as a filter sees it; its index is built on the first filter on it."""

    def __init__(self, spec: InputSpec, column: np.ndarray, vocabulary: Vocabulary | None) -> None:
        self.spec = spec
        self.column = column
        self.vocabulary = vocabulary
        self._postings: _Postings | None = None
        self._ordered: _Ordered | None = None

    def postings(self) -> _Postings:
        if self._postings is None:
            assert self.spec.n_rows is not None  # the signature requires it of these roles
            self._postings = _Postings(self.column, self.spec.n_rows)
        return self._postings

    def ordered(self) -> _Ordered:
        if self._ordered is None:
            self._ordered = _Ordered(self.column[:, 0])
        return self._ordered

    def build(self) -> None:
        """Build the index a filter on this attribute uses (a no-op once built)."""
        if self.spec.role is not Role.DENSE:
            self.postings()
        elif self.spec.width == 1:
            self.ordered()

    def check(self, item_filter: ItemFilter, where: str, version_name: str) -> None:
        """400 naming the filter when this attribute cannot take it."""
        spec, feature = self.spec, self.spec.feature
        if spec.role is Role.DENSE:
            if item_filter.min is None and item_filter.max is None:
                raise refuse(where, f"'{feature}' is numeric: it takes 'min' and/or 'max'")
            if spec.width != 1:
                raise refuse(where, f"'{feature}' has {spec.width} columns; a range takes one")
            return
        if item_filter.any_of is None and item_filter.none_of is None:
            kind = "categorical" if spec.role is Role.ID else "multi-hot"
            raise refuse(where, f"'{feature}' is {kind}: it takes 'any_of' and/or 'none_of'")
        if self.vocabulary is None:
            raise refuse(where, f"'{feature}' of {version_name} has no vocabulary to filter by")

    def keeps(self, item_filter: ItemFilter, unknown: dict[str, int]) -> np.ndarray:
        """The keep-mask of a checked filter over every item row; unknown values counted."""
        if self.spec.role is Role.DENSE:
            return self._range(item_filter.min, item_filter.max)
        keep: np.ndarray | None = None
        for values, wanted in ((item_filter.any_of, True), (item_filter.none_of, False)):
            if values is not None:
                mask = self._holding(values, wanted, unknown)
                keep = mask if keep is None else np.logical_and(keep, mask, out=keep)
        assert keep is not None  # checked: a values filter has any_of or none_of
        return keep

    def _holding(self, values: Sequence[str], wanted: bool, unknown: dict[str, int]) -> np.ndarray:
        """True (``wanted``) or False at the items holding any of ``values``, else the other."""
        assert self.vocabulary is not None
        rows, missing = self.vocabulary.rows(list(dict.fromkeys(values)))
        if missing:
            kind = f"{FIELD}:{self.spec.feature}"
            unknown[kind] = unknown.get(kind, 0) + len(missing)
        known = rows[rows != UNKNOWN_ROW]  # a value the vocabulary does not hold matches nothing
        matching = self.postings().rows_of(known) if known.size else known
        return _mask(self.column.shape[0], matching, wanted)

    def _range(self, low: float | None, high: float | None) -> np.ndarray:
        return self.ordered().between(
            self._standardised(low, -np.inf), self._standardised(high, np.inf)
        )

    def _standardised(self, bound: float | None, default: float) -> np.float32:
        """A raw bound as the table holds values: ``(bound - mean) / std`` rounded to float32
        (the same rounding as the table's, so that an item at the bound compares equal)."""
        if bound is None:
            return np.float32(default)
        spec = self.spec
        value = (
            bound if spec.mean is None or spec.std is None else (bound - spec.mean[0]) / spec.std[0]
        )
        with np.errstate(over="ignore"):  # beyond float32: an infinite bound, which is right
            return np.float32(value)


class _Attributes:
    """The item attributes of one version, by feature name."""

    def __init__(self, version: ServedVersion) -> None:
        self.where = f"model '{version.name}' version {version.version}"
        self.by_name: dict[str, _Attribute] = {}
        for spec in version.signature.from_source(Source.ITEM_TABLE):
            column = version.tables[str(spec.table)][spec.name]
            vocabulary = None if spec.vocabulary is None else version.vocabulary(spec)
            self.by_name[str(spec.feature)] = _Attribute(spec, column, vocabulary)

    def get(self, feature: str, where: str) -> _Attribute:
        attribute = self.by_name.get(feature)
        if attribute is None:
            has = f"it has {sorted(self.by_name)}" if self.by_name else "it has none"
            quoted = feature[:_NAME_CHARS]
            raise refuse(where, f"{self.where} has no item attribute '{quoted}' ({has})")
        return attribute


_attributes_of = PerVersion(_Attributes)


def prepare(version: ServedVersion) -> None:
    """Build every attribute's index now (about 0.3 s per million items and attribute), so that
    the first filtered request does not: for a load step that runs before a version is ready."""
    for attribute in _attributes_of(version).by_name.values():
        attribute.build()


def keep_mask(version: ServedVersion, filters: Sequence[ItemFilter] | None) -> np.ndarray | None:
    """Which item rows pass every filter: a fresh boolean mask indexed by item row (the caller
    may change it), or None when there are no filters. ``mask[rows]`` keeps some rows,
    ``np.flatnonzero(~mask)`` are the rows to drop. Every filter is checked before any mask is
    built: the first bad one is a 400 naming it (``filters.<i>``)."""
    if not filters:
        return None
    attributes = _attributes_of(version)
    checked = []
    for at, item_filter in enumerate(filters):
        where = f"{FIELD}.{at}"
        attribute = attributes.get(item_filter.feature, where)
        attribute.check(item_filter, where, attributes.where)
        checked.append((attribute, item_filter))
    unknown: dict[str, int] = {}
    keep: np.ndarray | None = None
    for attribute, item_filter in checked:
        mask = attribute.keeps(item_filter, unknown)
        keep = mask if keep is None else np.logical_and(keep, mask, out=keep)
    for kind, n in unknown.items():
        version.count_unknown(kind, n)
    return keep


def require_survivors(keep: np.ndarray, rows: np.ndarray | None, where: str) -> None:
    """400 when the filters leave none of ``rows`` (None: the whole catalog, rows 1 and up), so
    that an empty answer always means that what the user has or excludes took the rest."""
    left = keep[UNKNOWN_ROW + 1 :] if rows is None else keep[rows]
    if not left.any():
        among = "the catalog" if rows is None else "the candidates"
        raise InvalidInput(f"invalid request: {FIELD}: they leave no item of {among} of {where}")
