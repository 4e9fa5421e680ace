"""A vocabulary: raw ids to table rows and back. Line ``i`` (from 0) of its file is row ``i + 1``;
row 0 (:data:`modelrepo.layout.UNKNOWN_ROW`) serves every id the vocabulary does not hold."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import repeat

import numpy as np

from modelrepo.errors import VersionError
from modelrepo.layout import UNKNOWN_ROW


class Vocabulary:
    """Ids of one table; ``n_rows`` counts the unknown row too."""

    __slots__ = ("_ids_array", "_index", "ids")

    def __init__(self, ids: Sequence[str]) -> None:
        self.ids: list[str] = list(ids)
        self._index: dict[str, int] = {raw: row for row, raw in enumerate(self.ids, start=1)}
        if len(self._index) != len(self.ids):
            duplicate = next(raw for raw, count in Counter(self.ids).items() if count > 1)
            raise VersionError(f"duplicate id {duplicate!r} in vocabulary")
        # Row r -> id; index 0 (the unknown row) holds "".
        self._ids_array = np.array(["", *self.ids], dtype=object)

    @classmethod
    def parse(cls, text: str, name: str) -> Vocabulary:
        """One id per line; a trailing newline is optional, blank or padded lines are refused."""
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        for number, line in enumerate(lines, start=1):
            if not line.strip() or line != line.strip():
                raise VersionError(
                    f"{name} line {number}: ids must be non-empty, without surrounding spaces"
                )
        try:
            return cls(lines)
        except VersionError as exc:
            raise VersionError(f"{name}: {exc}") from None

    def to_text(self) -> str:
        return "".join(f"{raw}\n" for raw in self.ids)

    @property
    def n_rows(self) -> int:
        return len(self.ids) + 1

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, raw: object) -> bool:
        return raw in self._index

    def row(self, raw: str) -> int:
        return self._index.get(raw, UNKNOWN_ROW)

    def rows(self, ids: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """Rows (int64) of ``ids`` in order, and the ids that were unknown (served from row 0)."""
        rows = np.fromiter(
            map(self._index.get, ids, repeat(UNKNOWN_ROW, len(ids))), dtype=np.int64, count=len(ids)
        )
        if rows.all():  # no unknown row (row 0): the common case, without a search
            return rows, []
        unknown_at = np.flatnonzero(rows == UNKNOWN_ROW)
        return rows, [ids[i] for i in unknown_at.tolist()]

    def id_of_row(self, row: int) -> str:
        """The id of row ``row``; the unknown row and out-of-range rows have none."""
        if not 1 <= row <= len(self.ids):
            raise IndexError(f"row {row} has no id (valid rows: 1..{len(self.ids)})")
        return self.ids[row - 1]

    def ids_of_rows(self, rows: np.ndarray) -> list[str]:
        """Ids of many rows at once (row 0 gives ``""``)."""
        return list(self._ids_array[rows])

    def catalog_rows(self) -> np.ndarray:
        """Every known row, ``1 .. n_rows - 1``."""
        return np.arange(1, self.n_rows, dtype=np.int64)
