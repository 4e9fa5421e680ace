"""The side features a feature model reads beside the user and item ids.

A :class:`SideFeature` is one input of the model besides the two ids: a categorical value, a bag
of categories (multi-hot) or a few numbers (dense), taken from the user's or the item's feature
table, or from the request's context. It carries what the model and the published version both
need: the input's name (``user_<feature>``, ``item_<feature>``, ``context_<feature>``), its
vocabulary size, its standardisation statistics and the table itself, aligned with the rows of
the id vocabulary (row ``r`` = the features of the id on row ``r``; row 0, the unknown id, holds
the defaults: category 0, an empty bag, 0.0). The model gathers a training batch's features from
the table by id row; the version ships the same table so that the server does the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from modelrepo import (
    ITEM_FEATURES_FILE,
    USER_FEATURES_FILE,
    InputSpec,
    Role,
    Source,
    table_type,
    value_fault,
)

FEATURE_SOURCES = (Source.USER_TABLE, Source.ITEM_TABLE, Source.CONTEXT)
_PREFIX = {Source.USER_TABLE: "user", Source.ITEM_TABLE: "item", Source.CONTEXT: "context"}
_ROLE_WORDS = {Role.ID: "categorical", Role.MULTI_HOT: "multi-hot", Role.DENSE: "numeric"}
_TABLE_FILE = {Source.USER_TABLE: USER_FEATURES_FILE, Source.ITEM_TABLE: ITEM_FEATURES_FILE}


@dataclass(frozen=True, eq=False)
class SideFeature:
    """One side input: what it is, where it comes from, and its table.

    Build one with :meth:`categorical`, :meth:`multi_hot` or :meth:`dense`. ``table`` is None for
    a context feature (the request supplies it; training data has none, so a model trained by id
    sees its defaults). ``width`` is 1 for a categorical feature, the bag length ``L`` for a
    multi-hot one, the columns of a dense one.
    """

    feature: str
    source: Source
    role: Role
    width: int
    table: NDArray[Any] | None
    n_rows: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    shared_vocabulary: str | None = None
    """A vocabulary file of the version the feature's categories are the ids of (the item ids'
    for a bag of items), instead of a file of its own."""

    def __post_init__(self) -> None:
        if self.source not in FEATURE_SOURCES:
            raise ValueError(f"feature {self.feature!r}: source {self.source} is not a feature's")
        if not self.feature:
            raise ValueError("a side feature needs a name")
        if (self.table is None) != (self.source is Source.CONTEXT):
            raise ValueError(f"{self.name}: a table feature has a table, a context one has none")
        spec = self.input_spec()  # the signature's own checks: role, shape, mean and std
        if self.table is not None:
            self._check_table(spec, self.table)

    # -- the three kinds of feature -------------------------------------------------------

    @classmethod
    def categorical(
        cls, feature: str, source: Source, n_rows: int, table: NDArray[Any] | None
    ) -> SideFeature:
        """One category per row: ``table`` int64 [rows], values in ``[0, n_rows)``."""
        return cls(feature, source, Role.ID, 1, _as(table, np.int64), n_rows)

    @classmethod
    def multi_hot(
        cls,
        feature: str,
        source: Source,
        n_rows: int,
        table: NDArray[Any] | None,
        length: int = 0,
        vocabulary: str | None = None,
    ) -> SideFeature:
        """A bag of categories per row: ``table`` int64 [rows, L] padded with 0 (``length`` L is
        the table's second axis, needed only for a context feature); ``vocabulary``: a file the
        version already ships whose ids the categories are (default: the feature's own)."""
        column = _as(table, np.int64)
        width = column.shape[1] if column is not None and column.ndim == 2 else length
        return cls(feature, source, Role.MULTI_HOT, width, column, n_rows,
                   shared_vocabulary=vocabulary)  # fmt: skip

    @classmethod
    def dense(
        cls,
        feature: str,
        source: Source,
        table: NDArray[Any] | None,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> SideFeature:
        """Standardised numbers: ``table`` float32 [rows, width] holds ``(raw - mean) / std``."""
        column = _as(table, np.float32)
        width = len(mean) if column is None else (column.shape[1] if column.ndim == 2 else 0)
        return cls(
            feature, source, Role.DENSE, width, column, None, tuple(map(float, mean)),
            tuple(map(float, std)),
        )  # fmt: skip

    # -- what the signature and the version say of it -------------------------------------

    @property
    def name(self) -> str:
        """The graph input's name: ``user_<feature>``, ``item_<feature>``, ``context_<feature>``."""
        return f"{_PREFIX[self.source]}_{self.feature}"

    @property
    def embedded(self) -> bool:
        """Whether the model looks it up in an embedding table (categorical and multi-hot)."""
        return self.role is not Role.DENSE

    @property
    def vocabulary(self) -> str | None:
        """The vocabulary file of a categorical or multi-hot feature."""
        if not self.embedded:
            return None
        return self.shared_vocabulary or f"vocab_{self.name}.txt"

    @property
    def table_file(self) -> str | None:
        """The version's table file this feature is a column of (None for context)."""
        return _TABLE_FILE.get(self.source)

    def input_spec(self) -> InputSpec:
        """The feature's entry in the model's signature."""
        dtype = "FP32" if self.role is Role.DENSE else "INT64"
        shape = (-1,) if self.role is Role.ID else (-1, self.width)
        return InputSpec(
            name=self.name, role=self.role, source=self.source, dtype=dtype, shape=shape,
            n_rows=self.n_rows, vocabulary=self.vocabulary, table=self.table_file,
            feature=self.feature, mean=self.mean, std=self.std,
            description=f"{_ROLE_WORDS[self.role]} feature '{self.feature}' ({self.source})",
        )  # fmt: skip

    def defaults(self, n: int) -> NDArray[Any]:
        """``n`` rows of the default value (what row 0 of a table holds)."""
        dtype, shape = table_type(self.input_spec(), n)
        return np.zeros(shape, dtype=dtype)

    def _check_table(self, spec: InputSpec, table: NDArray[Any]) -> None:
        dtype, shape = table_type(spec, table.shape[0] if table.ndim else 0)
        if table.dtype != dtype or table.shape != shape or table.shape[0] < 1:
            raise ValueError(
                f"{self.name}: the table is {table.dtype}{list(table.shape)}, expected "
                f"{np.dtype(dtype)}{list(shape)} with at least the unknown row"
            )
        fault = value_fault(spec, table)
        if fault:
            raise ValueError(f"{self.name}: the table {fault}")
        if np.any(table[0]):
            raise ValueError(f"{self.name}: row 0 (the unknown id) must hold the defaults")


def _as(table: NDArray[Any] | None, dtype: type[np.generic]) -> NDArray[Any] | None:
    """``table`` as ``dtype``; categories must already be integers (never rounded silently)."""
    if table is None:
        return None
    table = np.asarray(table)
    if dtype is np.int64 and table.size and not np.issubdtype(table.dtype, np.integer):
        raise ValueError(f"a table of categories must hold integers, got {table.dtype}")
    return np.ascontiguousarray(table, dtype=dtype)


def feature_tables(features: Sequence[SideFeature]) -> dict[str, dict[str, NDArray[Any]]]:
    """The tables a version ships (``modelrepo.write_version(..., tables=...)``): file name ->
    input name -> the feature's table."""
    tables: dict[str, dict[str, NDArray[Any]]] = {}
    for feature in features:
        if feature.table is not None and feature.table_file is not None:
            tables.setdefault(feature.table_file, {})[feature.name] = feature.table
    return tables
