"""Recency-weighted positives: a user's latest interactions count more in the loss."""

from __future__ import annotations

import numpy as np
import pytest

from training.cli import build_parser, config_from_args
from training.losses import bce_with_logits
from training.models import ModelConfig
from training.split import Candidates, Split
from training.train import TrainConfig, recency_weights, scorer, train_epochs

GROUP = 10  # items per taste
EARLY, LATE = 6, 4  # a user's positives from the older taste, then from the newer one


def test_weights_grow_with_recency_and_average_one_per_user() -> None:
    users = np.array([3, 3, 3, 1, 1, 3, 7])  # user 3 oldest first, interleaved with others
    weights = recency_weights(users, 1.0)
    assert weights[[0, 1, 2, 5]] == pytest.approx([0.4, 0.8, 1.2, 1.6])
    assert weights[[3, 4]] == pytest.approx([2 / 3, 4 / 3])
    assert weights[6] == pytest.approx(1.0)  # a single positive keeps weight 1
    steep = recency_weights(users, 3.0)
    assert steep[5] > weights[5] and steep[0] < weights[0]
    assert np.all(recency_weights(users, 0.0) == 1.0)


def test_weights_scale_each_samples_loss_and_gradient() -> None:
    logits = np.array([0.5, -1.0, 2.0], np.float32)
    labels = np.array([1.0, 0.0, 1.0], np.float32)
    weights = np.array([2.0, 0.0, 1.0], np.float32)
    loss, grad = bce_with_logits(logits, labels, weights)
    each = [bce_with_logits(logits[i : i + 1], labels[i : i + 1]) for i in range(3)]
    assert loss == pytest.approx(sum(w * e[0] for w, e in zip(weights, each, strict=True)) / 3)
    expected = [w * e[1][0] / 3 for w, e in zip(weights, each, strict=True)]
    assert grad == pytest.approx(np.array(expected), rel=1e-5)
    with pytest.raises(ValueError, match="weights"):
        bce_with_logits(logits, labels, weights[:2])


def _two_taste_split(users: int, seed: int) -> Split:
    """Every user first likes ``EARLY`` items of the old taste (items ``0..GROUP-1``), then
    ``LATE`` of the new one (the next ``GROUP``); a third group nobody likes fills the negatives.
    Counted, the old taste is the more popular; weighted by recency, the new one."""
    rng = np.random.default_rng(seed)
    rows_users, rows_items = [], []
    for user in range(users):
        history = [rng.choice(GROUP, EARLY, replace=False)]
        history.append(GROUP + rng.choice(GROUP, LATE, replace=False))
        items = np.concatenate(history)  # oldest first, as the split orders them
        rows_users.append(np.full(items.size, user))
        rows_items.append(items)
    empty = Candidates(users=np.empty(0, np.int64), items=np.empty((0, 2), np.int64))
    return Split(
        n_users=users,
        n_items=3 * GROUP,
        train_users=np.concatenate(rows_users).astype(np.int64),
        train_items=np.concatenate(rows_items).astype(np.int64),
        validation=empty,
        test=empty,
    )


def _share_preferring_the_newer_taste(split: Split, recency_weight: float) -> float:
    """Trained on ``split``: the share of users whose best unseen item is of their newer taste."""
    config = TrainConfig(lr=0.01, lr_decay=1.0, unknown_rate=0.0, recency_weight=recency_weight)
    model, _ = train_epochs(split, ModelConfig(kind="mf", embedding_dim=2, l2=1e-2), config, 20)
    score = scorer(model)
    newer = []
    for user in range(split.n_users):
        seen = split.train_items[split.train_users == user]
        unseen = np.setdiff1d(np.arange(2 * GROUP), seen)
        best = unseen[np.argmax(score(np.full(unseen.size, user), unseen))]
        newer.append(best >= GROUP)
    return float(np.mean(newer))


def test_recency_weighting_ranks_the_later_taste_first() -> None:
    split = _two_taste_split(users=200, seed=0)
    assert _share_preferring_the_newer_taste(split, 0.0) < 0.1  # more positives: the old taste
    assert _share_preferring_the_newer_taste(split, 3.0) > 0.9


def test_the_flag_reaches_the_configuration_and_is_range_checked() -> None:
    parser = build_parser()
    args = parser.parse_args(["--data", "synthetic", "--model", "m", "--recency-weight", "2"])
    assert config_from_args(args).train.recency_weight == 2.0
    args = parser.parse_args(["--data", "synthetic", "--model", "m", "--recency-weight", "-1"])
    with pytest.raises(ValueError, match="--recency-weight must be"):
        config_from_args(args)
    with pytest.raises(ValueError, match="recency_weight"):
        TrainConfig(recency_weight=float("nan"))
