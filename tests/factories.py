"""Small model versions for tests without training: random weights, real export and publish."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from training.export import INPUT_NAMES, OUTPUT_NAME, export_onnx
from training.publish import PublishedVersion, publish_version


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
    return (1 / (1 + np.exp(-logit))).astype(np.float32)


def publish_random_version(
    repository: Path,
    model_name: str,
    *,
    n_users: int = 50,
    n_items: int = 40,
    seed: int = 0,
    id_prefix: str = "",
) -> tuple[PublishedVersion, dict[str, np.ndarray]]:
    """Publish a version with ``n_users``/``n_items`` vocabulary ids (plus the unknown row 0)."""
    params = random_params(n_users + 1, n_items + 1, seed=seed)
    user_ids = [f"{id_prefix}u{i}" for i in range(n_users)]
    item_ids = [f"{id_prefix}i{i}" for i in range(n_items)]

    def write(staging: Path) -> None:
        export_onnx(params, "mlp", staging / "model.onnx")
        (staging / "users.txt").write_text("".join(f"{u}\n" for u in user_ids))
        (staging / "items.txt").write_text("".join(f"{i}\n" for i in item_ids))
        digest = hashlib.sha256((staging / "model.onnx").read_bytes()).hexdigest()
        metadata = {
            "kind": "mlp",
            "inputs": [{"name": n, "datatype": "INT64", "shape": [-1]} for n in INPUT_NAMES],
            "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1]}],
            "n_user_rows": n_users + 1,
            "n_item_rows": n_items + 1,
            "unknown_row": 0,
            "model_sha256": digest,
            "dataset": {"name": "random", "size": 0, "content_hash": ""},
        }
        (staging / "metadata.json").write_text(json.dumps(metadata))

    return publish_version(repository, model_name, write), params
