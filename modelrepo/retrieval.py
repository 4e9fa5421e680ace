"""The retrieval vectors a version ships, so that the server can pick a few hundred candidates
out of a large catalog before the ranking model sees them.

A retrieval file (:data:`modelrepo.layout.RETRIEVAL_FILE`) is an uncompressed NumPy ``.npz``
holding two float32 matrices with the same width ``d >= 1``: ``user_vectors``
``[n_user_rows, d]`` and ``item_vectors`` ``[n_item_rows, d]``, aligned with the rows of the
signature's user and item id inputs (row ``r`` is the id on row ``r`` of that vocabulary; row 0,
the unknown id, holds whatever the producer gives it: the mean user, or zeros). The retrieval
score of (user row ``u``, item row ``i``) is ``dot(user_vectors[u], item_vectors[i])``; a model
with biases folds them in as an extra column (a 1 on one side, the bias on the other), so that a
reader needs nothing but the dot product, which every nearest-neighbour index computes.

:meth:`RetrievalVectors.from_bytes` checks everything a reader relies on (names, dtype, shapes,
rows, finite values), so that a version whose vectors are corrupt never loads;
:func:`parse_retrieval` checks the rows against the signature too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modelrepo.arrays import npz_bytes, read_npz
from modelrepo.errors import VersionError
from modelrepo.layout import RETRIEVAL_FILE
from modelrepo.signature import Signature, Source

_ARRAYS = ("item_vectors", "user_vectors")


@dataclass(frozen=True, eq=False)
class RetrievalVectors:
    """The user and item vectors of a dot-product retrieval model (see the module docstring)."""

    user_vectors: np.ndarray
    """float32 ``[n_user_rows, d]``, row 0 the unknown user."""
    item_vectors: np.ndarray
    """float32 ``[n_item_rows, d]``, row 0 the unknown item (never retrieved by the server)."""

    @property
    def dim(self) -> int:
        return int(self.item_vectors.shape[1])

    @property
    def n_user_rows(self) -> int:
        return int(self.user_vectors.shape[0])

    @property
    def n_item_rows(self) -> int:
        return int(self.item_vectors.shape[0])

    def to_bytes(self) -> bytes:
        """The ``.npz`` bytes (see :mod:`modelrepo.arrays`)."""
        return npz_bytes({"user_vectors": self.user_vectors, "item_vectors": self.item_vectors})

    @classmethod
    def from_bytes(
        cls, data: bytes, n_user_rows: int, n_item_rows: int, file: str = RETRIEVAL_FILE
    ) -> RetrievalVectors:
        """Vectors read back from :meth:`to_bytes` for tables of ``n_user_rows`` users and
        ``n_item_rows`` items; :class:`VersionError` naming the fault."""
        arrays = read_npz(data, file)
        if sorted(arrays) != list(_ARRAYS):
            raise VersionError(f"{file} holds {sorted(arrays)}; expected {list(_ARRAYS)}")
        rows = {"user_vectors": n_user_rows, "item_vectors": n_item_rows}
        for name, array in arrays.items():
            if array.dtype != np.float32 or array.ndim != 2:
                raise VersionError(
                    f"{file}: '{name}' is {array.dtype}{list(array.shape)}, "
                    "expected a float32 matrix"
                )
            if array.shape[0] != rows[name]:
                raise VersionError(
                    f"{file}: '{name}' has {array.shape[0]} rows, the {name.split('_')[0]} "
                    f"ids have {rows[name]}"
                )
            if array.shape[1] < 1:
                raise VersionError(f"{file}: '{name}' has no columns")
            if not np.isfinite(array).all():
                raise VersionError(f"{file}: '{name}' holds values that are not finite")
        users, items = arrays["user_vectors"], arrays["item_vectors"]
        if users.shape[1] != items.shape[1]:
            raise VersionError(
                f"{file}: user vectors have {users.shape[1]} columns but item vectors "
                f"{items.shape[1]}: a dot product needs the same width"
            )
        return cls(users, items)


def parse_retrieval(
    data: bytes, signature: Signature, file: str = RETRIEVAL_FILE
) -> RetrievalVectors:
    """The retrieval vectors of a version of ``signature``: parsed, checked, and their rows the
    sizes of the signature's user and item id inputs."""
    user, item = signature.one_from(Source.USER), signature.one_from(Source.ITEM)
    if user is None or item is None or user.n_rows is None or item.n_rows is None:
        raise VersionError(f"{file} is shipped but the signature takes no user and item ids")
    return RetrievalVectors.from_bytes(data, user.n_rows, item.n_rows, file)
