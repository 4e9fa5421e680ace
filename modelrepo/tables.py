"""Feature tables: the per-user and per-item features a version ships so that the server can fill
in a model's side inputs from an id.

A table file (``user_features.npz``, ``item_features.npz``: the ``table`` field of an input names
it) is an uncompressed NumPy ``.npz`` holding one array per input, keyed by the input's name,
aligned with the rows of the user (or item) id input: row ``r`` holds the features of the id on
row ``r`` of that vocabulary, and row 0 (the unknown id) the defaults (category 0, an empty bag,
0.0 for a standardised number, which is the training mean). Each array has the input's tensor type
with the batch axis replaced by the table's rows: ``id`` int64 ``[rows]``, ``multi_hot`` int64
``[rows, L]``, ``dense`` float32 ``[rows, width]``.

:func:`table_bytes` writes one; :func:`parse_table` reads one back and checks every array against
the signature (presence, type, shape, category rows in range, finite numbers), so that a version
whose tables disagree with its signature never loads.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from modelrepo.arrays import npz_bytes, read_npz
from modelrepo.errors import VersionError
from modelrepo.signature import InputSpec, Role, Signature

USER_FEATURES_FILE = "user_features.npz"
ITEM_FEATURES_FILE = "item_features.npz"

Table = Mapping[str, np.ndarray]
"""One table file's arrays, by input name."""


def table_bytes(arrays: Table) -> bytes:
    """The ``.npz`` bytes of one table (see :mod:`modelrepo.arrays`)."""
    return npz_bytes(arrays)


def parse_table(data: bytes, file: str, signature: Signature) -> dict[str, np.ndarray]:
    """The arrays of table ``file``, each checked against its input of ``signature``."""
    specs = signature.tables().get(file, ())
    arrays = read_npz(data, file)
    expected = {spec.name for spec in specs}
    if set(arrays) != expected:
        raise VersionError(
            f"{file} holds {sorted(arrays)}; the signature looks up {sorted(expected)} in it"
        )
    for spec in specs:
        check_table_array(spec, arrays[spec.name], signature.table_rows(spec), file)
    return arrays


def check_table_array(spec: InputSpec, array: np.ndarray, rows: int, file: str) -> None:
    """``array`` is the table column of input ``spec``: its type, shape and values; else
    :class:`VersionError` naming the file and the input."""
    dtype, shape = table_type(spec, rows)
    where = f"{file}: '{spec.name}'"
    if array.dtype != dtype or array.shape != shape:
        raise VersionError(
            f"{where} is {array.dtype}{list(array.shape)}, the signature needs "
            f"{np.dtype(dtype)}{list(shape)}"
        )
    fault = value_fault(spec, array)
    if fault:
        raise VersionError(f"{where} {fault}")


def value_fault(spec: InputSpec, array: np.ndarray) -> str | None:
    """What is wrong with the values of ``array`` as input ``spec`` takes them (numbers not
    finite, categories outside the vocabulary's rows), or None; the type and shape are the
    caller's to check."""
    if spec.role is Role.DENSE:
        return None if np.isfinite(array).all() else "holds values that are not finite"
    n_rows = spec.n_rows or 0  # the signature requires it of an id or multi-hot input
    if array.size and (array.min() < 0 or array.max() >= n_rows):
        return f"holds rows outside [0, {n_rows})"
    return None


def table_type(spec: InputSpec, rows: int) -> tuple[type[np.generic], tuple[int, ...]]:
    """The dtype and shape of the table column of ``spec`` for a table of ``rows`` rows."""
    if spec.role is Role.ID:
        return np.int64, (rows,)
    if spec.role is Role.MULTI_HOT:
        return np.int64, (rows, spec.width)
    return np.float32, (rows, spec.width)
