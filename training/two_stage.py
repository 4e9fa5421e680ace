"""Two-stage recommendation measured offline: does retrieving a few hundred items by a dot
product, then ranking those, lose what ranking the whole catalog finds?

The server's two-stage mode retrieves the top ``retrieve_n`` items of the user's vector against
the item vectors, leaves out what the user has seen, and ranks the survivors with the ranking
model; its exhaustive mode ranks every unseen item. For a sample of held-out users this module
computes, in one pass over blocks of users (both models score the whole catalog per block):

- ``recall_at_10``: the share of the ranking model's exhaustive top 10 that the retrieval top-N
  holds (what two-stage can return of what exhaustive would);
- the leave-one-out figures on the sampled candidates for both modes: in two-stage, a candidate
  the retrieval stage does not return is never ranked, so a held-out item it misses is a miss;
- the full-catalog figures (the held-out item ranked against every item the user has not seen)
  for both modes and for popularity.

Items are dense indices throughout; "seen" is every interaction but the test hold-out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelrepo import History, RetrievalVectors
from training.evaluate import ranking_metrics
from training.split import Split

Scorer = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""Scores of flat dense (user, item) index arrays, higher is better."""

BLOCK_ROWS = 1 << 20
"""(user, item) pairs scored per block: bounds the memory of a large catalog."""
_NOT_RETRIEVED = -1e30  # below every score, above the held-out item when it is not retrieved


@dataclass(frozen=True)
class DotIndex:
    """Retrieval vectors by dense index: ``users`` [n_users, d], ``items`` [n_items, d]."""

    users: np.ndarray
    items: np.ndarray

    @classmethod
    def from_rows(
        cls, vectors: RetrievalVectors, user_rows: np.ndarray, item_rows: np.ndarray
    ) -> DotIndex:
        """The vectors of dense indices whose rows (in the vectors' tables) are given."""
        return cls(vectors.user_vectors[user_rows], vectors.item_vectors[item_rows])

    def scores(self, users: np.ndarray) -> np.ndarray:
        """float32 [len(users), n_items]: every item's dot product with each user."""
        result: np.ndarray = self.users[users] @ self.items.T
        return result


