"""Rows in and out of a batch: count a request's rows, join slices into feeds, rejoin a split
request's outputs. Plain NumPy, no queue state."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from service.batching.queue import Part, Tensors
from service.errors import InvalidInput


def row_count(inputs: Mapping[str, np.ndarray]) -> int:
    """The rows of a request: every input must have the same, non-zero number."""
    n = -1
    for value in inputs.values():
        rows = value.shape[0] if value.ndim else 0
        if n < 0:
            n = rows
        elif rows != n:
            n = 0
            break
    if n <= 0:
        raise InvalidInput(
            "inputs must have the same, non-zero number of rows; got "
            + (", ".join(f"'{k}': {list(v.shape)}" for k, v in inputs.items()) or "no inputs")
        )
    return n


def concatenate(parts: list[Part]) -> Tensors:
    """The batch's feeds: its slices joined in order (a whole single request is passed as is)."""
    if len(parts) == 1:
        request, start, stop = parts[0]
        if start == 0 and stop == request.n:
            return dict(request.inputs)
        return {name: value[start:stop] for name, value in request.inputs.items()}
    names = parts[0][0].inputs.keys()
    return {
        name: np.concatenate([request.inputs[name][start:stop] for request, start, stop in parts])
        for name in names
    }


def reassemble(pieces: list[tuple[int, Tensors]]) -> Tensors:
    """A split request's outputs from its pieces ``(start row, outputs)``, in row order."""
    pieces.sort(key=lambda piece: piece[0])
    names = pieces[0][1].keys()
    return {name: np.concatenate([piece[name] for _, piece in pieces]) for name in names}
