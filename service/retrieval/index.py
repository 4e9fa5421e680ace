"""Top-N item rows by dot product with a user vector: exact for small catalogs, approximate above.

Both indexes answer the same question, :meth:`RetrievalIndex.search`: the item rows (never row 0,
the unknown item) with the highest ``dot(item_vectors[row], user)``, best first. The exact one is
one matrix product and an ``argpartition``: about 2 ms per 100,000 items x 64 on one core, so it
stops paying at a few hundred thousand items. Above that an inverted-file index (faiss
``IndexIVFFlat``, inner product) scans the ``nprobe`` cells whose centroids score best: chosen over
HNSW (hnswlib, usearch) by measurement on 1,000,000 x 64 on two cores: it builds in a fraction of
the time (k-means on a sample, then one assignment pass), keeps the vectors uncompressed (no
quantisation error in the scores) and its recall is set by one knob a config can turn.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from modelrepo import UNKNOWN_ROW


class RetrievalIndex(Protocol):
    """What two-stage recommend asks of an index."""

    kind: str
    """``exact`` or ``ivf``: what the logs and the load metrics say."""
    n_items: int
    """Item rows it can return (row 0 excluded)."""
    nbytes: int
    """Memory it holds beyond the version's item vectors."""

    def search(self, user: np.ndarray, n: int) -> np.ndarray:
        """The ``min(n, n_items)`` item rows best for ``user`` (float32 ``[d]``), best first."""
        ...


class ExactIndex:
    """Every item scored: ``item_vectors @ user``, then the ``n`` best by ``argpartition``."""

    kind = "exact"

    def __init__(self, item_vectors: np.ndarray) -> None:
        self._vectors = item_vectors[UNKNOWN_ROW + 1 :]  # a view: nothing copied
        self.n_items = int(self._vectors.shape[0])
        self.nbytes = 0

    def search(self, user: np.ndarray, n: int) -> np.ndarray:
        scores = self._vectors @ user
        return _best_first(scores, np.arange(self.n_items), n) + (UNKNOWN_ROW + 1)


class IvfIndex:
    """faiss ``IndexIVFFlat`` over the item vectors with the item rows as ids; ``nprobe`` cells
    are scanned per query (more: better recall, slower)."""

    kind = "ivf"

    def __init__(self, item_vectors: np.ndarray, n_lists: int, nprobe: int, seed: int = 0) -> None:
        import faiss  # only a large catalog needs it

        vectors = np.ascontiguousarray(item_vectors[UNKNOWN_ROW + 1 :], dtype=np.float32)
        n, d = vectors.shape
        n_lists = max(1, min(n_lists, n // 39))  # faiss wants >= 39 training points per list
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, n_lists, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        # k-means on 39 points per cell (faiss's least): the build's cost, seconds at 1M items.
        sample = vectors[np.sort(rng.choice(n, min(n, 39 * n_lists), replace=False))]
        index.cp.seed = seed
        index.train(sample)
        index.add_with_ids(vectors, np.arange(UNKNOWN_ROW + 1, n + 1, dtype=np.int64))
        index.nprobe = min(nprobe, n_lists)
        index.parallel_mode = 0
        self._index = index
        self._quantizer = quantizer  # the index borrows it
        self.n_items = n
        self.n_lists = n_lists
        self.nbytes = int(n * (d * 4 + 8) + n_lists * d * 4)  # codes, ids, centroids

    def search(self, user: np.ndarray, n: int) -> np.ndarray:
        n = min(n, self.n_items)
        if n <= 0:
            return np.empty(0, dtype=np.int64)
        query = np.ascontiguousarray(user, dtype=np.float32).reshape(1, -1)
        _, rows = self._index.search(query, n)
        found: np.ndarray = rows[0]
        return found[found >= 0]  # -1: fewer than n items in the cells probed


def _best_first(scores: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` of ``rows`` with the highest ``scores``, best first."""
    n = min(n, rows.size)
    if n <= 0:
        return np.empty(0, dtype=np.int64)
    part = np.argpartition(-scores, n - 1)[:n]
    order: np.ndarray = rows[part[np.argsort(-scores[part], kind="stable")]]
    return order
