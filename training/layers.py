"""Layers with hand-written forward and backward passes.

Each layer reads its parameters by name from the model's parameter dictionary, so the optimizer,
the exporter and the layers all see the same arrays. Every computation keeps the dtype of its
inputs (float32 in training, float64 in gradient checks).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
from numpy.typing import NDArray

Array: TypeAlias = NDArray[np.floating]
Mask: TypeAlias = NDArray[np.floating] | NDArray[np.bool_]
"""A 0/1 multiplier: boolean, or floating when it also carries a dropout scale."""
Params: TypeAlias = dict[str, NDArray[Any]]
"""Parameters by name; float32 in training, any float dtype in gradient checks."""


@dataclass(frozen=True)
class SparseRows:
    """Gradient of an embedding table that is zero outside ``rows``.

    ``rows`` is sorted and unique; ``values[j]`` is the gradient of row ``rows[j]``.
    """

    rows: NDArray[np.integer]
    values: Array

    def to_dense(self, n_rows: int) -> Array:
        """The full gradient, zero in untouched rows."""
        dense = np.zeros((n_rows, self.values.shape[1]), dtype=self.values.dtype)
        dense[self.rows] = self.values
        return dense


Grads: TypeAlias = dict[str, "Array | SparseRows"]


@dataclass(frozen=True)
class RowGroups:
    """The looked-up rows of a batch grouped by row, to sum per-sample gradients per row.

    ``unique`` holds the distinct rows, sorted; ``order`` sorts the batch by row; ``first`` marks,
    in sorted order, the first sample of each row; ``segment`` gives, in sorted order, each
    sample's index into ``unique``.
    """

    unique: NDArray[np.integer]
    order: NDArray[np.intp]
    first: NDArray[np.bool_]
    segment: NDArray[np.intp]

    @classmethod
    def of(cls, rows: NDArray[np.integer]) -> RowGroups:
        order = np.argsort(rows)
        ordered = rows[order]
        first = np.empty(ordered.shape[0], dtype=bool)
        first[:1] = True
        np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
        segment = np.cumsum(first) - 1
        return cls(ordered[first], order, first, segment)


def accumulate_rows(groups: RowGroups, grad: Array) -> SparseRows:
    """Sum the per-sample gradients ``grad`` [N, d] per looked-up row.

    Both ways sort the samples by row; both beat ``np.add.at`` over the whole batch several
    times. When most rows of the batch are distinct (the usual case), the sums start as the
    first sample of each row and ``np.add.at`` adds only the repeated samples; when many
    samples repeat a row, ``np.add.reduceat`` over the sorted runs is faster.
    """
    ordered = grad[groups.order]
    n_samples, n_rows = ordered.shape[0], groups.unique.shape[0]
    if n_rows == n_samples:
        return SparseRows(groups.unique, ordered)
    if 4 * (n_samples - n_rows) > n_samples:
        sums = np.add.reduceat(ordered, np.flatnonzero(groups.first), axis=0)
        return SparseRows(groups.unique, sums)
    sums = ordered[groups.first]
    repeats = ~groups.first
    np.add.at(sums, groups.segment[repeats], ordered[repeats])
    return SparseRows(groups.unique, sums)


class Embedding:
    """Row lookup in the table ``params[name]``; row ``modelrepo.UNKNOWN_ROW`` is the unknown id."""

    def __init__(self, name: str) -> None:
        self.name = name

    def forward(self, params: Mapping[str, Array], rows: NDArray[np.integer]) -> Array:
        """Rows ``rows`` of the table, [N, d]."""
        looked_up: Array = params[self.name][rows]
        return looked_up

    def backward(self, rows: NDArray[np.integer] | RowGroups, dout: Array) -> SparseRows:
        """Gradient of the table given the gradient ``dout`` [N, d] of the looked-up rows.

        ``rows`` may be given already grouped, when several tables share the same lookups.
        """
        groups = rows if isinstance(rows, RowGroups) else RowGroups.of(rows)
        return accumulate_rows(groups, dout)


class Dense:
    """Affine map ``x @ params[weight] + params[bias]``, weight [in, out], bias [out]."""

    def __init__(self, weight: str, bias: str) -> None:
        self.weight = weight
        self.bias = bias

    def forward(self, params: Mapping[str, Array], x: Array) -> Array:
        """[N, in] -> [N, out]."""
        out: Array = x @ params[self.weight]
        out += params[self.bias]
        return out

    def backward(
        self, params: Mapping[str, Array], x: Array, dout: Array
    ) -> tuple[Array, Array, Array]:
        """Gradients (input, weight, bias) given the input ``x`` and the output gradient."""
        dweight: Array = x.T @ dout
        dbias: Array = np.ones(dout.shape[0], dtype=dout.dtype) @ dout  # faster than sum(0)
        dx: Array = dout @ params[self.weight].T
        return dx, dweight, dbias


class ReLU:
    """Rectifier. Its cache is the 0/1 mask of positive inputs."""

    @staticmethod
    def forward(x: Array) -> tuple[Array, Mask]:
        mask = x > 0
        return x * mask, mask

    @staticmethod
    def backward(mask: Mask, dout: Array) -> Array:
        return dout * mask


class Dropout:
    """Inverted dropout: keeps each unit with probability ``1 - rate`` and scales it up.

    Its cache is the multiplier (0 or ``1 / (1 - rate)``) applied to each unit.
    """

    def __init__(self, rate: float) -> None:
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
        self.rate = rate

    def mask(
        self, shape: tuple[int, ...], rng: np.random.Generator, dtype: np.dtype[np.floating]
    ) -> Array:
        """A fresh multiplier of the given shape."""
        keep: Array = (rng.random(shape, dtype=np.float32) >= self.rate).astype(dtype)
        keep *= 1.0 / (1.0 - self.rate)
        return keep

    def forward(self, x: Array, rng: np.random.Generator) -> tuple[Array, Array]:
        mask = self.mask(x.shape, rng, x.dtype)
        return x * mask, mask

    @staticmethod
    def backward(mask: Array, dout: Array) -> Array:
        return dout * mask


def sigmoid(x: Array) -> Array:
    """Logistic function without overflow for large negative inputs."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)
