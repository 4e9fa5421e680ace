"""HR@K, NDCG@K, AUC and log loss on candidate lists; the popularity baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.evaluate import Popularity, evaluate, log_loss, ranking_metrics
from training.split import Candidates


def test_positive_ranked_first_scores_one() -> None:
    scores = np.array([[0.9, 0.1, 0.2, 0.3]])
    assert ranking_metrics(scores, k=2) == (1.0, 1.0, 1.0)


def test_rank_sets_hit_and_discount() -> None:
    # Positive is third (0-based rank 2) among four.
    scores = np.array([[0.5, 0.9, 0.8, 0.1]])
    hr, ndcg, auc = ranking_metrics(scores, k=3)
    assert hr == 1.0
    assert ndcg == pytest.approx(1.0 / math.log2(4.0))
    assert auc == pytest.approx(1.0 / 3.0)
    hr, ndcg, _ = ranking_metrics(scores, k=2)
    assert (hr, ndcg) == (0.0, 0.0)


def test_metrics_average_over_users() -> None:
    scores = np.array([[0.9, 0.1, 0.2], [0.1, 0.5, 0.6]])
    hr, ndcg, auc = ranking_metrics(scores, k=1)
    assert hr == 0.5
    assert ndcg == 0.5
    assert auc == 0.5


def test_ties_count_as_the_expected_rank_under_random_order() -> None:
    # A constant scorer is exactly at chance: HR@k = k / candidates.
    constant = np.full((3, 100), 0.5)
    hr, ndcg, auc = ranking_metrics(constant, k=10)
    assert hr == pytest.approx(0.1)
    assert ndcg == pytest.approx(sum(1.0 / math.log2(r + 2.0) for r in range(10)) / 100)
    assert auc == pytest.approx(0.5)
    # One negative above and two tied with the positive: rank 1, 2 or 3 with equal chance.
    scores = np.array([[0.5, 0.9, 0.5, 0.5, 0.1]])
    hr, ndcg, _ = ranking_metrics(scores, k=2)
    assert hr == pytest.approx(1.0 / 3.0)
    assert ndcg == pytest.approx((1.0 / math.log2(3.0)) / 3.0)


def test_ranking_metrics_reject_a_flat_array() -> None:
    with pytest.raises(ValueError, match="score matrix"):
        ranking_metrics(np.array([0.1, 0.2]))


def test_log_loss_labels_the_first_column_positive() -> None:
    p = np.array([[0.8, 0.1, 0.3]])
    expected = -(math.log(0.8) + math.log(0.9) + math.log(0.7)) / 3
    assert log_loss(p) == pytest.approx(expected)
    assert math.isfinite(log_loss(np.array([[0.0, 1.0]])))


def test_evaluate_scores_all_candidates_in_one_call() -> None:
    candidates = Candidates(users=np.array([0, 1]), items=np.array([[3, 0, 1, 2], [0, 1, 2, 3]]))
    calls: list[int] = []

    def scorer(users: np.ndarray, items: np.ndarray) -> np.ndarray:
        calls.append(users.size)
        assert users.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
        return items / 10.0  # higher item index scores higher

    metrics = evaluate(scorer, candidates, k=1)
    assert calls == [8]
    assert metrics.hr == 0.5
    assert metrics.users == 2
    assert set(metrics.as_dict()) == {"hr@1", "ndcg@1", "auc", "log_loss", "users"}


def test_popularity_scores_items_by_training_share() -> None:
    popularity = Popularity(np.array([5, 0, 10]), n_train_users=10)
    np.testing.assert_allclose(popularity(np.array([7, 7, 7]), np.array([2, 0, 1])), [1.0, 0.5, 0])
