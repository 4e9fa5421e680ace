"""Leave-one-out split (He et al. 2017) and negative sampling.

Everything here works in dense indices (0-based into the vocabularies); embedding rows are
``dense + 1``. Per user, interactions are ordered by timestamp, ties by source order; repeated
(user, item) pairs keep only their latest occurrence. The latest interaction is the test hold-out,
the one before it the validation hold-out, each ranked against items the user never interacted with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.data import DataError, Interactions

DENSE_LIMIT = 1 << 26  # pair sets up to this many cells are a dense boolean table
_ROUNDS = 32  # rejection rounds before falling back to exact sampling from the complement


class PairSet:
    """Membership of (user, item) pairs, vectorised."""

    def __init__(self, users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> None:
        self.n_users = n_users
        self.n_items = n_items
        keys = np.unique(users.astype(np.int64) * n_items + items.astype(np.int64))
        self._dense: np.ndarray | None = None
        self._keys: np.ndarray | None = None
        if n_users * n_items <= DENSE_LIMIT:
            table = np.zeros(n_users * n_items, dtype=bool)
            table[keys] = True
            self._dense = table
        else:
            self._keys = keys
        self.per_user = np.bincount(keys // n_items, minlength=n_users).astype(np.int64)

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users.astype(np.int64) * self.n_items + items.astype(np.int64)
        if self._dense is not None:
            result: np.ndarray = self._dense[keys]
            return result
        assert self._keys is not None
        pos = np.searchsorted(self._keys, keys)
        pos = np.minimum(pos, self._keys.size - 1)
        found: np.ndarray = self._keys[pos] == keys
        return found

    def complement(self, user: int) -> np.ndarray:
        """Items ``user`` is not paired with, ascending."""
        every = np.arange(self.n_items, dtype=np.int64)
        mask = self.contains(np.full(self.n_items, user, np.int64), every)
        result: np.ndarray = every[~mask]
        return result


@dataclass(frozen=True)
class Candidates:
    """Held-out positives, each with sampled negatives: ``items[:, 0]`` is the positive."""

    users: np.ndarray  # int64 [n]
    items: np.ndarray  # int64 [n, 1 + negatives]

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Flat (user, item) arrays, row-major over the candidate matrix."""
        width = self.items.shape[1]
        return np.repeat(self.users, width), self.items.reshape(-1)


@dataclass(frozen=True)
class Split:
    """Training positives and the validation and test candidate lists."""

    n_users: int
    n_items: int
    train_users: np.ndarray  # int64 [m]
    train_items: np.ndarray  # int64 [m]
    validation: Candidates
    test: Candidates
    duplicates_removed: int = 0
    users_not_evaluated: int = 0  # too few interactions or too few never-seen items

    def item_counts(self) -> np.ndarray:
        """Training interactions per item (the popularity baseline's scores)."""
        return np.bincount(self.train_items, minlength=self.n_items).astype(np.int64)

    def with_holdouts(self) -> Split:
        """Every interaction as a training positive (hold-outs included), nothing held out.

        What the published model is refit on once the hold-outs have chosen the epoch.
        """
        empty = Candidates(
            users=np.empty(0, np.int64), items=np.empty((0, self.test.items.shape[1]), np.int64)
        )
        return Split(
            n_users=self.n_users,
            n_items=self.n_items,
            train_users=np.concatenate([self.train_users, self.validation.users, self.test.users]),
            train_items=np.concatenate(
                [self.train_items, self.validation.items[:, 0], self.test.items[:, 0]]
            ),
            validation=empty,
            test=empty,
            duplicates_removed=self.duplicates_removed,
            users_not_evaluated=self.users_not_evaluated,
        )

    def summary(self) -> dict[str, int]:
        return {
            "train_interactions": int(self.train_users.size),
            "validation_users": len(self.validation),
            "test_users": len(self.test),
            "negatives_per_holdout": int(self.test.items.shape[1] - 1),
            "duplicates_removed": self.duplicates_removed,
            "users_not_evaluated": self.users_not_evaluated,
        }


