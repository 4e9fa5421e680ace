"""Top-k selection: ``np.argpartition`` over the scored rows, then a sort of the few survivors."""

from __future__ import annotations

import numpy as np


def top_k(scores: np.ndarray, tie_rank: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` best scores, best first; equal scores ordered by ``tie_rank`` ascending.

    Every row tied with the k-th best score is kept through the partition step, so the tie-break
    is exact, not an artefact of where ``argpartition`` happened to cut.
    """
    n = scores.shape[0]
    if n == 0 or k <= 0:
        return np.empty(0, dtype=np.int64)
    if k < n:
        kth_best = scores[np.argpartition(scores, n - k)[n - k]]
        survivors = np.flatnonzero(scores >= kth_best)
    else:
        survivors = np.arange(n)
    order = np.lexsort((tie_rank[survivors], -scores[survivors]))
    return survivors[order[:k]]
