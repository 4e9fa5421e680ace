"""Leave-one-out split, candidate sampling and per-epoch negative sampling."""

from __future__ import annotations

import numpy as np
import pytest

import training.split as split_module
from training.data import DataError, SyntheticSpec, parse_csv, synthetic
from training.split import NegativeSampler, PairSet, leave_one_out, sample_distinct


def test_latest_interaction_is_test_and_the_one_before_is_validation() -> None:
    text = (
        "user_id,item_id,timestamp\n"
        "a,i1,10\n"
        "a,i2,30\n"  # latest of a -> test
        "a,i3,20\n"  # second latest -> validation
        "a,i4,5\n"
        "b,i1,7\n"
        "b,i2,7\n"  # tie with the row above: the later row in the file is the latest
        "b,i3,1\n"
        "c,i5,1\n"
        "c,i6,2\n"  # two interactions: a test hold-out only
    )
    data = parse_csv(text)
    s = leave_one_out(data, seed=0, negatives=2)
    item = {name: index for index, name in enumerate(data.item_ids)}
    assert s.test.users.tolist() == [0, 1, 2]
    assert s.test.items[:, 0].tolist() == [item["i2"], item["i2"], item["i6"]]
    assert s.validation.users.tolist() == [0, 1]
    assert s.validation.items[:, 0].tolist() == [item["i3"], item["i1"]]
    train = sorted(zip(s.train_users.tolist(), s.train_items.tolist(), strict=True))
    assert train == [(0, item["i1"]), (0, item["i4"]), (1, item["i3"]), (2, item["i5"])]


def test_negatives_are_distinct_and_never_interacted() -> None:
    data = synthetic(SyntheticSpec(users=150, items=200, interactions=9000, seed=1))
    s = leave_one_out(data, seed=0)
    seen = PairSet(data.users, data.items, data.n_users, data.n_items)
    for candidates in (s.test, s.validation):
        assert candidates.items.shape == (len(candidates), 100)
        negatives = candidates.items[:, 1:]
        users = np.repeat(candidates.users, 99).reshape(-1, 99)
        assert not seen.contains(users, negatives).any()
        for row in candidates.items:
            assert np.unique(row).size == row.size


def test_split_partitions_the_deduplicated_interactions() -> None:
    data = synthetic(SyntheticSpec(users=80, items=300, interactions=3000, seed=2))
    s = leave_one_out(data, seed=5)
    total = s.train_users.size + len(s.test) + len(s.validation)
    assert total == len(data)
    assert s.duplicates_removed == 0
    held = set(zip(s.test.users.tolist(), s.test.items[:, 0].tolist(), strict=True))
    held |= set(zip(s.validation.users.tolist(), s.validation.items[:, 0].tolist(), strict=True))
    train = set(zip(s.train_users.tolist(), s.train_items.tolist(), strict=True))
    assert not held & train
    counts = s.item_counts()
    assert counts.sum() == s.train_users.size
    assert counts.shape == (data.n_items,)


def test_with_holdouts_trains_on_every_deduplicated_interaction() -> None:
    rows = "a,i1,1\na,i2,2\na,i1,3\na,i3,4\nb,i2,1\nb,i3,2\nc,i4,1\n"
    data = parse_csv("user_id,item_id,timestamp\n" + rows)
    s = leave_one_out(data, seed=0, negatives=1)
    everything = s.with_holdouts()
    pairs = sorted(
        zip(everything.train_users.tolist(), everything.train_items.tolist(), strict=True)
    )
    distinct = sorted(set(zip(data.users.tolist(), data.items.tolist(), strict=True)))
    assert pairs == distinct  # a's repeated i1 once; both hold-outs of a and b's test included
    assert len(everything.validation) == len(everything.test) == 0
    assert (everything.n_users, everything.n_items) == (s.n_users, s.n_items)
    assert (len(s.test), len(s.validation)) == (2, 1)
    assert s.train_users.size == len(distinct) - 3  # the split itself is unchanged


