"""Warming a session up before it takes requests, with feeds built from the version's signature.

An id input is fed table rows (row 0 is the unknown row, so it is always valid); a multi-hot
input is fed the same rows of its vocabulary in every position; a dense input zeros of its width.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from modelrepo import Role, Signature
from service.errors import ModelLoadError
from service.runtime.session import Runtime, bucket_sizes


def feeds(signature: Signature, rows: np.ndarray) -> dict[str, np.ndarray]:
    """A batch of ``len(rows)`` rows: ``rows`` modulo its table's rows for an id input (so ``-1``
    is the last row) and in every position of a bag, zeros of its width for a dense input."""
    feeds: dict[str, np.ndarray] = {}
    for spec in signature.inputs:
        if spec.role is Role.DENSE:
            feeds[spec.name] = np.zeros((len(rows), spec.width), dtype=np.float32)
            continue
        ids = rows.astype(np.int64) % (spec.n_rows or 1)
        feeds[spec.name] = ids if spec.role is Role.ID else np.repeat(ids[:, None], spec.width, 1)
    return feeds


def warm_up(
    runtime: Runtime,
    signature: Signature,
    batch_sizes: Iterable[int],
    *,
    between: Callable[[], None] | None = None,
    largest: int = 0,
) -> None:
    """Run the first and last row of every table, then each batch size once.

    The last-row run proves each embedding table holds as many rows as the signature claims.
    A last run of ``largest`` rows (the largest batch the version will run) grows the session's
    memory arena to its full size now, so that resident memory stays level under load instead of
    stepping up with the first large batch. ``between`` is called before each batch-size run (it
    may raise to stop the warmup).
    """
    try:
        runtime.run(feeds(signature, np.array([0, -1])))
    except Exception as exc:
        last = ", ".join(
            f"{spec.name} {(spec.n_rows or 1) - 1}"
            for spec in signature.inputs
            if spec.role is Role.ID
        )
        raise ModelLoadError(
            f"the model's tables do not hold the rows its metadata claims (last rows: {last}): "
            f"{exc}"
        ) from None
    sizes = list(batch_sizes)
    if runtime.pad_rows:  # every shape a batch can be padded to, so none is first seen under load
        sizes += bucket_sizes(max([*sizes, largest, 1]))
    for size in sizes:
        if between is not None:
            between()
        try:
            results = runtime.run(feeds(signature, np.arange(size)))
        except Exception as exc:
            raise ModelLoadError(f"warmup run of {size} rows failed: {exc}") from None
        for name, value in results.items():
            if value.shape[:1] != (size,):
                raise ModelLoadError(
                    f"warmup: output '{name}' has shape {list(value.shape)} for {size} rows"
                )
    if largest > 0:
        if between is not None:
            between()
        try:  # row 0 of every table
            runtime.run(feeds(signature, np.zeros(largest, dtype=np.int64)))
        except Exception as exc:
            raise ModelLoadError(
                f"a batch of {largest} rows (max_batch_rows) failed: {exc}"
            ) from None
