"""The dlrm graph under ONNX Runtime: parity on every input, the signature's inputs, and a
published version whose tables give the server the features the model was trained with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from modelrepo import Manifest, Role, Vocabulary, read_version, write_version
from modelrepo.layout import ITEMS_FILE, USERS_FILE
from tests.dlrm_tools import (
    DEVICE,
    FEATURE_SETS,
    N_ITEM_ROWS,
    N_USER_ROWS,
    dlrm,
    spread,
)
from training.export import build_graph, model_bytes, onnx_parity, random_feeds
from training.models import feature_tables

SETS = {**FEATURE_SETS, "with_context": (*FEATURE_SETS["all"], DEVICE)}
_ONNX_TYPES = {"INT64": onnx.TensorProto.INT64, "FP32": onnx.TensorProto.FLOAT}


def rows(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random id rows of each side, the unknown row 0 among them."""
    rng = np.random.default_rng(seed)
    users = np.concatenate([[0, 0, 3], rng.integers(0, N_USER_ROWS, n)])
    items = np.concatenate([[0, 3, 0], rng.integers(0, N_ITEM_ROWS, n)])
    return users, items


@pytest.mark.parametrize("features", list(SETS))
def test_onnx_runtime_matches_numpy_on_every_input(features: str) -> None:
    model = spread(dlrm(SETS[features]), dtype=np.float32)
    signature = model.signature
    graph = model_bytes(model.params, "dlrm", signature)
    loaded = onnx.load_from_string(graph)
    assert [
        (i.name, i.type.tensor_type.elem_type, len(i.type.tensor_type.shape.dim))
        for i in loaded.graph.input
    ] == [(s.name, _ONNX_TYPES[s.dtype], len(s.shape)) for s in signature.inputs]
    assert [o.name for o in loaded.graph.output] == [signature.score]

    users, items = rows(2000)
    assert model.predict(users, items).std() > 0.01  # a spread of scores, not a constant
    assert onnx_parity(graph, model.predict, users, items, signature, model) <= 1e-5
    # The graph matches the NumPy model on every input, not only the rows the tables hold.
    feeds = random_feeds(signature, users, items, np.random.default_rng(3))
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    (scores,) = session.run([signature.score], feeds)
    np.testing.assert_allclose(scores, model.predict_inputs(feeds), rtol=0, atol=1e-5)
    # A wrong model is caught: the parity figure is not vacuous.
    model.params["b_out"] += 1.0
    assert onnx_parity(graph, model.predict, users, items, signature, model) > 1e-3


def test_parity_checks_inputs_the_tables_never_hold() -> None:
    """A context feature is at its default in every table row: only the drawn feeds reach the
    rest of its embedding, and the parity check draws them."""
    model = spread(dlrm(SETS["with_context"]), dtype=np.float32)
    graph = model_bytes(model.params, "dlrm", model.signature)
    users, items = rows(500)
    model.params["context_device_emb"][2] += 1.0
    np.testing.assert_allclose(
        model.predict(users, items),
        ort.InferenceSession(graph).run(None, model.inputs_for(users, items))[0],
        atol=1e-5,
    )
    assert onnx_parity(graph, model.predict, users, items, model.signature, model) > 1e-3


def test_padding_rows_weigh_nothing_in_the_graph() -> None:
    model = spread(dlrm(SETS["all"]), dtype=np.float32)
    graph = model_bytes(model.params, "dlrm", model.signature)
    model.params["item_genres_emb"][0] += 5.0  # row 0 of a bag's table is padding
    assert onnx_parity(graph, model.predict, *rows(500), model.signature, model) <= 1e-5


def test_random_feeds_cover_unknown_rows_empty_and_full_bags() -> None:
    signature = dlrm(SETS["with_context"]).signature
    users, items = rows(400)
    feeds = random_feeds(signature, users, items, np.random.default_rng(0))
    assert list(feeds) == [spec.name for spec in signature.inputs]
    np.testing.assert_array_equal(feeds["user"], users)
    for spec in signature.inputs:
        value = feeds[spec.name]
        assert value.shape[0] == users.size
        assert value.dtype == (np.float32 if spec.role is Role.DENSE else np.int64)
        assert not value[0].any(), f"{spec.name}: row 0 holds the defaults"
        if spec.role is not Role.DENSE:
            assert set(np.unique(value)) == set(range(spec.n_rows or 0)), spec.name
    bags = feeds["item_genres"]
    lengths = np.count_nonzero(bags, axis=1)
    assert lengths.min() == 0 and lengths.max() == bags.shape[1]
    assert ((bags[:, :-1] == 0) & (bags[:, 1:] != 0)).any()  # a 0 among a bag's categories


def test_a_model_with_side_inputs_needs_them_for_export_and_parity() -> None:
    model = dlrm(SETS["all"])
    with pytest.raises(ValueError, match="take its signature from the model"):
        build_graph(model.params, "dlrm")
    graph = model_bytes(model.params, "dlrm", model.signature)
    with pytest.raises(ValueError, match="pass the model as side"):
        onnx_parity(graph, model.predict, *rows(10), model.signature)


def test_a_published_version_serves_the_features_it_was_trained_with(tmp_path: Path) -> None:
    """Publish through the repository contract; gather each row's features from the tables
    read back, as the server does, and ONNX Runtime scores what the model scores."""
    model = spread(dlrm(SETS["all"]), dtype=np.float32)
    signature = model.signature
    vocabularies = {
        USERS_FILE: Vocabulary([f"u{i}" for i in range(1, N_USER_ROWS)]),
        ITEMS_FILE: Vocabulary([f"i{i}" for i in range(1, N_ITEM_ROWS)]),
        "vocab_user_occupation.txt": Vocabulary(["artist", "doctor", "writer"]),
        "vocab_item_genres.txt": Vocabulary(["comedy", "drama", "horror", "western"]),
    }
    manifest = Manifest.model_validate(
        {"dataset": {"name": "planted", "size": 0, "content_hash": ""}, "kind": "dlrm",
         "signature": signature}
    )  # fmt: skip
    graph = model_bytes(model.params, "dlrm", signature)
    published = write_version(
        tmp_path, "features", manifest, graph, vocabularies, tables=feature_tables(model.features)
    )
    stored = read_version(published.path)
    assert set(stored.tables) == {"user_features.npz", "item_features.npz"}
    assert set(stored.tables["user_features.npz"]) == {"user_occupation", "user_age"}

    users, items = rows(300)
    feeds = {"user": users, "item": items}
    for spec in signature.inputs:
        if spec.table is not None:
            ids = users if spec.table == "user_features.npz" else items
            feeds[spec.name] = stored.tables[spec.table][spec.name][ids]
    (scores,) = ort.InferenceSession(stored.model).run([signature.score], feeds)
    np.testing.assert_allclose(scores, model.predict(users, items), atol=1e-5)
