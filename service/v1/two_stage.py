"""Two-stage recommend: retrieve a few hundred candidates from the version's retrieval index,
leave out what the user has (and what the caller excludes or filters), rank the rest.

Which mode serves a request (:func:`serving_mode`): ``candidates`` when the caller sent them (they
are ranked as sent, the index is not asked); else the request's ``mode``; else (auto) two-stage
when the version ships retrieval vectors and its catalog has more items than its config's
``retrieval.two_stage_above_items`` (ranking a whole large catalog costs about a second per
million items), exhaustive otherwise (the whole catalog ranked: the exact answer, cheap enough).

The retrieval stage (:func:`retrieved`) asks the index for ``retrieve_n`` items plus as many as
are left out, drops the left-out and filtered ones and keeps the ``retrieve_n`` best of the rest
(asking again for more when filters leave too few), so that neither a user's long history nor a
selective filter crowds the candidates out. The ranking stage is the exhaustive path's
own, over the survivors: same feeds, same batcher, same tie-break.
"""

from __future__ import annotations

import asyncio
from enum import StrEnum
from typing import TYPE_CHECKING

import numpy as np

from modelrepo import UNKNOWN_ROW
from service.errors import InvalidInput
from service.v1.schemas import RecommendRequest

if TYPE_CHECKING:
    from service.models.served import ServedVersion


class Mode(StrEnum):
    """What served a recommendation (the response's ``mode``)."""

    EXHAUSTIVE = "exhaustive"
    TWO_STAGE = "two_stage"
    CANDIDATES = "candidates"


def serving_mode(version: ServedVersion, request: RecommendRequest, n_items: int) -> Mode:
    """The mode for ``request`` on ``version`` (``n_items``: its catalog's size); a bad
    ``mode`` or ``retrieve_n`` is a 400 naming it, before anything is queued."""
    config = version.config.retrieval
    if request.retrieve_n is not None and request.retrieve_n > config.max_retrieve_n:
        raise InvalidInput(
            f"'retrieve_n' {request.retrieve_n} is above the bound of model '{version.name}' "
            f"({config.max_retrieve_n})"
        )
    if request.candidates is not None:
        return Mode.CANDIDATES
    if request.mode is not None:
        mode = Mode(request.mode)
        if mode is Mode.TWO_STAGE and version.retrieval is None:
            raise InvalidInput(
                f"'mode' two_stage needs retrieval vectors; model '{version.name}' version "
                f"{version.version} ships none (use exhaustive)"
            )
        return mode
    if n_items > config.two_stage_above_items and version.retrieval is not None:
        return Mode.TWO_STAGE
    return Mode.EXHAUSTIVE


async def retrieved(
    version: ServedVersion,
    request: RecommendRequest,
    user_row: int,
    left_out: np.ndarray,
    keep: np.ndarray | None = None,
) -> np.ndarray:
    """Positions in the version's catalog (item row - 1) of the candidates to rank, best
    retrieved first: at most ``retrieve_n`` (at least ``k``), none of ``left_out`` and only
    rows the filters' ``keep`` mask (by item row) keeps.

    The index is asked for ``retrieve_n`` plus the left-out items; when the filters then leave
    fewer than wanted, it is asked again for four times as many, up to the whole catalog, so that
    a selective filter still gets ``k`` items whenever ``k`` survive it."""
    built = version.retrieval
    if built is None:  # serving_mode refuses two_stage first
        raise InvalidInput(f"model '{version.name}' has no retrieval index")
    wanted = max(request.retrieve_n or version.config.retrieval.retrieve_n, request.k)
    n_items = built.index.n_items
    asked = min(wanted + int(left_out.size), n_items)
    user = built.vectors.user_vectors[user_row]  # row 0: the unknown user's vector
    while True:
        # Off the event loop (an exact search over a large catalog takes milliseconds), holding
        # the version open: the caller queues on it without awaiting anything else first.
        with version.held():
            rows = await asyncio.to_thread(built.index.search, user, asked)
        if left_out.size:
            rows = rows[~np.isin(rows, left_out)]
        if keep is not None:
            rows = rows[keep[rows]]
        if rows.size >= wanted or asked >= n_items or keep is None:
            break
        asked = min(4 * asked, n_items)
    positions: np.ndarray = rows[:wanted] - (UNKNOWN_ROW + 1)  # catalog rows are 1 .. n - 1
    return positions
