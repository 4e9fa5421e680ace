"""The feature model under load, side by side with the id-only model of the same size.

``bench/serve_bench.py --features`` publishes two ``dlrm`` versions with random weights through
the repository contract, MovieLens-100K sized (943 users, 1,682 items, embedding 32, tower
64-32-16): ``ml100k-ids`` reads the two ids alone; ``ml100k-features`` also reads what the
README's MovieLens recipe (``recserve train --kind dlrm --user-features u.user --item-features
u.item --feature-kind age=numeric --drop-feature zip_code --history-items 5``) gives it (user age
numeric, gender and occupation categorical, the user's 5 latest items as a bag over the item ids;
item release year categorical and the 19 genres as a multi-hot bag of up to 6), with its tables,
so that ``/v1`` fills every side input from the tables. One ``recserve serve`` serves both; each
scenario is run on each model in turns (``score-100``: 100 items scored; ``recommend-100``: top 10
of 100 candidates; ``recommend``: top 10 of the whole catalog), and the feature model's
requests/s and p99 are printed beside the id-only model's, with the target: rank-100 requests/s
at least 0.7x.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from modelrepo import Manifest, Source, Vocabulary, write_version
from modelrepo.layout import ITEMS_FILE
from training.export import model_bytes
from training.models import ModelConfig, SideFeature, build_model, feature_tables

N_USERS, N_ITEMS = 943, 1_682
CONFIG = ModelConfig(kind="dlrm", embedding_dim=32, tower=(64, 32, 16), bottom=(16,))
IDS, FEATURES = "ml100k-ids", "ml100k-features"
HISTORY_ITEMS = 5  # the user's latest items, as the MovieLens recipe trains with
TARGET = 0.7  # feature rank-100 requests/s over the id-only model's
RANK_100 = ("score-100", "recommend-100")


def _vocabulary(prefix: str, n: int) -> Vocabulary:
    return Vocabulary([f"{prefix}{i}" for i in range(n)])


def bench_features(rng: np.random.Generator) -> tuple[list[SideFeature], dict[str, Vocabulary]]:
    """ML-100K-like side features over the user and item rows, row 0 at the defaults."""
    users, items = N_USERS + 1, N_ITEMS + 1
    categories = {"gender": 2, "occupation": 21, "release_year": 71}
    vocabularies = {name: _vocabulary(name, n) for name, n in categories.items()}
    vocabularies["genres"] = _vocabulary("genre", 19)

    def column(name: str, rows: int) -> np.ndarray:
        values = rng.integers(1, vocabularies[name].n_rows, rows)
        values[0] = 0
        return values

    bags = np.zeros((items, 6), dtype=np.int64)
    for row in range(1, items):
        genres = rng.choice(np.arange(1, 20), int(rng.integers(1, 4)), replace=False)
        bags[row, : genres.size] = genres
    recent = np.zeros((users, HISTORY_ITEMS), dtype=np.int64)
    for row in range(1, users):
        recent[row] = rng.choice(np.arange(1, items), HISTORY_ITEMS, replace=False)
    age = rng.normal(0.0, 1.0, (users, 1)).astype(np.float32)
    age[0] = 0.0
    features = [
        SideFeature.dense("age", Source.USER_TABLE, age, [34.0], [12.2]),
        *(
            SideFeature.categorical(name, Source.USER_TABLE, vocabularies[name].n_rows,
                                    column(name, users))
            for name in ("gender", "occupation")
        ),
        SideFeature.multi_hot(
            "recent_items", Source.USER_TABLE, items, recent, vocabulary=ITEMS_FILE
        ),
        SideFeature.categorical(
            "release_year", Source.ITEM_TABLE, vocabularies["release_year"].n_rows,
            column("release_year", items),
        ),
        SideFeature.multi_hot("genres", Source.ITEM_TABLE, vocabularies["genres"].n_rows, bags),
    ]  # fmt: skip
    by_file = {
        feature.vocabulary: vocabularies[feature.feature]
        for feature in features
        if feature.vocabulary is not None and feature.vocabulary != ITEMS_FILE
    }
    return features, by_file


def publish_pair(repository: Path, seed: int) -> tuple[list[str], list[str]]:
    """Publish the id-only and the feature version; returns the raw user and item ids."""
    rng = np.random.default_rng(seed)
    user_ids = [str(u) for u in range(1, N_USERS + 1)]
    item_ids = [str(i) for i in range(1, N_ITEMS + 1)]
    features, feature_vocabularies = bench_features(rng)
    for name, side in ((IDS, []), (FEATURES, features)):
        model = build_model(CONFIG, N_USERS + 1, N_ITEMS + 1, seed, side)
        manifest = Manifest(
            kind=CONFIG.kind,
            signature=model.signature,
            created_at="2025-01-01T00:00:00Z",
            dataset={"name": "random weights, MovieLens-100K sized", "size": 0},
        )
        vocabularies = {
            "users.txt": Vocabulary(user_ids),
            "items.txt": Vocabulary(item_ids),
            **(feature_vocabularies if side else {}),
        }
        graph = model_bytes(model.params, CONFIG.kind, model.signature)
        write_version(repository, name, manifest, graph, vocabularies, tables=feature_tables(side))
    return user_ids, item_ids


def comparison(results: Sequence[object]) -> list[str]:
    """Side by side: id-only and feature requests/s and p99 per scenario and concurrency."""
    by_key = {(m.server, m.scenario, m.concurrency): m for m in results}  # type: ignore[attr-defined]
    lines = [
        f"{'scenario':<15}{'conc':>5}{'ids req/s':>11}{'p99 ms':>8}"
        f"{'features req/s':>16}{'p99 ms':>8}{'ratio':>7}  target"
    ]
    for (server, scenario, concurrency), ids in by_key.items():
        if server != IDS or (FEATURES, scenario, concurrency) not in by_key:
            continue
        feats = by_key[(FEATURES, scenario, concurrency)]
        ratio = feats.requests_per_s / ids.requests_per_s if ids.requests_per_s else 0.0
        target = ""
        if scenario in RANK_100:
            target = f">= {TARGET}x " + ("met" if ratio >= TARGET else "MISSED")
        lines.append(
            f"{scenario:<15}{concurrency:>5}{ids.requests_per_s:>11,.0f}{ids.p99_ms:>8.1f}"
            f"{feats.requests_per_s:>16,.0f}{feats.p99_ms:>8.1f}{ratio:>7.2f}  {target}"
        )
    return lines