class Seen:
    """Each user's seen items, as a mask over the catalog: the pairs of dense indices held as the
    :class:`modelrepo.History` of their rows (index + 1), as a version ships its histories."""

    def __init__(self, users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> None:
        self.history = History.from_pairs(users + 1, items + 1, n_users + 1, n_items + 1)
        self.n_items = n_items

    @classmethod
    def before_test(cls, split: Split) -> Seen:
        """Training interactions and validation hold-outs: all but the test hold-out."""
        users = np.concatenate([split.train_users, split.validation.users])
        items = np.concatenate([split.train_items, split.validation.items[:, 0]])
        return cls(users, items, split.n_users, split.n_items)

    def mask(self, users: np.ndarray) -> np.ndarray:
        """bool [len(users), n_items]: True where the user has seen the item."""
        indptr = self.history.indptr
        starts = indptr[users + 1]
        counts = indptr[users + 2] - starts
        rows = np.repeat(np.arange(users.size), counts)
        first = np.cumsum(counts) - counts  # where each user's items start among ``rows``
        positions = np.arange(rows.size) - np.repeat(first - starts, counts)
        mask = np.zeros((users.size, self.n_items), dtype=bool)
        mask[rows, self.history.indices[positions] - 1] = True
        return mask


def top(scores: np.ndarray, k: int) -> np.ndarray:
    """int64 [rows, min(k, n)]: the columns of the ``k`` highest scores per row, best first."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    result: np.ndarray = np.take_along_axis(part, order, axis=1)
    return result


def ranker_scores(ranker: Scorer, users: np.ndarray, n_items: int) -> np.ndarray:
    """float64 [len(users), n_items]: the ranking model's score of every item for each user."""
    flat = ranker(
        np.repeat(users, n_items), np.tile(np.arange(n_items, dtype=np.int64), users.size)
    )
    return np.asarray(flat, dtype=np.float64).reshape(users.size, n_items)


def _hits(topk: np.ndarray, targets: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    """Summed HR and NDCG of ``targets`` in ranked lists ``topk`` (``valid``: ranked at all)."""
    found = (topk == targets[:, None]) & valid
    position = np.argmax(found, axis=1)
    hit = found.any(axis=1)
    return float(hit.sum()), float((hit / np.log2(position + 2.0)).sum())


@dataclass
class _Totals:
    """Running sums over blocks of users."""

    recall: float = 0.0
    full: dict[str, list[float]] | None = None
    sampled: dict[str, list[np.ndarray]] | None = None

    def __post_init__(self) -> None:
        self.full = {mode: [0.0, 0.0] for mode in ("exhaustive", "two_stage", "popularity")}
        self.sampled = {mode: [] for mode in ("exhaustive", "two_stage")}


def evaluate_two_stage(
    ranker: Scorer,
    index: DotIndex,
    popularity: np.ndarray,
    split: Split,
    *,
    retrieve_n: int = 200,
    k: int = 10,
    max_users: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The figures of the module docstring on the test users (a seeded sample of ``max_users``
    when given); ``popularity`` scores each item for the baseline."""
    test = split.test
    chosen = np.arange(len(test))
    if max_users is not None and max_users < chosen.size:
        chosen = np.sort(
            np.random.default_rng([seed, 0x2574]).choice(chosen.size, max_users, False)
        )
    seen = Seen.before_test(split)
    totals = _Totals()
    assert totals.full is not None and totals.sampled is not None
    block = max(1, BLOCK_ROWS // split.n_items)
    for start in range(0, chosen.size, block):
        at = chosen[start : start + block]
        users, candidates, targets = test.users[at], test.items[at], test.items[at, 0]
        hidden = seen.mask(users)
        ranked = np.where(hidden, -np.inf, ranker_scores(ranker, users, split.n_items))
        dots = np.where(hidden, -np.inf, index.scores(users))
        retrieved = np.zeros_like(hidden)
        np.put_along_axis(retrieved, top(dots, retrieve_n), True, axis=1)
        retrieved &= ~hidden
        exhaustive = top(ranked, k)
        valid = np.isfinite(np.take_along_axis(ranked, exhaustive, axis=1))
        kept = np.take_along_axis(retrieved, exhaustive, axis=1) & valid
        totals.recall += float((kept.sum(axis=1) / np.maximum(valid.sum(axis=1), 1)).sum())
        two_stage = np.where(retrieved, ranked, -np.inf)
        pop = np.where(hidden, -np.inf, np.broadcast_to(popularity, hidden.shape))
        for mode, scores in (("exhaustive", ranked), ("two_stage", two_stage), ("popularity", pop)):
            lists = top(scores, k)
            found = _hits(lists, targets, np.isfinite(np.take_along_axis(scores, lists, axis=1)))
            totals.full[mode] = [a + b for a, b in zip(totals.full[mode], found, strict=True)]
        listed = np.take_along_axis(ranked, candidates, axis=1)
        totals.sampled["exhaustive"].append(listed)
        in_stage = np.take_along_axis(retrieved, candidates, axis=1)
        missed = np.where(np.arange(candidates.shape[1]) == 0, -np.inf, _NOT_RETRIEVED)
        totals.sampled["two_stage"].append(np.where(in_stage, listed, missed))
    n = max(1, chosen.size)
    sampled = {}
    for mode, parts in totals.sampled.items():
        hr, ndcg, _ = ranking_metrics(np.concatenate(parts), k) if parts else (0.0, 0.0, 0.0)
        sampled[mode] = {f"hr@{k}": hr, f"ndcg@{k}": ndcg}
    full = {mode: {f"hr@{k}": s[0] / n, f"ndcg@{k}": s[1] / n} for mode, s in totals.full.items()}
    return {
        "retrieve_n": retrieve_n,
        "users": int(chosen.size),
        f"recall_at_{k}": totals.recall / n,
        "sampled": sampled,
        "full_catalog": full,
        "protocol": (
            f"recall_at_{k}: share of the ranking model's exhaustive top {k} (unseen items) in "
            f"the retrieval top {retrieve_n}; sampled: the test candidates, an item two-stage "
            "does not retrieve never ranked; full_catalog: the held-out item ranked against "
            "every item the user has not seen"
        ),
    }


def report_lines(figures: dict[str, Any], k: int = 10) -> list[str]:
    """The figures for people: recall, then HR@k of each mode on both protocols."""
    full, sampled = figures["full_catalog"], figures["sampled"]
    hr = f"hr@{k}"
    return [
        f"  recall@{k} of the ranker's top {k} within the retrieval top {figures['retrieve_n']}: "
        f"{figures[f'recall_at_{k}']:.4f} ({figures['users']:,} test users)",
        f"  HR@{k} sampled: exhaustive {sampled['exhaustive'][hr]:.4f}, two-stage "
        f"{sampled['two_stage'][hr]:.4f}; full catalog (unseen items): exhaustive "
        f"{full['exhaustive'][hr]:.4f}, two-stage {full['two_stage'][hr]:.4f}, popularity "
        f"{full['popularity'][hr]:.4f}",
    ]
