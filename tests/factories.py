"""Small model versions for tests and benches without training: random NCF-MLP weights, the real
export, published through the repository contract as training publishes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelrepo import (
    History,
    Manifest,
    PublishedVersion,
    RetrievalVectors,
    Source,
    Vocabulary,
    two_id_signature,
)
from modelrepo.layout import HISTORY_FILE, ITEMS_FILE, USERS_FILE, list_versions
from modelrepo.version import read_version, write_version
from training.export import model_bytes

RANDOM_DATASET = {"name": "random", "size": 0, "content_hash": ""}


def random_params(
    n_user_rows: int,
    n_item_rows: int,
    *,
    dim: int = 8,
    tower: tuple[int, ...] = (16, 8),
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """NCF-MLP parameters (design names) with values that give well-spread scores."""
    rng = np.random.default_rng(seed)
    params: dict[str, np.ndarray] = {
        "user_emb": rng.normal(0, 1.0, (n_user_rows, dim)).astype(np.float32),
        "item_emb": rng.normal(0, 1.0, (n_item_rows, dim)).astype(np.float32),
    }
    width = 2 * dim
    for layer, out in enumerate(tower):
        params[f"W{layer}"] = rng.normal(0, np.sqrt(2 / width), (width, out)).astype(np.float32)
        params[f"b{layer}"] = rng.normal(0, 0.1, out).astype(np.float32)
        width = out
    params["w_out"] = rng.normal(0, np.sqrt(1 / width), (width, 1)).astype(np.float32)
    params["b_out"] = np.zeros(1, dtype=np.float32)
    return params


def reference_scores(
    params: dict[str, np.ndarray], users: np.ndarray, items: np.ndarray
) -> np.ndarray:
    """NumPy forward pass of the NCF-MLP graph, for checking what the server returns."""
    x = np.concatenate([params["user_emb"][users], params["item_emb"][items]], axis=1)
    layer = 0
    while f"W{layer}" in params:
        x = np.maximum(x @ params[f"W{layer}"] + params[f"b{layer}"], 0)
        layer += 1
    logit = (x @ params["w_out"] + params["b_out"])[:, 0]
    scores: np.ndarray = (1 / (1 + np.exp(-logit))).astype(np.float32)
    return scores


def publish_mlp_version(
    repository: Path,
    model_name: str,
    params: dict[str, np.ndarray],
    user_ids: Sequence[str],
    item_ids: Sequence[str],
    *,
    history: History | None = None,
    retrieval: RetrievalVectors | None = None,
    **records: Any,
) -> PublishedVersion:
    """Publish an NCF-MLP version of ``params`` whose embedding row ``i + 1`` is id ``i`` of the
    vocabulary (row 0: unknown), with the users' ``history`` and ``retrieval`` vectors if given;
    ``records`` (dataset, hyper-parameters...) go into the manifest."""
    signature = two_id_signature(len(user_ids) + 1, len(item_ids) + 1)
    manifest = Manifest.model_validate(
        {"dataset": RANDOM_DATASET, **records, "kind": "mlp", "signature": signature}
    )
    vocabularies = {USERS_FILE: Vocabulary(user_ids), ITEMS_FILE: Vocabulary(item_ids)}
    extra_files = {HISTORY_FILE: history.to_bytes()} if history is not None else None
    graph = model_bytes(params, "mlp")
    return write_version(
        repository, model_name, manifest, graph, vocabularies, extra_files, retrieval=retrieval
    )


def publish_random_version(
    repository: Path,
    model_name: str,
    *,
    n_users: int = 50,
    n_items: int = 40,
    seed: int = 0,
    id_prefix: str = "",
    dim: int = 8,
    tower: tuple[int, ...] = (16, 8),
    **records: Any,
) -> tuple[PublishedVersion, dict[str, np.ndarray]]:
    """Publish a version with ids ``u0..``/``i0..`` (after ``id_prefix``), ``n_users`` and
    ``n_items`` of them plus the unknown row 0; its cost per row is set by ``dim`` and ``tower``;
    ``records`` go into the manifest."""
    params = random_params(n_users + 1, n_items + 1, dim=dim, tower=tower, seed=seed)
    user_ids = [f"{id_prefix}u{i}" for i in range(n_users)]
    item_ids = [f"{id_prefix}i{i}" for i in range(n_items)]
    published = publish_mlp_version(repository, model_name, params, user_ids, item_ids, **records)
    return published, params


def latest_ids(repository: Path, model_name: str) -> tuple[Path, list[str], list[str]]:
    """The highest version of a model that takes a user and an item, and their raw ids (id ``i``
    of a list is row ``i + 1``); LookupError when there is no such version."""
    try:
        versions = list_versions(repository / model_name)
    except OSError:  # no such model
        versions = ()
    if not versions:
        raise LookupError(f"no versions of model {model_name!r} under {repository}")
    stored = read_version(repository / model_name / str(versions[-1]))
    user, item = map(stored.manifest.signature.one_from, (Source.USER, Source.ITEM))
    if user is None or item is None:
        raise LookupError(f"model {model_name!r} does not take a user and an item")
    return stored.path, stored.vocabulary(user).ids, stored.vocabulary(item).ids
