"""How much a user's side features tell beyond popularity, before any model is trained.

For the users ``recserve train --cold-start-users FRACTION`` holds out (same seed, same users, the
same candidate lists: each one's latest interaction against 99 items they never had), it ranks
the candidates by popularity among the training users who share one categorical user feature
with the cold user (their gender, say), smoothed towards overall popularity, and prints HR@10 and
NDCG@10 beside overall popularity's. A feature model served from those features alone can hardly
do better than the best of these segments: if no segment beats popularity, the features carry no
signal for a user the model has never seen.

    .venv/bin/python bench/segment_popularity.py --data ml-100k/u.data \\
        --user-features ml-100k/u.user --drop-feature zip_code [--fraction 0.1] [--seed 0]

Numeric features are cut into bands (``--bands``, quantiles of the training users' values).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.cold_start import hold_out_users
from training.data import load
from training.evaluate import Popularity, evaluate
from training.features import FeatureKind, read_feature_file
from training.features.files import FeatureColumn

SMOOTHING = (1.0, 10.0, 50.0)
"""Pseudo-counts of overall popularity mixed into each segment's counts, per segment user."""


def segment_keys(column: FeatureColumn, ids: Sequence[str], bands: int) -> dict[str, str]:
    """Each id's segment: its value, or its quantile band for a numeric column."""
    if column.kind is not FeatureKind.NUMERIC:
        return {id_: str(column.values.get(id_, "(missing)")) for id_ in ids}
    numbers = np.array([float(column.values.get(id_, np.nan)) for id_ in ids])  # type: ignore[arg-type]
    edges = np.nanquantile(numbers, np.linspace(0, 1, bands + 1)[1:-1])
    return {
        id_: "(missing)" if np.isnan(x) else f"band{int(np.searchsorted(edges, x))}"
        for id_, x in zip(ids, numbers, strict=True)
    }


def segment_scorer(
    segment_counts: np.ndarray,
    users_per_segment: np.ndarray,
    segment_of_cold: np.ndarray,
    share: np.ndarray,
    smoothing: float,
    per_user: float,
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Scores (cold user, item): the item's count in the user's segment, plus ``smoothing``
    users' worth (``per_user`` interactions each) of overall popularity, per segment user."""

    def score(users: np.ndarray, items: np.ndarray) -> np.ndarray:
        segment = segment_of_cold[users]
        mixed = segment_counts[segment, items] + smoothing * per_user * share[items]
        result: np.ndarray = mixed / (users_per_segment[segment] + smoothing)
        return result

    return score


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--user-features", type=Path, required=True)
    parser.add_argument("--drop-feature", action="append", default=[])
    parser.add_argument("--feature-kind", action="append", default=[], metavar="NAME=KIND")
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bands", type=int, default=5)
    args = parser.parse_args(argv)

    data = load(args.data)
    warm, cold = hold_out_users(data, args.fraction, args.seed)
    assert cold is not None
    candidates = cold.candidates(warm.item_ids, args.seed)
    counts = np.bincount(warm.items, minlength=warm.n_items).astype(np.float64)
    overall = evaluate(Popularity(counts, warm.n_users), candidates)
    print(f"{len(candidates)} held-out users; popularity HR@10 {overall.hr:.4f} "
          f"NDCG@10 {overall.ndcg:.4f}")  # fmt: skip
    print(f"{'feature':<16}{'smoothing':>10}{'HR@10':>9}{'NDCG@10':>9}")
    kinds = {
        name: FeatureKind(kind) for name, _, kind in (k.partition("=") for k in args.feature_kind)
    }
    features = read_feature_file(args.user_features, kinds=kinds, drop=args.drop_feature)
    share = counts / counts.sum()
    for column in features.columns:
        if column.kind is FeatureKind.MULTI_HOT:
            continue
        by_id = segment_keys(column, features.ids, args.bands)
        warm_keys = [by_id.get(user, "(missing)") for user in warm.user_ids]
        cold_keys = [by_id.get(user, "(missing)") for user in cold.ids]
        names = sorted(set(warm_keys) | set(cold_keys))
        index = {name: at for at, name in enumerate(names)}
        segment_of_warm = np.array([index[key] for key in warm_keys])
        segment_counts = np.zeros((len(names), warm.n_items))
        np.add.at(segment_counts, (segment_of_warm[warm.users], warm.items), 1.0)
        users_per_segment = np.bincount(segment_of_warm, minlength=len(names)).astype(np.float64)
        segment_of_cold = np.array([index[key] for key in cold_keys])
        per_user = max(1.0, counts.sum() / max(1, warm.n_users))
        for smoothing in SMOOTHING:
            score = segment_scorer(
                segment_counts, users_per_segment, segment_of_cold, share, smoothing, per_user
            )
            metrics = evaluate(score, candidates)
            print(f"{column.name:<16}{smoothing:>10g}{metrics.hr:>9.4f}{metrics.ndcg:>9.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
