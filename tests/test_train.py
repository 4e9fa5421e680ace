"""The training loop: epoch samples, determinism, early stopping, beating popularity."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest

import training.train as train_module
from training.data import SyntheticSpec, synthetic
from training.evaluate import Metrics, Popularity, evaluate
from training.models import ModelConfig
from training.split import Candidates, NegativeSampler, Split, leave_one_out
from training.train import TrainConfig, epoch_samples, scorer, train

SMALL_MODEL = ModelConfig(kind="mlp", embedding_dim=8, tower=(16, 8))


@pytest.fixture(scope="module")
def small_split() -> Split:
    return leave_one_out(
        synthetic(SyntheticSpec(users=300, items=400, interactions=15_000, factors=4)), seed=0
    )


def test_epoch_samples_hold_every_positive_and_k_fresh_negatives(small_split: Split) -> None:
    s = small_split
    sampler = NegativeSampler(s.train_users, s.train_items, s.n_users, s.n_items)
    rng = np.random.default_rng(0)
    users, items, labels = epoch_samples(s, sampler, rng, 4, unknown_rate=0.0)
    n = s.train_users.size
    assert users.size == items.size == labels.size == 5 * n
    assert labels.sum() == n
    assert users.min() >= 1  # embedding rows: dense index + 1
    positives = sorted(
        zip((users[labels == 1] - 1).tolist(), (items[labels == 1] - 1).tolist(), strict=True)
    )
    assert positives == sorted(zip(s.train_users.tolist(), s.train_items.tolist(), strict=True))
    negatives = labels == 0
    assert not sampler.train.contains(users[negatives] - 1, items[negatives] - 1).any()
    # Shuffled, and the next epoch draws different negatives.
    assert not np.all(labels[:n] == 1)
    _, items2, labels2 = epoch_samples(s, sampler, rng, 4, unknown_rate=0.0)
    assert not np.array_equal(np.sort(items[negatives]), np.sort(items2[labels2 == 0]))


def test_unknown_rate_replaces_that_share_of_ids_with_row_zero(small_split: Split) -> None:
    s = small_split
    sampler = NegativeSampler(s.train_users, s.train_items, s.n_users, s.n_items)
    users, items, _ = epoch_samples(s, sampler, np.random.default_rng(0), 4, unknown_rate=0.05)
    assert np.mean(users == 0) == pytest.approx(0.05, abs=0.01)
    assert np.mean(items == 0) == pytest.approx(0.05, abs=0.01)


def test_same_seed_same_weights(small_split: Split) -> None:
    config = TrainConfig(epochs=2, batch_size=512, seed=7)
    a = train(small_split, SMALL_MODEL, config, quiet=True)
    b = train(small_split, SMALL_MODEL, config, quiet=True)
    c = train(small_split, SMALL_MODEL, TrainConfig(epochs=2, batch_size=512, seed=8), quiet=True)
    for name, value in a.model.params.items():
        np.testing.assert_array_equal(value, b.model.params[name])
    assert any(not np.array_equal(v, c.model.params[k]) for k, v in a.model.params.items())
    assert [r.loss for r in a.history] == [r.loss for r in b.history]


def test_training_beats_popularity_and_trains_the_unknown_rows(small_split: Split) -> None:
    config = TrainConfig(epochs=8, batch_size=256, lr=0.003, patience=8, unknown_rate=0.02)
    result = train(
        small_split,
        ModelConfig(kind="neumf", embedding_dim=16, tower=(32, 16), gmf_dim=16),
        config,
        quiet=True,
    )
    model = evaluate(scorer(result.model), small_split.test)
    popularity = evaluate(
        Popularity(small_split.item_counts(), small_split.n_users), small_split.test
    )
    assert model.hr > popularity.hr + 0.1
    assert model.ndcg > popularity.ndcg + 0.05
    assert result.best_validation is not None
    assert result.history[result.best_epoch - 1].val_ndcg == result.best_validation.ndcg
    # Row 0 moved away from its zero start.
    assert np.abs(result.model.params["gmf_item_emb"][0]).sum() > 0
    # A cold-start user (row 0) gets a popularity-like ranking: popular items on top.
    cold = result.model.predict(
        np.zeros(small_split.n_items, np.int64), np.arange(1, small_split.n_items + 1)
    )
    counts = small_split.item_counts()
    top = np.argsort(-cold)[:20]
    assert counts[top].mean() > 2 * counts.mean()


def test_early_stopping_restores_the_best_epoch(
    small_split: Split, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripted = iter([0.10, 0.30, 0.20, 0.25, 0.40, 0.50])

    def fake_evaluate(score: object, candidates: Candidates, k: int = 10) -> Metrics:
        return Metrics(0.0, next(scripted), 0.5, 1.0, k, len(candidates))

    monkeypatch.setattr(train_module, "evaluate", fake_evaluate)
    # lr 0.001: slow enough that the two-epoch run below keeps its second epoch by validation.
    config = TrainConfig(epochs=6, batch_size=1024, patience=2, lr=0.001)
    best_so_far: list[int] = []
    result = train(small_split, SMALL_MODEL, config, quiet=True, on_best=best_so_far.append)
    assert best_so_far == [1, 2, 2, 2]  # after each epoch, what a refit beside it must keep
    assert result.stopped_early
    assert result.epochs_run == 4
    assert result.best_epoch == 2
    assert result.best_validation is not None
    assert result.best_validation.ndcg == 0.30
    # The weights are those after epoch 2: the same as a two-epoch run with the same seed.
    monkeypatch.undo()
    two = train(small_split, SMALL_MODEL, dataclasses.replace(config, epochs=2), quiet=True)
    for name, value in result.model.params.items():
        np.testing.assert_array_equal(value, two.model.params[name])


def test_sgd_trains_too(small_split: Split) -> None:
    config = TrainConfig(optimizer="sgd", lr=0.5, epochs=3, batch_size=256, patience=3)
    result = train(small_split, SMALL_MODEL, config, quiet=True)
    losses = [record.loss for record in result.history]
    assert losses[-1] < losses[0]


def test_epoch_lines_go_to_the_log_unless_quiet(small_split: Split) -> None:
    config = TrainConfig(epochs=2, batch_size=1024)
    log = io.StringIO()
    result = train(small_split, SMALL_MODEL, config, log=log)
    lines = log.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("epoch 1/2: loss ")
    assert "val HR@10" in lines[0]
    assert "samples/s" in lines[0]
    assert "\r" not in log.getvalue()  # not a terminal: no progress bar
    history = result.history_json()
    assert [e["epoch"] for e in history["epochs"]] == [1, 2]
    quiet = io.StringIO()
    train(small_split, SMALL_MODEL, config, log=quiet, quiet=True)
    assert quiet.getvalue() == ""


def test_invalid_training_configuration_is_refused() -> None:
    with pytest.raises(ValueError):
        TrainConfig(lr=0)
    with pytest.raises(ValueError):
        TrainConfig(unknown_rate=1.0)
