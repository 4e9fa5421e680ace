"""Cold start, measured: users the model never trains on, served from their side features only.

``recserve train --cold-start-users FRACTION`` holds that share of the users out of the run
entirely, before the split: none of their interactions is trained on (by the evaluated model or
the refit), and they are not in the published id vocabulary. At test time each is served as the
server serves a user it does not know: the unknown id row (0) with the user's own features (from
the user feature file, encoded with the vocabularies and statistics of the training users), the
items' features from the item table. Each cold user's latest interaction with an item the model
knows is ranked against 99 items the user never interacted with, as the leave-one-out test does,
and the same lists are scored by popularity, so that the two figures compare on equal terms.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelrepo import UNKNOWN_ROW
from training.data import DataError, Interactions
from training.evaluate import Metrics, Popularity, Scorer, evaluate
from training.feature_inputs import FeatureInputs
from training.item_history import HISTORY_INPUT, preceding_items
from training.models import DLRM, Model
from training.split import Candidates, PairSet, sample_distinct

NEGATIVES = 99


@dataclass(frozen=True)
class ColdUsers:
    """The held-out users and their interactions (item ids raw, as the source has them)."""

    ids: tuple[str, ...]  # raw user ids; the order of their feature rows
    users: np.ndarray  # int64 [m]: index into ``ids`` per interaction
    items: tuple[str, ...]  # raw item id per interaction
    timestamps: np.ndarray  # int64 [m]
    fraction: float

    def candidates(self, item_ids: list[str], seed: int) -> Candidates:
        """Per cold user: the latest interaction with an item of ``item_ids`` (the model's items)
        against ``NEGATIVES`` of those items the user never interacted with. ``users`` index
        :attr:`ids`, items are dense indices into ``item_ids``. Users without such an
        interaction, or with too few other items, are left out."""
        users, items = self._known(item_ids)
        last = _last_of_each(users)
        seen = PairSet(users, items, len(self.ids), len(item_ids))
        room = len(item_ids) - seen.per_user[users[last]]
        last = last[room >= NEGATIVES]
        chosen = users[last]
        rng = np.random.default_rng([seed, 0xC01D])
        negatives = sample_distinct(rng, chosen, NEGATIVES, seen)
        return Candidates(chosen, np.concatenate([items[last, None], negatives], axis=1))

    def latest_before_test(self, item_ids: list[str], k: int) -> np.ndarray:
        """Per cold user (rows of :attr:`ids`), the item rows (dense index + 1) of the ``k``
        interactions with items of ``item_ids`` just before the one :meth:`candidates` holds out,
        latest first, padded with 0: what a caller would send as their recent items."""
        users, items = self._known(item_ids)
        last = _last_of_each(users)
        bags = np.zeros((len(self.ids), k), dtype=np.int64)
        bags[users[last]] = preceding_items(users, items, k)[last]
        return bags

    def _known(self, item_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The interactions with items of ``item_ids`` (dense indices into it), by user, oldest
        first."""
        index = {raw: at for at, raw in enumerate(item_ids)}
        items = np.array([index.get(raw, -1) for raw in self.items], dtype=np.int64)
        known = items >= 0
        users, items = self.users[known], items[known]
        position = np.arange(users.size, dtype=np.int64)
        order = np.lexsort((position, self.timestamps[known], users))
        return users[order], items[order]


def _last_of_each(users: np.ndarray) -> np.ndarray:
    """The index of each user's last entry in ``users`` (sorted by user)."""
    return np.flatnonzero(np.r_[users[1:] != users[:-1], True]) if users.size else users


def hold_out_users(
    data: Interactions, fraction: float, seed: int
) -> tuple[Interactions, ColdUsers | None]:
    """``data`` without a random ``fraction`` of its users (re-indexed: only the ids left keep a
    row), and those users; ``(data, None)`` for 0."""
    if fraction <= 0.0:
        return data, None
    n_cold = max(1, round(fraction * data.n_users))
    if n_cold >= data.n_users:
        raise DataError(f"--cold-start-users {fraction} leaves no user to train on")
    rng = np.random.default_rng([seed, 0xC01D])
    cold = np.sort(rng.choice(data.n_users, n_cold, replace=False))
    is_cold = np.isin(data.users, cold)
    kept = ~is_cold
    warm_users, user_rows = np.unique(data.users[kept], return_inverse=True)
    warm_items, item_rows = np.unique(data.items[kept], return_inverse=True)
    warm = Interactions(
        user_ids=[data.user_ids[at] for at in warm_users.tolist()],
        item_ids=[data.item_ids[at] for at in warm_items.tolist()],
        users=user_rows.astype(np.int64),
        items=item_rows.astype(np.int64),
        timestamps=data.timestamps[kept],
        name=data.name,
        content_hash=data.content_hash,
        skipped_rows=data.skipped_rows,
        skipped_lines=data.skipped_lines,
    )
    held = ColdUsers(
        ids=tuple(data.user_ids[at] for at in cold.tolist()),
        users=np.searchsorted(cold, data.users[is_cold]).astype(np.int64),
        items=tuple(data.item_ids[at] for at in data.items[is_cold].tolist()),
        timestamps=data.timestamps[is_cold],
        fraction=fraction,
    )
    return warm, held


def cold_scorer(model: Model, user_rows: Mapping[str, np.ndarray]) -> Scorer:
    """Scores (cold user index, dense item) pairs as the server scores an unknown user: id row 0,
    the user's own features ``user_rows`` (by input, a row per cold user; a model without side
    features: row 0 alone)."""

    def score(users: np.ndarray, items: np.ndarray) -> np.ndarray:
        unknown = np.full(users.shape, UNKNOWN_ROW, dtype=np.int64)
        if not isinstance(model, DLRM):
            return model.predict(unknown, items + 1)
        feeds = model.inputs_for(unknown, items + 1)
        for name, rows in user_rows.items():
            feeds[name] = rows[users]
        return model.predict_inputs(feeds)

    return score


def evaluate_cold(
    cold: ColdUsers,
    model: Model,
    inputs: FeatureInputs,
    popularity: Popularity,
    item_ids: list[str],
    seed: int,
) -> dict[str, Any]:
    """The manifest's ``cold_start`` record: HR@10 / NDCG@10 of the model and of popularity on
    the cold users' candidate lists."""
    candidates = cold.candidates(item_ids, seed)
    if not len(candidates):
        raise DataError("no cold-start user has an interaction with an item the model knows")
    user_rows = dict(inputs.cold_user_rows)
    k = model.config.history_items
    if k:
        user_rows[HISTORY_INPUT] = cold.latest_before_test(item_ids, k)
    ours: Metrics = evaluate(cold_scorer(model, user_rows), candidates)
    baseline = evaluate(popularity, candidates)
    return {
        "fraction": cold.fraction,
        "users_held_out": len(cold.ids),
        "users_evaluated": len(candidates),
        "protocol": (
            "each held-out user's latest interaction against "
            f"{NEGATIVES} items the user never interacted with; served as an unknown id with "
            "the user's own features"
        ),
        "model": ours.as_dict(),
        "popularity": baseline.as_dict(),
        "lift": {"hr@10": ours.hr - baseline.hr, "ndcg@10": ours.ndcg - baseline.ndcg},
    }


def report_lines(records: dict[str, Any]) -> list[str]:
    """The report's lines on side features and cold start, from the manifest's records."""
    lines = [f"feature note: {note}" for note in records.get("features", {}).get("notes", [])]
    features = records.get("features", {}).get("inputs", [])
    if features:
        listed = ", ".join(f"{f['input']} ({f['role']}, caller {f['caller']})" for f in features)
        lines.append(f"side features: {listed}")
    cold = records.get("cold_start")
    if cold:
        model, pop = cold["model"], cold["popularity"]
        lines += [
            f"cold start ({cold['users_evaluated']:,} of {cold['users_held_out']:,} held-out "
            "users, never trained on)   HR@10   NDCG@10",
            f"  model (features only)   {model['hr@10']:.4f}  {model['ndcg@10']:.4f}",
            f"  popularity              {pop['hr@10']:.4f}  {pop['ndcg@10']:.4f}",
        ]
    return lines


def side_records(
    inputs: FeatureInputs,
    cold: ColdUsers | None,
    model: Model,
    popularity: Popularity,
    item_ids: list[str],
    seed: int,
) -> dict[str, Any]:
    """The manifest records of a run's side features and cold-start evaluation (empty without)."""
    features = model.side_features
    records: dict[str, Any] = {"features": inputs.record(features)} if features else {}
    if cold is not None:
        records["cold_start"] = evaluate_cold(cold, model, inputs, popularity, item_ids, seed)
    return records
