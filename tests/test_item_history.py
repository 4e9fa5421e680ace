"""The user's latest items as a feature: each training positive reads the items its user had just
before it (never itself, never later ones), its negatives read the same bag, the published table
holds each user's latest items, and a cold-start user's bag is what they did before the test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelrepo import Role, Source
from modelrepo.layout import ITEMS_FILE
from training.cli import main
from training.cold_start import ColdUsers
from training.exits import EXIT_USAGE
from training.item_history import (
    HISTORY_INPUT,
    history_feature,
    preceding_items,
    training_bags,
)
from training.models import DLRM, ModelConfig, build_model
from training.split import Candidates, NegativeSampler, Split
from training.train import weighted_epoch_samples


def _split(users: list[int], items: list[int], n_users: int, n_items: int) -> Split:
    empty = Candidates(np.zeros(0, np.int64), np.zeros((0, 100), np.int64))
    return Split(
        n_users=n_users, n_items=n_items,
        train_users=np.array(users, np.int64), train_items=np.array(items, np.int64),
        validation=empty, test=empty, duplicates_removed=0, users_not_evaluated=0,
    )  # fmt: skip


def test_each_interaction_reads_the_items_just_before_it_latest_first() -> None:
    # Users interleave (a split's hold-outs come after the training positives); within a user the
    # order is time.
    users = np.array([0, 0, 1, 0, 1, 0, 2])
    items = np.array([5, 3, 7, 9, 2, 4, 1])
    bags = preceding_items(users, items, 2)
    # Rows are dense index + 1; 0 pads.
    expected = [[0, 0], [6, 0], [0, 0], [4, 6], [8, 0], [10, 4], [0, 0]]
    np.testing.assert_array_equal(bags, expected)
    assert preceding_items(users, items, 0).shape == (7, 0)


def test_a_bag_never_holds_its_own_interaction_nor_a_later_one() -> None:
    rng = np.random.default_rng(0)
    users = np.sort(rng.integers(0, 30, 600))
    items = rng.permutation(np.tile(np.arange(300), 2))[:600]  # an item may repeat per user
    k = 4
    bags = preceding_items(users, items, k)
    for at in range(users.size):
        mine = np.flatnonzero(users[:at] == users[at])  # earlier interactions of the same user
        expected = (items[mine[::-1][:k]] + 1).tolist()
        assert bags[at].tolist() == expected + [0] * (k - len(expected))


def test_the_published_table_holds_each_users_latest_items() -> None:
    split = _split([0, 0, 0, 2, 0, 2], [1, 2, 3, 4, 5, 6], n_users=4, n_items=8)
    feature = history_feature(split, 3)
    assert feature.name == HISTORY_INPUT and feature.role is Role.MULTI_HOT
    assert feature.source is Source.USER_TABLE and feature.vocabulary == ITEMS_FILE
    assert feature.n_rows == 9  # every item row: the categories are the item ids
    assert feature.table is not None
    # Row 0 (unknown) and user 1 (no interactions) hold empty bags.
    np.testing.assert_array_equal(feature.table, [[0, 0, 0], [6, 4, 3], [0, 0, 0], [7, 5, 0],
                                                  [0, 0, 0]])  # fmt: skip
    spec = feature.input_spec()
    assert spec.caller == "may" and spec.feature == "recent_items"


def test_negatives_read_the_bag_of_the_positive_they_were_drawn_for() -> None:
    rng = np.random.default_rng(1)
    users = np.repeat(np.arange(20), 8)
    items = np.concatenate([rng.choice(60, 8, replace=False) for _ in range(20)])
    split = _split(users.tolist(), items.tolist(), n_users=20, n_items=60)
    sampler = NegativeSampler(split.train_users, split.train_items, 20, 60)
    sample_users, sample_items, labels, _, origins = weighted_epoch_samples(
        split, sampler, np.random.default_rng(2), 3, 0.0, None
    )
    bags = training_bags(split, 5)
    assert bags is not None
    # Every sample's origin is a positive of the same user; a positive is its own origin.
    np.testing.assert_array_equal(split.train_users[origins] + 1, sample_users)
    positive = labels == 1.0
    np.testing.assert_array_equal(split.train_items[origins[positive]] + 1, sample_items[positive])
    assert np.bincount(origins, minlength=users.size).min() == 4  # itself and 3 negatives
    # No sample's bag holds the item it scores when that is the positive's own item.
    assert not (bags[origins[positive]] == sample_items[positive, None]).any()
    assert training_bags(split, 0) is None


def test_training_feeds_the_bags_per_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop passes each sample's bag to the model, not the user's row of the table."""
    from training import train as train_module

    users = np.repeat(np.arange(6), 5)
    items = np.tile(np.arange(5), 6) + np.repeat(np.arange(6), 5)
    split = _split(users.tolist(), items.tolist(), n_users=6, n_items=12)
    config = ModelConfig(kind="dlrm", embedding_dim=4, tower=(4,), bottom=(), history_items=2)
    seen: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    real = train_module.train_step

    def spy(model, optimizer, u, i, labels, rng, weights=None, sample_features=None):  # type: ignore[no-untyped-def]
        assert sample_features is not None
        seen.append((u, i, sample_features[HISTORY_INPUT]))
        return real(model, optimizer, u, i, labels, rng, weights, sample_features)

    monkeypatch.setattr(train_module, "train_step", spy)
    loop = train_module.EpochLoop(
        split, config, train_module.TrainConfig(epochs=1, negatives=2, unknown_rate=0.0)
    )
    assert isinstance(loop.model, DLRM)
    loop.run_epoch(1, quiet=True, stream=None)  # type: ignore[arg-type]
    fed_users = np.concatenate([u for u, _, _ in seen])
    fed_bags = np.concatenate([b for _, _, b in seen])
    bags = preceding_items(split.train_users, split.train_items, 2)
    # Each fed bag is the bag of one of that user's positives, and the first positive's (empty)
    # bag is fed too: the table's row (the user's latest items) would never be empty.
    for user, bag in zip(fed_users.tolist(), fed_bags.tolist(), strict=True):
        assert bag in bags[split.train_users == user - 1].tolist()
    assert (fed_bags == 0).all(axis=1).any()


