"""Top-k by argpartition agrees with a full sort, ties broken by rank."""

from __future__ import annotations

import numpy as np
import pytest

from service.v1.ranking import contenders, top_k, top_k_by_id


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


@pytest.mark.parametrize("seed", range(20))
def test_by_id_matches_a_full_sort_by_score_then_id(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    scores = rng.integers(0, 8, n).astype(np.float32) / 8
    ids = np.array([f"i{v}" for v in rng.permutation(n)], dtype=object)
    k = int(rng.integers(1, n + 5))
    expected = sorted(range(n), key=lambda i: (-scores[i], ids[i]))[:k]
    assert top_k_by_id(scores, ids, k).tolist() == expected


def test_by_id_compares_ids_as_strings() -> None:
    scores = np.array([0.5, 0.5, 0.5, 0.9], dtype=np.float32)
    ids = np.array(["10", "9", "100", "z"], dtype=object)
    assert top_k_by_id(scores, ids, 3).tolist() == [3, 0, 2]
    assert top_k_by_id(scores[:0], ids[:0], 3).tolist() == []


def test_contenders_keep_every_row_tied_with_the_kth_best() -> None:
    scores = np.array([0.1, 0.5, 0.9, 0.5, 0.5, 0.2], dtype=np.float32)
    assert contenders(scores, 2).tolist() == [1, 2, 3, 4]
    assert contenders(scores, 1).tolist() == [2]
    assert contenders(scores, 0).tolist() == []
