"""Loading a version: read through the repository contract, the graph fitted to the manifest's
signature, warmed up; versions published now and versions written by the previous layout."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from modelrepo import (
    MANIFEST_FILE,
    MODEL_FILE,
    Manifest,
    Source,
    Vocabulary,
    read_version,
    two_id_signature,
    write_version,
)
from service.errors import ModelLoadError
from service.models.config import EffectiveConfig, ModelConfig, resolve
from service.models.loader import LoadCancelled, prepare_version
from service.settings import Settings
from tests.factories import publish_random_version, random_params, reference_scores
from tests.model_tools import assert_serves, reasons, rewrite_manifest, run, serving, set_rows
from tests.model_tools import states as states_of
from training.export import model_bytes


def config(**overrides: Any) -> EffectiveConfig:
    return resolve(ModelConfig.model_validate(overrides), Settings())


def test_prepared_version_carries_what_was_read(tmp_path: Path) -> None:
    published, _ = publish_random_version(tmp_path, "m", n_users=5, n_items=7)
    prepared = prepare_version(published.path, config(warmup={"batch_sizes": [1, 8]}))
    assert prepared.stored.path == published.path
    assert prepared.stored.manifest == published.manifest
    assert prepared.stored.manifest.signature == two_id_signature(6, 8)
    assert prepared.stored.vocabularies["items.txt"].ids == [f"i{i}" for i in range(7)]
    assert prepared.runtime.provider == "CPUExecutionProvider"
    assert prepared.load_seconds > 0


def test_a_load_is_abandoned_between_its_steps(tmp_path: Path) -> None:
    published, _ = publish_random_version(tmp_path, "m")
    asked: list[int] = []

    def cancelled() -> bool:
        asked.append(1)
        return len(asked) > 3  # asked at the start, after reading, before each warmup run

    with pytest.raises(LoadCancelled, match="shutting down"):
        prepare_version(published.path, config(), cancelled=cancelled)
    assert len(asked) == 4


def test_a_version_published_through_the_contract_is_served(tmp_path: Path) -> None:
    params = random_params(4, 6, seed=3)
    manifest = Manifest(kind="mlp", signature=two_id_signature(4, 6), dataset={"name": "hand"})
    vocabularies = {
        "users.txt": Vocabulary(["ann", "bob", "cy"]),
        "items.txt": Vocabulary(["a", "b", "c", "d", "e"]),
    }
    published = write_version(
        tmp_path, "contract", manifest, model_bytes(params, "mlp"), vocabularies
    )
    assert published.version == 1

    async def main() -> None:
        async with serving(tmp_path) as (reconciler, _):
            served = reconciler.registry.get("contract")
            assert served.manifest == read_version(published.path).manifest
            assert served.manifest.records() == {"dataset": {"name": "hand"}}
            await assert_serves(served, params)
            user = served.signature.one_from(Source.USER)
            item = served.signature.one_from(Source.ITEM)
            assert user is not None and item is not None
            users, _ = served.rows(user, ["cy", "cy", "nobody"])
            items, _ = served.rows(item, ["e", "a", "a"])
            out = await served.infer({"user": users, "item": items})
            expected = reference_scores(params, np.array([3, 3, 0]), np.array([5, 1, 1]))
            np.testing.assert_allclose(out["score"], expected, atol=1e-5)

    run(main())


def write_previous_layout(version_dir: Path, params: dict[str, np.ndarray], **changes: Any) -> None:
    """A version exactly as the training pipeline wrote it before the signature existed."""
    version_dir.mkdir(parents=True)
    n_users, n_items = params["user_emb"].shape[0] - 1, params["item_emb"].shape[0] - 1
    model = model_bytes(params, "mlp")
    (version_dir / "model.onnx").write_bytes(model)
    (version_dir / "users.txt").write_text("".join(f"u{i}\n" for i in range(n_users)))
    (version_dir / "items.txt").write_text("".join(f"i{i}\n" for i in range(n_items)))
    (version_dir / "history.json").write_text('{"epochs": [{"epoch": 1, "loss": 0.5}]}\n')
    metadata = {
        "format_version": 1,
        "kind": "mlp",
        "hyperparameters": {"kind": "mlp", "dim": 8, "tower": [16, 8]},
        "inputs": [
            {"name": name, "datatype": "INT64", "shape": [-1], "description": f"{name} row"}
            for name in ("user", "item")
        ],
        "outputs": [
            {
                "name": "score",
                "datatype": "FP32",
                "shape": [-1],
                "description": "probability of an interaction",
            }
        ],
        "n_user_rows": n_users + 1,
        "n_item_rows": n_items + 1,
        "unknown_row": 0,
        "vocabulary": {
            "users": n_users,
            "items": n_items,
            "user_file": "users.txt",
            "item_file": "items.txt",
            "row_of_line": "line i (from 0) is embedding row i + 1",
        },
        "dataset": {"name": "events.csv", "size": 1000, "content_hash": "abc"},
        "metrics": {"test": {"model": {"hr@10": 0.5}, "popularity": {"hr@10": 0.3}}},
        "parity_max_abs_error": 1e-7,
        "model_sha256": hashlib.sha256(model).hexdigest(),
        "created_at": "2024-05-01T12:00:00Z",
        "training": {"epochs": 3, "epochs_run": 3, "best_epoch": 2},
    }
    metadata.update(changes)
    metadata = {key: value for key, value in metadata.items() if value is not None}
    (version_dir / MANIFEST_FILE).write_text(json.dumps(metadata, indent=2) + "\n")


def test_a_version_written_by_the_previous_layout_is_served(tmp_path: Path) -> None:
    params = random_params(31, 21, seed=5)
    write_previous_layout(tmp_path / "old" / "1", params)

    async def main() -> None:
        async with serving(tmp_path) as (reconciler, _):
            served = reconciler.registry.get("old")
            assert served.signature == two_id_signature(31, 21)
            assert served.manifest.kind == "mlp"
            assert served.manifest.records()["metrics"]["test"]["model"] == {"hr@10": 0.5}
            await assert_serves(served, params)
            item = served.signature.one_from(Source.ITEM)
            assert item is not None
            assert served.rows(item, ["i19", "x"])[0].tolist() == [20, 0]

    run(main())


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"model_sha256": "0" * 64}, "does not match metadata.json (000000000000"),
        ({"n_user_rows": None}, "'n_user_rows' must be a positive integer"),
        ({"n_item_rows": 0}, "'n_item_rows' must be a positive integer"),
        ({"n_item_rows": 22}, "items.txt has 20 ids"),
        ({"inputs": [{"name": "user", "datatype": "INT64"}]}, "do not match the contract"),
        ({"unknown_row": 1}, "unknown row is row 0"),
    ],
)
def test_the_previous_layout_is_still_checked(
    tmp_path: Path, changes: dict[str, Any], reason: str
) -> None:
    write_previous_layout(tmp_path / "old" / "1", random_params(31, 21), **changes)

    async def main() -> None:
        async with serving(tmp_path) as (reconciler, _):
            assert states_of(reconciler.registry, "old") == {"1": "UNAVAILABLE"}
            assert reason in reasons(reconciler.registry, "old")["1"]

    run(main())


def test_the_previous_layout_checksum_catches_a_replaced_model(tmp_path: Path) -> None:
    write_previous_layout(tmp_path / "old" / "1", random_params(31, 21, seed=1))
    (tmp_path / "old" / "1" / MODEL_FILE).write_bytes(model_bytes(random_params(31, 21), "mlp"))
    with pytest.raises(ModelLoadError, match=r"model\.onnx sha256 .* does not match metadata"):
        prepare_version(tmp_path / "old" / "1", config())


def rename_graph_input(version_dir: Path, old: str, new: str) -> None:
    model = onnx.load(str(version_dir / MODEL_FILE))
    for value in model.graph.input:
        if value.name == old:
            value.name = new
    for node in model.graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
    onnx.save_model(model, str(version_dir / MODEL_FILE))


def drop_item_input(raw: dict[str, Any]) -> None:
    raw["signature"]["inputs"] = raw["signature"]["inputs"][:1]


def rename_score(raw: dict[str, Any]) -> None:
    raw["signature"]["outputs"][0]["name"] = raw["signature"]["score"] = "probability"


def drop_signature(raw: dict[str, Any]) -> None:
    del raw["signature"]


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        ("graph_input_renamed", "model inputs ['product', 'user'] do not match the contract"),
        ("signature_lacks_an_input", "do not match the contract ['user']"),
        ("signature_output_renamed", "model has no output ['probability']"),
        ("items_short", "items.txt has 39 ids"),
        ("users_missing", "users.txt is missing"),
        ("claims_more_rows", "tables do not hold the rows its metadata claims (last rows: user 50"),
        ("manifest_not_json", "cannot read metadata.json"),
        ("manifest_without_signature", "'n_user_rows' must be a positive integer"),
        ("vocabulary_replaced", "items.txt sha256"),
    ],
)
def test_versions_that_break_the_contract_are_refused(
    tmp_path: Path, edit: str, reason: str
) -> None:
    published, _ = publish_random_version(tmp_path, "m", n_users=50, n_items=40)
    path = published.path
    if edit == "graph_input_renamed":
        rename_graph_input(path, "item", "product")
        rewrite_manifest(path)
    elif edit == "signature_lacks_an_input":
        rewrite_manifest(path, edit=drop_item_input)
    elif edit == "signature_output_renamed":
        rewrite_manifest(path, edit=rename_score)
    elif edit == "items_short":
        lines = (path / "items.txt").read_text().splitlines()
        (path / "items.txt").write_text("\n".join(lines[:-1]) + "\n")
        rewrite_manifest(path)
    elif edit == "users_missing":
        (path / "users.txt").unlink()
    elif edit == "claims_more_rows":
        # The vocabulary and the signature agree on 60 items; the model's table holds 41 rows.
        (path / "items.txt").write_text("".join(f"i{i}\n" for i in range(60)))
        rewrite_manifest(path, edit=lambda raw: set_rows(raw, "item", 61))
    elif edit == "manifest_not_json":
        (path / MANIFEST_FILE).write_text("{")
    elif edit == "manifest_without_signature":
        rewrite_manifest(path, edit=drop_signature)
    else:
        (path / "items.txt").write_text("i1\ni0\n" + "".join(f"i{i}\n" for i in range(2, 40)))

    with pytest.raises(ModelLoadError) as error:
        prepare_version(path, config())
    assert reason in str(error.value)
