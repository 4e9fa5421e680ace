"""Ranking metrics on leave-one-out candidate lists, and the popularity baseline.

Each list holds one held-out positive (column 0) and sampled negatives. HR@K and NDCG@K are the
expected values under random tie-breaking, so a constant scorer gets exactly chance level; AUC is
the per-user fraction of negatives scored below the positive (ties count half), averaged over
users; log loss is the binary cross-entropy over every (user, candidate) pair.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from training.split import Candidates

Scorer = Callable[[np.ndarray, np.ndarray], np.ndarray]
EPS = 1e-7


@dataclass(frozen=True)
class Metrics:
    hr: float
    ndcg: float
    auc: float
    log_loss: float
    k: int
    users: int

    def as_dict(self) -> dict[str, float | int]:
        values = asdict(self)
        return {
            f"hr@{self.k}": values["hr"],
            f"ndcg@{self.k}": values["ndcg"],
            "auc": values["auc"],
            "log_loss": values["log_loss"],
            "users": values["users"],
        }


def ranking_metrics(scores: np.ndarray, k: int = 10) -> tuple[float, float, float]:
    """HR@k, NDCG@k and AUC of score matrix [users, 1 + negatives], positive in column 0."""
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(f"need a [users, 1 + negatives] score matrix, got {scores.shape}")
    if scores.shape[0] == 0:
        return 0.0, 0.0, 0.0
    positive = scores[:, :1]
    negatives = scores[:, 1:]
    greater = np.count_nonzero(negatives > positive, axis=1)
    ties = np.count_nonzero(negatives == positive, axis=1)
    # The positive's rank is uniform over greater .. greater + ties (0-based).
    gain = np.concatenate(([0.0], np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))))
    low = np.minimum(greater, k)
    high = np.minimum(greater + ties + 1, k)
    hr = (high - low) / (ties + 1.0)
    ndcg = (gain[high] - gain[low]) / (ties + 1.0)
    auc = (negatives.shape[1] - greater - 0.5 * ties) / negatives.shape[1]
    return float(hr.mean()), float(ndcg.mean()), float(auc.mean())


def log_loss(probabilities: np.ndarray) -> float:
    """Mean binary cross-entropy of [users, 1 + negatives] probabilities, positive in column 0."""
    p = np.clip(probabilities.astype(np.float64), EPS, 1.0 - EPS)
    labels = np.zeros(p.shape)
    labels[:, 0] = 1.0
    loss = -(labels * np.log(p) + (1.0 - labels) * np.log1p(-p))
    return float(loss.mean()) if loss.size else 0.0


def evaluate(scorer: Scorer, candidates: Candidates, k: int = 10) -> Metrics:
    """Score every candidate in one batched call and compute the metrics.

    ``scorer`` takes flat dense (user, item) index arrays and returns probabilities.
    """
    users, items = candidates.pairs()
    probabilities = np.asarray(scorer(users, items), dtype=np.float64)
    matrix = probabilities.reshape(candidates.items.shape)
    hr, ndcg, auc = ranking_metrics(matrix, k)
    return Metrics(hr, ndcg, auc, log_loss(matrix), k, len(candidates))


class Popularity:
    """Scores an item by the fraction of training users who interacted with it."""

    def __init__(self, item_counts: np.ndarray, n_train_users: int) -> None:
        self.probability = item_counts.astype(np.float64) / max(1, n_train_users)

    def __call__(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        result: np.ndarray = self.probability[items]
        return result