def test_a_cold_users_bag_is_what_they_did_before_the_held_out_interaction() -> None:
    cold = ColdUsers(
        ids=("a", "b"),
        users=np.array([0, 0, 1, 0, 0, 1]),
        items=("i1", "i2", "i3", "gone", "i4", "i2"),
        timestamps=np.array([1, 2, 3, 3, 9, 5]),
        fraction=0.1,
    )
    item_ids = ["i1", "i2", "i3", "i4"]
    bags = cold.latest_before_test(item_ids, 2)
    # a: i1, i2, gone (unknown to the model: skipped), i4 (the test) -> i2, i1; b: i3 before i2.
    np.testing.assert_array_equal(bags, [[2, 1], [3, 0]])


def test_only_a_feature_model_reads_the_history() -> None:
    with pytest.raises(ValueError, match="history_items"):
        ModelConfig(kind="dlrm", history_items=-1)
    split = _split([0, 0, 1], [1, 2, 3], n_users=2, n_items=4)
    model = build_model(ModelConfig(kind="mf", embedding_dim=4), 3, 5, 0)
    with pytest.raises(ValueError, match="takes no side features"):
        model.forward(
            np.array([1]), np.array([1]), sample_features={HISTORY_INPUT: np.zeros((1, 2))}
        )
    dlrm = build_model(ModelConfig(kind="dlrm", embedding_dim=4, tower=(4,)), 3, 5, 0,
                       (history_feature(split, 2),))  # fmt: skip
    with pytest.raises(ValueError, match="not table features"):
        dlrm.forward(np.array([1]), np.array([1]), sample_features={"user_age": np.zeros((1, 1))})
    with pytest.raises(ValueError, match=HISTORY_INPUT):
        dlrm.forward(
            np.array([1]), np.array([1]), sample_features={HISTORY_INPUT: np.full((1, 2), 9)}
        )


def test_the_history_needs_the_feature_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--data", "synthetic", "--model", "m", "--repository", str(tmp_path), "--kind", "mf",
            "--history-items", "5"]  # fmt: skip
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "--history-items needs --kind dlrm" in err and err.count("\n") == 1
