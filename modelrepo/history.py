"""The users' training histories a version ships, so that the server never recommends what a user
already has.

A history file (:data:`modelrepo.layout.HISTORY_FILE`) is an uncompressed NumPy ``.npz`` holding
the (user row, item row) pairs the published model was trained on in CSR form over the version's
rows: ``indptr`` int64 ``[n_user_rows + 1]`` and ``indices`` int64 item rows, the items of user row
``r`` being ``indices[indptr[r]:indptr[r + 1]]``, ascending and distinct; ``n_item_rows`` (int64,
a scalar) is the size of the item table the rows index. Row 0 (the unknown user) has no items and
no user has the unknown item: an unknown id has no history to leave out.

CSR because a request needs one user's items at once (a slice, no search) and the whole file is
two flat arrays: 8 bytes per interaction, 800 KB for MovieLens-100K. :meth:`History.parse` checks
everything a reader relies on, so that a version whose history is corrupt never loads;
:func:`parse_history` checks it against the signature too.
"""

from __future__ import annotations

import numpy as np

from modelrepo.arrays import npz_bytes, read_npz
from modelrepo.errors import VersionError
from modelrepo.layout import HISTORY_FILE, UNKNOWN_ROW
from modelrepo.signature import Signature, Source

_ARRAYS = ("indices", "indptr", "n_item_rows")


class History:
    """Each user row's items, CSR over the version's rows (see the module docstring)."""

    __slots__ = ("indices", "indptr", "n_item_rows")

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, n_item_rows: int) -> None:
        """Arrays already in CSR form; :meth:`from_pairs` builds them, :meth:`parse` checks them."""
        self.indptr = indptr
        self.indices = indices
        self.n_item_rows = n_item_rows

    @classmethod
    def from_pairs(
        cls, user_rows: np.ndarray, item_rows: np.ndarray, n_user_rows: int, n_item_rows: int
    ) -> History:
        """The history of (user row, item row) pairs; repeated pairs count once.

        Raises ValueError for a row outside the tables or on the unknown row: the unknown user
        stands for every id nobody trained on, so it has no history.
        """
        users = np.asarray(user_rows, dtype=np.int64).reshape(-1)
        items = np.asarray(item_rows, dtype=np.int64).reshape(-1)
        if users.shape != items.shape:
            raise ValueError(f"{users.size} user rows but {items.size} item rows")
        for what, rows, n_rows in (("user", users, n_user_rows), ("item", items, n_item_rows)):
            if rows.size and (rows.min() <= UNKNOWN_ROW or rows.max() >= n_rows):
                raise ValueError(f"{what} rows must lie in [1, {n_rows})")
        keys = np.unique(users * n_item_rows + items)  # sorted by user, then item
        counts = np.bincount(keys // n_item_rows, minlength=n_user_rows)
        indptr = np.zeros(n_user_rows + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return cls(indptr, keys % n_item_rows, n_item_rows)

    @property
    def n_user_rows(self) -> int:
        return int(self.indptr.size - 1)

    def __len__(self) -> int:
        """How many (user, item) pairs the history holds."""
        return int(self.indices.size)

    def items_of(self, user_row: int) -> np.ndarray:
        """The item rows of ``user_row``, ascending (a view; the unknown row has none)."""
        start, end = self.indptr[user_row], self.indptr[user_row + 1]
        rows: np.ndarray = self.indices[start:end]
        return rows

    def to_bytes(self) -> bytes:
        """The ``.npz`` bytes (see :mod:`modelrepo.arrays`)."""
        return npz_bytes(
            {
                "indptr": self.indptr,
                "indices": self.indices,
                "n_item_rows": np.array(self.n_item_rows, dtype=np.int64),
            }
        )

    @classmethod
    def parse(cls, data: bytes, file: str = HISTORY_FILE) -> History:
        """A history read back from :meth:`to_bytes`; :class:`VersionError` naming the fault."""
        arrays = read_npz(data, file)
        if sorted(arrays) != list(_ARRAYS):
            raise VersionError(f"{file} holds {sorted(arrays)}; expected {list(_ARRAYS)}")
        for name, array in arrays.items():
            ndim = 0 if name == "n_item_rows" else 1
            if array.dtype != np.int64 or array.ndim != ndim:
                raise VersionError(
                    f"{file}: '{name}' is {array.dtype}{list(array.shape)}, expected int64 "
                    + ("scalar" if ndim == 0 else "vector")
                )
        history = cls(arrays["indptr"], arrays["indices"], int(arrays["n_item_rows"]))
        history._check(file)
        return history

    def _check(self, file: str) -> None:
        indptr, indices, n_items = self.indptr, self.indices, self.n_item_rows
        if indptr.size < 2:
            raise VersionError(f"{file}: 'indptr' needs at least 2 entries (row 0 and its end)")
        if indptr[0] != 0 or indptr[-1] != indices.size:
            raise VersionError(
                f"{file}: 'indptr' must run from 0 to the {indices.size} indices, "
                f"runs from {int(indptr[0])} to {int(indptr[-1])}"
            )
        if (np.diff(indptr) < 0).any():
            raise VersionError(f"{file}: 'indptr' decreases")
        if indptr[UNKNOWN_ROW + 1] != 0:
            raise VersionError(f"{file}: the unknown user (row 0) has items")
        if n_items < 1:
            raise VersionError(f"{file}: 'n_item_rows' is {n_items}")
        if indices.size and (indices.min() <= UNKNOWN_ROW or indices.max() >= n_items):
            raise VersionError(f"{file}: 'indices' holds item rows outside [1, {n_items})")
        unordered = np.diff(indices) <= 0
        ends = indptr[1:-1]
        unordered[ends[(ends > 0) & (ends < indices.size)] - 1] = False  # one user to the next
        if unordered.any():
            user = int(np.searchsorted(indptr, np.flatnonzero(unordered)[0], side="right") - 1)
            raise VersionError(
                f"{file}: the items of user row {user} are not ascending and distinct"
            )


def parse_history(data: bytes, signature: Signature, file: str = HISTORY_FILE) -> History:
    """The history of a version of ``signature``: parsed, checked, and its tables the sizes of
    the signature's user and item id inputs."""
    history = History.parse(data, file)
    user, item = signature.one_from(Source.USER), signature.one_from(Source.ITEM)
    if user is None or item is None:
        raise VersionError(f"{file} is shipped but the signature takes no user and item ids")
    for spec, n_rows in ((user, history.n_user_rows), (item, history.n_item_rows)):
        if n_rows != spec.n_rows:
            raise VersionError(
                f"{file} covers {n_rows} {spec.source} rows but input '{spec.name}' of the "
                f"signature has {spec.n_rows}"
            )
    return history
