"""Building a version's retrieval index while it loads, so that it is ready before it serves.

Runs in the loader thread (a hot swap builds the new version's index while the old one serves).
The build's seconds and the memory it added are logged and kept on :class:`BuiltIndex`, which the
reconciler exports as the ``recserve_retrieval_index_*`` gauges.
"""

from __future__ import annotations

import logging
import resource
import time
from dataclasses import dataclass

from modelrepo import RetrievalVectors
from service.retrieval.index import ExactIndex, IvfIndex, RetrievalIndex

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexSettings:
    """How a model's index is built (from its ``config.json`` ``retrieval`` section)."""

    ann_above_items: int
    """Catalogs with more item rows than this get the approximate index; the rest exact."""
    ann_lists: int
    """Cells of the inverted-file index (0: about sqrt(items))."""
    ann_probes: int
    """Cells scanned per query."""


@dataclass(frozen=True)
class BuiltIndex:
    index: RetrievalIndex
    vectors: RetrievalVectors
    seconds: float
    rss_bytes: int
    """Growth of the process's resident memory over the build (what the index holds)."""


def build_index(vectors: RetrievalVectors, settings: IndexSettings, where: str) -> BuiltIndex:
    """The index for ``vectors``: exact up to ``ann_above_items`` item rows, else IVF."""
    started, rss_before = time.monotonic(), resident_bytes()
    n_items = vectors.n_item_rows - 1
    index: RetrievalIndex
    if n_items <= settings.ann_above_items:
        index = ExactIndex(vectors.item_vectors)
    else:
        lists = settings.ann_lists or max(1, int(n_items**0.5))
        index = IvfIndex(vectors.item_vectors, lists, settings.ann_probes)
    seconds = time.monotonic() - started
    grown = max(0, resident_bytes() - rss_before)
    log.info(
        "%s: %s retrieval index over %d items x %d built in %.2f s, %.0f MiB (resident +%.0f MiB)",
        where,
        index.kind,
        n_items,
        vectors.dim,
        seconds,
        index.nbytes / 2**20,
        grown / 2**20,
    )
    return BuiltIndex(index, vectors, seconds, grown)


def resident_bytes() -> int:
    """The process's resident memory now (0 where /proc cannot tell)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * resource.getpagesize()
