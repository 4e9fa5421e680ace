"""The recommendation data plane: raw ids -> rows -> the shared batcher -> top-k or scores."""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from service.models.manager import LoadedVersion
from service.v1.ranking import top_k, top_k_by_id
from service.v1.schemas import RecommendRequest, ScoreRequest


@dataclass(frozen=True)
class Catalog:
    """A version's whole item catalog, computed once: rows, ids and each id's rank in sort order."""

    rows: np.ndarray
    ids: np.ndarray  # object array of str, aligned with rows
    tie_rank: np.ndarray


_catalogs: weakref.WeakKeyDictionary[LoadedVersion, Catalog] = weakref.WeakKeyDictionary()


def catalog_of(version: LoadedVersion) -> Catalog:
    catalog = _catalogs.get(version)
    if catalog is None:
        ids = np.array(version.items.ids, dtype=object)
        catalog = Catalog(version.items.catalog_rows(), ids, _sort_rank(ids))
        _catalogs[version] = catalog
    return catalog


def _sort_rank(ids: np.ndarray) -> np.ndarray:
    """Position of each id in ascending string order (ids are distinct)."""
    rank = np.empty(len(ids), dtype=np.int64)
    rank[np.argsort(ids, kind="stable")] = np.arange(len(ids))
    return rank


@dataclass(frozen=True)
class Recommendation:
    item_ids: list[str]
    scores: list[float]
    unknown_user: bool
    unknown_items: list[str]


async def recommend(version: LoadedVersion, request: RecommendRequest) -> Recommendation:
    """Top-k items for one user over the candidates (default: the whole catalog), best first."""
    user_rows, unknown_users = version.user_rows([request.user_id])
    unknown_items: list[str] = []
    tie_rank: np.ndarray | None = None  # for the catalog, computed once; for candidates, no need
    if request.candidates is None:
        catalog = catalog_of(version)
        rows, ids, tie_rank = catalog.rows, catalog.ids, catalog.tie_rank
    else:
        candidate_ids = list(dict.fromkeys(request.candidates))  # first occurrence wins
        rows, unknown_items = version.item_rows(candidate_ids)
        ids = np.array(candidate_ids, dtype=object)
    if request.exclude:
        excluded_rows, _ = version.items.rows(request.exclude)
        excluded_rows = excluded_rows[excluded_rows != 0]  # unknown excluded ids are ignored
        if excluded_rows.size:
            keep = ~np.isin(rows, excluded_rows)
            rows, ids = rows[keep], ids[keep]
            tie_rank = None if tie_rank is None else tie_rank[keep]
    if rows.size == 0:
        return Recommendation([], [], bool(unknown_users), unknown_items)
    outputs = await version.infer({"user": np.full(rows.shape, user_rows[0]), "item": rows})
    scores = outputs["score"]
    if tie_rank is None:
        best = top_k_by_id(scores, ids, request.k)
    else:
        best = top_k(scores, tie_rank, request.k)
    return Recommendation(
        ids[best].tolist(), scores[best].tolist(), bool(unknown_users), unknown_items
    )


async def score(
    version: LoadedVersion, request: ScoreRequest
) -> tuple[list[float], bool, list[str]]:
    """One score per requested item, in request order; plus which ids were unknown."""
    user_rows, unknown_users = version.user_rows([request.user_id])
    rows, unknown_items = version.item_rows(request.item_ids)
    outputs = await version.infer({"user": np.full(rows.shape, user_rows[0]), "item": rows})
    return outputs["score"].tolist(), bool(unknown_users), unknown_items