def test_split_is_deterministic_by_seed() -> None:
    data = synthetic(SyntheticSpec(users=60, items=150, interactions=2000, seed=0))
    a, b, c = (leave_one_out(data, seed=s) for s in (1, 1, 2))
    np.testing.assert_array_equal(a.test.items, b.test.items)
    np.testing.assert_array_equal(a.validation.items, b.validation.items)
    assert not np.array_equal(a.test.items, c.test.items)


def test_repeated_pairs_keep_only_the_latest() -> None:
    text = "user_id,item_id,timestamp\na,x,1\na,y,2\na,z,3\na,x,4\nb,x,1\nb,y,2\n"
    data = parse_csv(text + "".join(f"c,n{i},{i}\n" for i in range(5)))
    s = leave_one_out(data, seed=0, negatives=2)
    assert s.duplicates_removed == 1
    x = data.item_ids.index("x")
    # a's latest is the repeated x: it is the test item and is no longer in training.
    assert s.test.items[0, 0] == x
    assert x not in s.train_items[s.train_users == 0].tolist()


def test_users_with_too_few_interactions_stay_in_training() -> None:
    text = (
        "user_id,item_id\n"
        + "solo,x\n"
        + "pair,x\npair,y\n"
        + "".join(f"full,n{i}\n" for i in range(6))
    )
    data = parse_csv(text)
    s = leave_one_out(data, seed=0, negatives=2)
    users = {data.user_ids[u] for u in s.test.users.tolist()}
    assert users == {"pair", "full"}
    assert {data.user_ids[u] for u in s.validation.users.tolist()} == {"full"}
    assert s.users_not_evaluated == 1
    solo = data.user_ids.index("solo")
    assert solo in s.train_users.tolist()


def test_no_user_with_a_hold_out_is_an_error() -> None:
    with pytest.raises(DataError, match="enough interactions"):
        leave_one_out(parse_csv("user_id,item_id\na,x\nb,y\n"), seed=0, negatives=1)


def test_sample_distinct_falls_back_to_the_exact_complement(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(split_module, "_ROUNDS", 0)
    exclude = PairSet(np.array([0, 0]), np.array([1, 3]), 1, 6)
    out = sample_distinct(np.random.default_rng(0), np.array([0]), 4, exclude)
    assert sorted(out[0].tolist()) == [0, 2, 4, 5]


def test_negative_sampler_never_returns_a_training_item() -> None:
    rng = np.random.default_rng(0)
    users = rng.integers(0, 50, 2000)
    items = rng.integers(0, 40, 2000)
    sampler = NegativeSampler(users, items, 50, 40)
    negatives = sampler.sample(np.random.default_rng(1), users, 4)
    assert negatives.shape == (2000, 4)
    assert not sampler.train.contains(np.repeat(users, 4), negatives.reshape(-1)).any()
    again = sampler.sample(np.random.default_rng(1), users, 4)
    np.testing.assert_array_equal(negatives, again)


def test_negative_sampler_handles_saturated_users() -> None:
    # User 0 has every item but one; user 1 has every item.
    users = np.array([0, 0, 0, 1, 1, 1, 1])
    items = np.array([0, 1, 2, 0, 1, 2, 3])
    sampler = NegativeSampler(users, items, 2, 4)
    negatives = sampler.sample(np.random.default_rng(0), np.array([0, 1]), 3)
    assert negatives[0].tolist() == [3, 3, 3]
    assert negatives[1].tolist() == [-1, -1, -1]


def test_pair_set_sparse_and_dense_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 30, 300), rng.integers(0, 25, 300)
    dense = PairSet(users, items, 30, 25)
    monkeypatch.setattr(split_module, "DENSE_LIMIT", 0)
    sparse = PairSet(users, items, 30, 25)
    qu, qi = rng.integers(0, 30, 1000), rng.integers(0, 25, 1000)
    np.testing.assert_array_equal(dense.contains(qu, qi), sparse.contains(qu, qi))
    np.testing.assert_array_equal(dense.per_user, sparse.per_user)
    np.testing.assert_array_equal(dense.complement(3), sparse.complement(3))
