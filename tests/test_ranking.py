"""Top-k by argpartition agrees with a full sort, ties broken by rank."""

from __future__ import annotations

import numpy as np
import pytest

from service.v1.ranking import top_k


def full_sort(scores: np.ndarray, tie_rank: np.ndarray, k: int) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: (-scores[i], tie_rank[i]))[:k]


@pytest.mark.parametrize("seed", range(20))
def test_matches_a_full_sort_with_many_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    scores = rng.integers(0, 8, n).astype(np.float32) / 8  # few distinct values: many ties
    tie_rank = rng.permutation(n)
    k = int(rng.integers(1, n + 5))
    assert top_k(scores, tie_rank, k).tolist() == full_sort(scores, tie_rank, k)


def test_ties_at_the_cut_are_decided_by_rank_not_by_position() -> None:
    scores = np.array([0.5, 0.9, 0.5, 0.5, 0.1], dtype=np.float32)
    tie_rank = np.array([3, 0, 1, 2, 4])
    assert top_k(scores, tie_rank, 2).tolist() == [1, 2]


def test_empty_and_k_larger_than_n() -> None:
    assert top_k(np.empty(0, np.float32), np.empty(0, np.int64), 5).tolist() == []
    scores = np.array([0.2, 0.7], dtype=np.float32)
    assert top_k(scores, np.array([0, 1]), 10).tolist() == [1, 0]
