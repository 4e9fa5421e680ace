"""The user's latest items as a side feature of a feature model (``--history-items K``).

A feature model (``dlrm``) trained with ``history_items`` K reads one more user input,
``user_recent_items``: a bag (multi-hot, INT64 ``[N, K]`` padded with 0) of item rows, bound to
the item id vocabulary (``items.txt``), so that a caller names the items by their own ids. The
model embeds it with the item table itself (``training.models.dlrm_graph.feature_table``): the
bag is the mean of the vectors of the items in it, in the space the candidates are scored in, and
it joins the user's vector in the MF head. It carries what a user did lately, which on MovieLens
100K predicts the next item far better than who the user is: a user the model never saw, sending
the items they just rated, is ranked from them (cold start), and a known user's published row
holds their latest items.

Where the bag comes from:

- **training**: each positive reads the K items its user interacted with just before it (by time;
  the split lists each user's positives oldest first), never itself nor anything later, and the
  negatives drawn for that positive read the same bag: the model learns "what follows these items",
  which is the question it answers at serving time, instead of "is this item in the bag";
- **the published table** (``user_features.npz``, and the table validation and test read): each
  user's K latest items of the interactions the model trained on, latest first;
- **a cold-start user** (``--cold-start-users``): the K latest of their interactions before the
  one held out for the test.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from modelrepo import Source
from modelrepo.layout import ITEMS_FILE
from training.models import SideFeature
from training.split import Split

RECENT_ITEMS = "recent_items"
"""The feature's name: the caller's ``user_features`` key."""
HISTORY_INPUT = f"user_{RECENT_ITEMS}"
"""The graph input it is."""


def preceding_items(
    users: NDArray[np.integer], items: NDArray[np.integer], k: int
) -> NDArray[np.int64]:
    """Per interaction, the item rows (dense index + 1) of up to ``k`` interactions of the same
    user just before it, latest first, padded with 0 ([N, k] int64).

    ``users`` and ``items`` are dense indices; each user's interactions must be listed oldest
    first (other users' may come between: the order within a user is what counts).
    """
    n = users.size
    bags = np.zeros((n, k), dtype=np.int64)
    if n == 0 or k == 0:
        return bags
    order = np.argsort(users, kind="stable")
    sorted_users, sorted_items = users[order], items[order].astype(np.int64) + 1
    starts = np.r_[0, np.flatnonzero(sorted_users[1:] != sorted_users[:-1]) + 1]
    position = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    ordered = np.zeros((n, k), dtype=np.int64)
    for lag in range(1, k + 1):
        has = np.flatnonzero(position >= lag)
        ordered[has, lag - 1] = sorted_items[has - lag]
    bags[order] = ordered
    return bags


class LatestItems:
    """Each user's latest item rows, by embedding row: ``rows[u, t]`` is the item of age ``t``
    (0: the latest) of user row ``u``, -1 past the user's history. Row 0 (unknown) has none."""

    def __init__(self, users: np.ndarray, items: np.ndarray, n_users: int, depth: int) -> None:
        """``users``, ``items``: dense indices, each user's in time order (users may interleave:
        a split's hold-outs come after its training positives)."""
        order = np.argsort(users, kind="stable")
        users, items = users[order], items[order]
        after = np.searchsorted(users, users, side="right")
        age = after - 1 - np.arange(users.size)
        keep = age < depth
        self.rows = np.full((n_users + 1, depth), -1, np.int64)
        self.rows[users[keep] + 1, age[keep]] = items[keep] + 1

    @classmethod
    def of(cls, split: Split, depth: int) -> LatestItems:
        return cls(split.train_users, split.train_items, split.n_users, depth)


def history_feature(split: Split, k: int) -> SideFeature:
    """The ``recent_items`` feature of a model trained on ``split``: its table holds each user's
    ``k`` latest training items."""
    table = np.maximum(LatestItems.of(split, k).rows, 0)
    return SideFeature.multi_hot(
        RECENT_ITEMS, Source.USER_TABLE, split.n_items + 1, table, vocabulary=ITEMS_FILE
    )


def with_history(features: Sequence[SideFeature], split: Split, k: int) -> tuple[SideFeature, ...]:
    """``features`` and, for ``k`` > 0, the ``recent_items`` feature of a model trained on
    ``split``."""
    return (*features, history_feature(split, k)) if k > 0 else tuple(features)


def training_bags(split: Split, k: int) -> NDArray[np.int64] | None:
    """Per training positive of ``split``, the bag it trains with; None for ``k`` 0."""
    return preceding_items(split.train_users, split.train_items, k) if k > 0 else None
