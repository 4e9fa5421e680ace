"""The recommendation data plane: raw ids -> rows -> the shared batcher -> top-k or scores.

What ``/v1`` feeds a version is read from its signature (:class:`Feeding`): the input that takes
the request's user, the input that takes the candidate item (ids through each input's vocabulary)
and the output it ranks by. A feature model's other inputs (feature tables, the request's
``user_features`` and ``context``) are filled in by :mod:`service.v1.features`. A model without a
user or an item input is not served by ``/v1``; V2 ``infer`` serves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from modelrepo import UNKNOWN_ROW, InputSpec, Source, Vocabulary
from service.errors import InvalidInput
from service.v1.feature_values import Encoded
from service.v1.features import SideInputs, sent_values, side_feeds, side_inputs
from service.v1.filters import keep_mask, require_survivors
from service.v1.per_version import PerVersion
from service.v1.ranking import top_k, top_k_by_id
from service.v1.schemas import RecommendRequest, ScoreRequest
from service.v1.two_stage import Mode, retrieved, serving_mode

if TYPE_CHECKING:
    from service.models.served import ServedVersion

_NO_ROWS = np.empty(0, dtype=np.int64)
_SERVED_SOURCES = {Source.USER: "the request's user", Source.ITEM: "the candidate item"}
_NOT_YET = "/v1 cannot serve it yet (V2 infer can)"


class Catalog:
    """A version's whole item catalog, computed once: rows, ids, each id's rank in sort order and
    a feature model's item-side input tensors over the whole catalog."""

    def __init__(self, items: Vocabulary, side: SideInputs | None = None) -> None:
        self.rows = items.catalog_rows()
        self.ids = np.array(items.ids, dtype=object)  # aligned with rows
        self.tie_rank = _sort_rank(self.ids)
        self.features = {} if side is None else side.items(self.rows)  # aligned with rows


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
        user, item = signature.one_from(Source.USER), signature.one_from(Source.ITEM)
        if user is None or item is None:
            missing = _SERVED_SOURCES[Source.USER if user is None else Source.ITEM]
            raise InvalidInput(f"{where} has no input for {missing}; {_NOT_YET}")
        self.user: InputSpec = user
        self.item: InputSpec = item
        self.score = signature.score
        self.items = version.vocabulary(self.item)  # never the version: the cache holds this
        self.side = side_inputs(version, where)  # None: the two ids only
        self.where = where

    @cached_property
    def catalog(self) -> Catalog:
        return Catalog(self.items, self.side)

    def sent(
        self, version: ServedVersion, request: RecommendRequest | ScoreRequest
    ) -> Encoded | None:
        """The request's ``user_features`` and ``context``, checked before anything is queued."""
        return sent_values(self.side, version, request.user_features, request.context, self.where)

    def feeds(
        self,
        user_row: np.int64,
        item_rows: np.ndarray,
        sent: Encoded | None = None,
        items: dict[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """One user against many items: the user's row repeated beside each item's row, and a
        feature model's side inputs (``items``: the item-side ones, already gathered)."""
        feeds = {self.user.name: np.full(item_rows.shape, user_row), self.item.name: item_rows}
        if self.side is not None:
            feeds.update(side_feeds(self.side, int(user_row), item_rows, sent, items))
        return feeds


feeding_of = PerVersion(Feeding)
"""The version's :class:`Feeding`, read from its signature once; 400 if /v1 cannot serve it."""


@dataclass(frozen=True)
class Recommendation:
    item_ids: list[str]
    scores: list[float]
    unknown_user: bool
    unknown_items: list[str]
    mode: Mode = Mode.EXHAUSTIVE


async def recommend(version: ServedVersion, request: RecommendRequest) -> Recommendation:
    """Top-k items for one user over the candidates (default: the whole catalog), best first."""
    feeding = feeding_of(version)
    sent = feeding.sent(version, request)
    keep = keep_mask(version, request.filters)  # by item row; None: no filters
    mode = serving_mode(version, request, feeding.items.n_rows - 1)
    user_rows, unknown_users = version.rows(feeding.user, [request.user_id])
    unknown_items: list[str] = []
    tie_rank: np.ndarray | None = None  # for the catalog, computed once; for candidates, no need
    items: dict[str, np.ndarray] | None = None  # the catalog's item-side features, built once
    if request.candidates is None:
        catalog = feeding.catalog
        rows, ids, tie_rank, items = catalog.rows, catalog.ids, catalog.tie_rank, catalog.features
    else:
        candidate_ids = list(dict.fromkeys(request.candidates))  # first occurrence wins
        rows, unknown_items = version.rows(feeding.item, candidate_ids)
        ids = np.array(candidate_ids, dtype=object)
    if keep is not None:
        require_survivors(keep, None if request.candidates is None else rows, feeding.where)
    kept: np.ndarray | None = None  # positions in ``ids`` of the rows left; None: all of them
    left_out = _left_out(version, feeding, request, int(user_rows[0]))
    if mode is Mode.TWO_STAGE:  # the retrieved candidates, positions in the catalog
        kept = await retrieved(version, request, int(user_rows[0]), left_out, keep)
    elif left_out.size or keep is not None:
        kept = _surviving(rows, left_out, feeding.items.n_rows, keep)
    if kept is not None:
        rows = rows[kept]  # ``ids`` stays whole: a million-item object array is slow to copy
        tie_rank = None if tie_rank is None else tie_rank[kept]
        items = None  # gathered for the rows left
    if rows.size == 0:
        return Recommendation([], [], bool(unknown_users), unknown_items, mode)
    outputs = await version.infer_built(feeding.feeds(user_rows[0], rows, sent, items))
    scores = outputs[feeding.score]
    if tie_rank is None:
        best = top_k_by_id(scores, ids if kept is None else ids[kept], request.k)
    else:
        best = top_k(scores, tie_rank, request.k)
    picked = best if kept is None else kept[best]
    return Recommendation(
        ids[picked].tolist(), scores[best].tolist(), bool(unknown_users), unknown_items, mode
    )


def _left_out(
    version: ServedVersion, feeding: Feeding, request: RecommendRequest, user_row: int
) -> np.ndarray:
    """Item rows never returned: the caller's ``exclude`` (unknown ids ignored, not counted) and,
    unless ``exclude_seen`` is off, the user's training history (the unknown user has none)."""
    rows = _NO_ROWS
    if request.exclude:
        rows, _ = feeding.items.rows(request.exclude)
        rows = rows[rows != UNKNOWN_ROW]  # row 0 would drop unknown candidates
    history = version.history if request.exclude_seen else None
    if history is not None:
        rows = np.concatenate([rows, history.items_of(user_row)])
    return rows


def _surviving(
    rows: np.ndarray, left_out: np.ndarray, n_rows: int, keep: np.ndarray | None = None
) -> np.ndarray:
    """Positions of ``rows`` not in ``left_out`` and kept by the filters' ``keep`` (a fresh mask
    by item row, changed here), through a table over every item row: one pass over the rows and
    no sort (the mask costs a fifth of ``np.isin``'s at a million items)."""
    kept = np.ones(n_rows, dtype=bool) if keep is None else keep
    kept[left_out] = False
    return np.flatnonzero(kept[rows])


async def score(
    version: ServedVersion, request: ScoreRequest
) -> tuple[list[float], bool, list[str]]:
    """One score per requested item, in request order; plus which ids were unknown."""
    feeding = feeding_of(version)
    sent = feeding.sent(version, request)
    user_rows, unknown_users = version.rows(feeding.user, [request.user_id])
    rows, unknown_items = version.rows(feeding.item, request.item_ids)
    outputs = await version.infer_built(feeding.feeds(user_rows[0], rows, sent))
    return outputs[feeding.score].tolist(), bool(unknown_users), unknown_items
