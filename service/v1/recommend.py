"""The recommendation data plane: raw ids -> rows -> the shared batcher -> top-k or scores.

What ``/v1`` feeds a version is read from its signature (:class:`Feeding`): the input that takes
the request's user, the input that takes the candidate item (ids through each input's vocabulary)
and the output it ranks by. A model with an input whose value comes from elsewhere (a feature
table, the request's context) is not served by ``/v1`` yet; V2 ``infer`` serves it.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from modelrepo import UNKNOWN_ROW, InputSpec, Source, Vocabulary
from service.errors import InvalidInput
from service.v1.ranking import top_k, top_k_by_id
from service.v1.schemas import RecommendRequest, ScoreRequest

if TYPE_CHECKING:
    from service.models.served import ServedVersion

_SERVED_SOURCES = {Source.USER: "the request's user", Source.ITEM: "the candidate item"}
_NOT_YET = "/v1 cannot serve it yet (V2 infer can)"


class Catalog:
    """A version's whole item catalog, computed once: rows, ids and each id's rank in sort order."""

    def __init__(self, items: Vocabulary) -> None:
        self.rows = items.catalog_rows()
        self.ids = np.array(items.ids, dtype=object)  # aligned with rows
        self.tie_rank = _sort_rank(self.ids)


def _sort_rank(ids: np.ndarray) -> np.ndarray:
    """Position of each id in ascending string order (ids are distinct)."""
    rank = np.empty(len(ids), dtype=np.int64)
    rank[np.argsort(ids, kind="stable")] = np.arange(len(ids))
    return rank


class Feeding:
    """How ``/v1`` feeds one version: its user input, its item input, the output it ranks by."""

    def __init__(self, version: ServedVersion) -> None:
        signature = version.signature
        where = f"model '{version.name}' version {version.version}"
        for spec in signature.inputs:
            if spec.source not in _SERVED_SOURCES:
                raise InvalidInput(
                    f"input '{spec.name}' of {where} takes its value from the {spec.source}; "
                    + _NOT_YET
                )
        user, item = signature.one_from(Source.USER), signature.one_from(Source.ITEM)
        if user is None or item is None:
            missing = _SERVED_SOURCES[Source.USER if user is None else Source.ITEM]
            raise InvalidInput(f"{where} has no input for {missing}; {_NOT_YET}")
        self.user: InputSpec = user
        self.item: InputSpec = item
        self.score = signature.score
        self.items = version.vocabulary(self.item)  # never the version: the cache holds this

    @cached_property
    def catalog(self) -> Catalog:
        return Catalog(self.items)

    def feeds(self, user_row: np.int64, item_rows: np.ndarray) -> dict[str, np.ndarray]:
        """One user against many items: the user's row repeated beside each item's row."""
        return {self.user.name: np.full(item_rows.shape, user_row), self.item.name: item_rows}


_feedings: weakref.WeakKeyDictionary[ServedVersion, Feeding] = weakref.WeakKeyDictionary()


def feeding_of(version: ServedVersion) -> Feeding:
    """The version's :class:`Feeding`, read from its signature once; 400 if /v1 cannot serve it."""
    feeding = _feedings.get(version)
    if feeding is None:
        feeding = _feedings[version] = Feeding(version)
    return feeding


@dataclass(frozen=True)
class Recommendation:
    item_ids: list[str]
    scores: list[float]
    unknown_user: bool
    unknown_items: list[str]


async def recommend(version: ServedVersion, request: RecommendRequest) -> Recommendation:
    """Top-k items for one user over the candidates (default: the whole catalog), best first."""
    feeding = feeding_of(version)
    user_rows, unknown_users = version.rows(feeding.user, [request.user_id])
    unknown_items: list[str] = []
    tie_rank: np.ndarray | None = None  # for the catalog, computed once; for candidates, no need
    if request.candidates is None:
        catalog = feeding.catalog
        rows, ids, tie_rank = catalog.rows, catalog.ids, catalog.tie_rank
    else:
        candidate_ids = list(dict.fromkeys(request.candidates))  # first occurrence wins
        rows, unknown_items = version.rows(feeding.item, candidate_ids)
        ids = np.array(candidate_ids, dtype=object)
    if request.exclude:
        excluded_rows, _ = feeding.items.rows(request.exclude)  # not counted as unknown ids
        excluded_rows = excluded_rows[excluded_rows != UNKNOWN_ROW]  # unknown ones are ignored
        if excluded_rows.size:
            keep = ~np.isin(rows, excluded_rows)
            rows, ids = rows[keep], ids[keep]
            tie_rank = None if tie_rank is None else tie_rank[keep]
    if rows.size == 0:
        return Recommendation([], [], bool(unknown_users), unknown_items)
    outputs = await version.infer(feeding.feeds(user_rows[0], rows))
    scores = outputs[feeding.score]
    if tie_rank is None:
        best = top_k_by_id(scores, ids, request.k)
    else:
        best = top_k(scores, tie_rank, request.k)
    return Recommendation(
        ids[best].tolist(), scores[best].tolist(), bool(unknown_users), unknown_items
    )


async def score(
    version: ServedVersion, request: ScoreRequest
) -> tuple[list[float], bool, list[str]]:
    """One score per requested item, in request order; plus which ids were unknown."""
    feeding = feeding_of(version)
    user_rows, unknown_users = version.rows(feeding.user, [request.user_id])
    rows, unknown_items = version.rows(feeding.item, request.item_ids)
    outputs = await version.infer(feeding.feeds(user_rows[0], rows))
    return outputs[feeding.score].tolist(), bool(unknown_users), unknown_items