def leave_one_out(data: Interactions, *, seed: int, negatives: int = 99) -> Split:
    """Hold out each user's latest interaction (test) and the one before (validation).

    A user needs three interactions for both hold-outs, two for the test one alone, and at least
    ``negatives`` items never interacted with; other users stay wholly in training.
    """
    if negatives < 1:
        raise DataError("need at least one negative per held-out interaction")
    n_users, n_items = data.n_users, data.n_items
    position = np.arange(len(data), dtype=np.int64)
    order = np.lexsort((position, data.timestamps, data.users))
    users, items = data.users[order], data.items[order]

    # Keep the latest occurrence of each (user, item) pair.
    keys = users * n_items + items
    _, last_from_end = np.unique(keys[::-1], return_index=True)
    keep = np.zeros(keys.size, dtype=bool)
    keep[keys.size - 1 - last_from_end] = True
    duplicates = int(keys.size - keep.sum())
    users, items = users[keep], items[keep]

    seen = PairSet(users, items, n_users, n_items)
    counts = np.bincount(users, minlength=n_users)
    ends = np.cumsum(counts)
    room = n_items - seen.per_user
    has_test = (counts >= 2) & (room >= negatives)
    has_val = has_test & (counts >= 3)

    test_users = np.flatnonzero(has_test)
    val_users = np.flatnonzero(has_val)
    test_idx = ends[test_users] - 1
    val_idx = ends[val_users] - 2
    in_train = np.ones(users.size, dtype=bool)
    in_train[test_idx] = False
    in_train[val_idx] = False

    rng = np.random.default_rng([seed, 0x5EED])
    test = Candidates(
        users=test_users.astype(np.int64),
        items=np.concatenate(
            [items[test_idx, None], sample_distinct(rng, test_users, negatives, seen)], axis=1
        ),
    )
    validation = Candidates(
        users=val_users.astype(np.int64),
        items=np.concatenate(
            [items[val_idx, None], sample_distinct(rng, val_users, negatives, seen)], axis=1
        ),
    )
    if len(test) == 0:
        raise DataError(f"{data.name}: no user has enough interactions to hold one out")
    return Split(
        n_users=n_users,
        n_items=n_items,
        train_users=users[in_train],
        train_items=items[in_train],
        validation=validation,
        test=test,
        duplicates_removed=duplicates,
        users_not_evaluated=int(np.count_nonzero(counts) - test_users.size),
    )


def _duplicates(rows: np.ndarray) -> np.ndarray:
    """Mask of entries equal to an earlier entry of the same row."""
    order = np.argsort(rows, axis=1, kind="stable")
    ordered = np.take_along_axis(rows, order, axis=1)
    repeat = np.zeros(rows.shape, dtype=bool)
    repeat[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    mask = np.zeros(rows.shape, dtype=bool)
    np.put_along_axis(mask, order, repeat, axis=1)
    return mask


def sample_distinct(
    rng: np.random.Generator, users: np.ndarray, k: int, exclude: PairSet
) -> np.ndarray:
    """``k`` distinct items per user, none paired with the user in ``exclude``: int64 [n, k]."""
    n = users.size
    out = rng.integers(0, exclude.n_items, (n, k), dtype=np.int64)
    rows = np.arange(n)
    for _ in range(_ROUNDS):
        sub = out[rows]
        bad = exclude.contains(np.repeat(users[rows], k).reshape(-1, k), sub) | _duplicates(sub)
        keep = bad.any(axis=1)
        rows, bad = rows[keep], bad[keep]
        if rows.size == 0:
            return out
        sub = out[rows]
        sub[bad] = rng.integers(0, exclude.n_items, int(bad.sum()), dtype=np.int64)
        out[rows] = sub
    for r in rows:
        pool = exclude.complement(int(users[r]))
        if pool.size < k:
            raise DataError(f"user {int(users[r])} has only {pool.size} items to sample from")
        out[r] = rng.choice(pool, k, replace=False)
    return out


class NegativeSampler:
    """Draws training negatives: items the user has no training interaction with."""

    def __init__(self, users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> None:
        self.train = PairSet(users, items, n_users, n_items)

    def sample(self, rng: np.random.Generator, users: np.ndarray, k: int) -> np.ndarray:
        """``k`` negatives per entry of ``users`` (with replacement): int64 [n, k].

        A user with every item in training gets ``-1``; callers drop those entries.
        """
        flat_users = np.repeat(users.astype(np.int64), k)
        out = rng.integers(0, self.train.n_items, flat_users.size, dtype=np.int64)
        todo = np.flatnonzero(self.train.contains(flat_users, out))
        for _ in range(_ROUNDS):
            if todo.size == 0:
                return out.reshape(-1, k)
            out[todo] = rng.integers(0, self.train.n_items, todo.size, dtype=np.int64)
            todo = todo[self.train.contains(flat_users[todo], out[todo])]
        for user in np.unique(flat_users[todo]):
            where = todo[flat_users[todo] == user]
            pool = self.train.complement(int(user))
            out[where] = rng.choice(pool, where.size) if pool.size else -1
        return out.reshape(-1, k)
