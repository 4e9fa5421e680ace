"""The retrieval index: exact and IVF top-N by dot product, the choice between them, its build
during the version's load (before it serves), and the model config's retrieval section."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from modelrepo import RetrievalVectors
from service.errors import ModelLoadError
from service.models.config import ModelConfig, RetrievalConfig, parse_model_config, resolve
from service.models.loader import prepare_version
from service.retrieval.build import IndexSettings, build_index
from service.retrieval.index import ExactIndex, IvfIndex
from service.settings import Settings
from tests.factories import publish_mlp_version, random_params

DIM = 16


def clustered(n_rows: int, seed: int) -> np.ndarray:
    """Vectors around a few centres, as a trained model's tend to be (row 0 included)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(24, DIM))
    picked = centres[rng.integers(0, len(centres), n_rows)]
    return (picked + 0.5 * rng.normal(size=(n_rows, DIM))).astype(np.float32)


def brute_force(items: np.ndarray, user: np.ndarray, n: int) -> list[int]:
    scores = items[1:] @ user
    best: list[int] = (np.argsort(-scores, kind="stable")[:n] + 1).tolist()
    return best


def test_exact_search_is_the_n_best_rows_best_first_never_row_0() -> None:
    items = clustered(500, seed=1)
    items[0] = 100.0  # the unknown item would win every search were it searched
    index = ExactIndex(items)
    assert (index.n_items, index.nbytes, index.kind) == (499, 0, "exact")
    for user in clustered(5, seed=2):
        assert index.search(user, 20).tolist() == brute_force(items, user, 20)
    assert sorted(index.search(items[3], 10_000).tolist()) == list(range(1, 500))
    assert index.search(items[3], 0).size == 0


def test_ivf_probing_every_cell_is_exact() -> None:
    items = clustered(2000, seed=3)
    index = IvfIndex(items, n_lists=16, nprobe=16)
    assert index.n_lists == 16 and index.kind == "ivf"
    assert index.nbytes >= 1999 * DIM * 4
    for user in clustered(5, seed=4):
        assert index.search(user, 30).tolist() == brute_force(items, user, 30)


def test_ivf_with_few_probes_keeps_most_of_the_exact_top_n() -> None:
    items = clustered(20_000, seed=5)
    index = IvfIndex(items, n_lists=64, nprobe=8)
    users = clustered(20, seed=6)
    recall = np.mean(
        [
            len(set(index.search(u, 50).tolist()) & set(brute_force(items, u, 50))) / 50
            for u in users
        ]
    )
    assert recall >= 0.9


def test_the_index_kind_follows_the_catalog_size() -> None:
    vectors = RetrievalVectors(clustered(10, seed=7), clustered(1000, seed=8))
    exact = build_index(vectors, IndexSettings(999, 0, 8), "m/1")
    assert exact.index.kind == "exact" and exact.vectors is vectors and exact.seconds >= 0
    ivf = build_index(vectors, IndexSettings(998, 0, 8), "m/1")
    assert ivf.index.kind == "ivf" and ivf.index.n_items == 999


def test_a_version_with_vectors_loads_with_its_index_built(tmp_path: Path) -> None:
    users, items = [f"u{i}" for i in range(6)], [f"i{i}" for i in range(30)]
    vectors = RetrievalVectors(clustered(7, seed=9), clustered(31, seed=10))
    params = random_params(7, 31)
    path = publish_mlp_version(tmp_path, "m", params, users, items, retrieval=vectors).path
    config = resolve(ModelConfig(), Settings())
    prepared = prepare_version(path, config)
    assert prepared.index is not None and prepared.index.index.kind == "exact"
    assert prepared.index.index.search(vectors.user_vectors[2], 5).tolist() == brute_force(
        vectors.item_vectors, vectors.user_vectors[2], 5
    )
    prepared.runtime.close()
    plain = publish_mlp_version(tmp_path, "m", params, users, items).path
    without = prepare_version(plain, config)
    assert without.index is None
    without.runtime.close()


def test_the_retrieval_config_has_defaults_and_bounds() -> None:
    assert (
        resolve(ModelConfig(), Settings()).to_dict()["retrieval"] == RetrievalConfig().model_dump()
    )
    defaults = RetrievalConfig()
    assert (defaults.retrieve_n, defaults.max_retrieve_n) == (200, 2000)
    custom = parse_model_config(json.dumps({"retrieval": {"retrieve_n": 50, "ann_probes": 4}}))
    assert (custom.retrieval.retrieve_n, custom.retrieval.ann_probes) == (50, 4)
    with pytest.raises(ModelLoadError, match="retrieve_n 300 is above max_retrieve_n 100"):
        parse_model_config(json.dumps({"retrieval": {"retrieve_n": 300, "max_retrieve_n": 100}}))
    with pytest.raises(ModelLoadError, match=r"retrieval\.ann_probes"):
        parse_model_config(json.dumps({"retrieval": {"ann_probes": 0}}))
    with pytest.raises(ModelLoadError, match=r"retrieval\.top_n"):
        parse_model_config(json.dumps({"retrieval": {"top_n": 5}}))
