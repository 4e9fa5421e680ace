"""Top-k selection: ``np.argpartition`` over the scored rows, then a sort of the few survivors."""

from __future__ import annotations

import numpy as np


def contenders(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the rows that can be among the ``k`` best: those above the k-th best score and
    every row tied with it, so that a tie-break decides among all of them (ascending order)."""
    n = scores.shape[0]
    if n == 0 or k <= 0:
        return np.empty(0, dtype=np.int64)
    if k >= n:
        return np.arange(n)
    kth_best = scores[np.argpartition(scores, n - k)[n - k]]
    return np.flatnonzero(scores >= kth_best)


def top_k(scores: np.ndarray, tie_rank: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` best scores, best first; equal scores ordered by ``tie_rank`` ascending.

    Every row tied with the k-th best score is kept through the partition step, so the tie-break
    is exact, not an artefact of where ``argpartition`` happened to cut.
    """
    survivors = contenders(scores, k)
    order = np.lexsort((tie_rank[survivors], -scores[survivors]))
    return survivors[order[:k]]


def top_k_by_id(scores: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """Like :func:`top_k` with equal scores ordered by ``ids`` (distinct strings, an object
    array), comparing the ids of the contenders only: no rank of every id is computed."""
    survivors = contenders(scores, k)
    keys = zip((-scores[survivors]).tolist(), ids[survivors].tolist(), strict=True)
    order = sorted(range(len(survivors)), key=list(keys).__getitem__)
    return survivors[order[:k]]
