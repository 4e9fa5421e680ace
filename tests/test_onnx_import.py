"""Adapting a foreign ONNX graph to the contract: names, dtypes, shapes and the unknown row 0."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from modelrepo import two_id_signature
from service.runtime.conformance import check_graph
from service.runtime.session import TensorSpec
from tests.import_graphs import (
    FEATURE_SIGNATURE,
    dot_model,
    feature_model,
    run,
    shifted_id_model,
)
from training.import_check import parity
from training.onnx_import import TensorMap, adapt, graph_inputs, resolve_mapping, table_rows

TWO_ID = (["user", "item"], ["score"])


def served_specs(model: bytes) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The adapted graph's inputs and outputs as the server reads them from ONNX Runtime."""
    import onnxruntime as ort

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = {"tensor(int64)": "INT64", "tensor(float)": "FP32"}

    def specs(args: list[ort.NodeArg]) -> list[TensorSpec]:
        shapes = [tuple(d if isinstance(d, int) else -1 for d in a.shape) for a in args]
        return [TensorSpec(a.name, names[a.type], s) for a, s in zip(args, shapes, strict=True)]

    return specs(session.get_inputs()), specs(session.get_outputs())


def test_int32_ids_swapped_names_and_a_column_score_are_adapted() -> None:
    # The graph calls its user input "item" and its item input "user", takes int32 and gives
    # its score as [N, 1] under the signature's own output name.
    original = dot_model(user="item", item="user", output="score", id_type=TensorProto.INT32)
    model = original.model()
    mapping = resolve_mapping(model, *TWO_ID, {"user": "item", "item": "user"}, {})
    assert mapping == TensorMap({"user": "item", "item": "user"}, {"score": "score"})
    signature = two_id_signature(7, 8)
    adapted = adapt(model, signature, mapping)

    check_graph(signature, *served_specs(adapted.model))  # what the server checks on load
    users = np.arange(6, dtype=np.int64).repeat(7)
    items = np.tile(np.arange(7, dtype=np.int64), 6)
    got = run(adapted.model, {"user": users + 1, "item": items + 1}, "score")
    expected = run(model, {"item": users.astype(np.int32), "user": items.astype(np.int32)}, "score")
    assert got.shape == (42,)
    np.testing.assert_array_equal(got, expected[:, 0])
    assert any("cast to INT32" in change for change in adapted.changes)
    assert parity(model, adapted.model, signature, mapping, rows=64) == 0.0


def test_an_unknown_id_scores_as_the_mean_row_of_its_tables() -> None:
    model = dot_model().model()  # linear in each row: the mean row scores the mean score
    assert (table_rows(model, "user_id"), table_rows(model, "item_id")) == (6, 7)
    mapping = resolve_mapping(model, *TWO_ID, {"user": "user_id", "item": "item_id"}, {})
    adapted = adapt(model, two_id_signature(7, 8), mapping)

    every_user = np.arange(6, dtype=np.int64)
    for item in range(7):
        by_user = run(model, {"user_id": every_user, "item_id": np.full(6, item)}, "prob")
        unknown = run(adapted.model, {"user": np.array([0]), "item": np.array([item + 1])}, "score")
        assert unknown[0] == pytest.approx(by_user.mean(), abs=1e-6)
    assert adapted.unknown == {
        "user": "mean row of 'U' (prepended as row 0)",
        "item": "mean row of 'I' (prepended as row 0)",
    }


def test_an_id_used_beyond_table_lookups_is_shifted_and_unknown_is_its_first_row() -> None:
    model = shifted_id_model().model()
    assert table_rows(model, "user_id") is None
    mapping = resolve_mapping(model, *TWO_ID, {"user": "user_id", "item": "item_id"}, {})
    adapted = adapt(model, two_id_signature(7, 8), mapping)

    users = np.array([0, 1, 4, 6], np.int64)  # 0: unknown
    items = np.array([3, 1, 7, 2], np.int64)
    got = run(adapted.model, {"user": users, "item": items}, "score")
    original_users = np.maximum(users - 1, 0)
    expected = run(model, {"user_id": original_users, "item_id": items - 1}, "prob")
    np.testing.assert_array_equal(got, expected)
    assert adapted.unknown["user"] == "row 0 of the original graph (rows shifted by one)"


def test_a_feature_model_takes_its_bag_with_the_unknown_column_first() -> None:
    model = feature_model().model()
    mapping = resolve_mapping(model, ["user", "age", "genres"], ["score"], {"user": "uid"}, {})
    adapted = adapt(model, FEATURE_SIGNATURE, mapping)
    check_graph(FEATURE_SIGNATURE, *served_specs(adapted.model))

    rng = np.random.default_rng(0)
    rows = np.array([0, 1, 2, 3, 4], np.int64)
    age = rng.normal(size=(5, 2)).astype(np.float32)
    bag = (rng.random((5, 4)) < 0.5).astype(np.float32)
    served_bag = np.concatenate([np.ones((5, 1), np.float32), bag], axis=1)  # unknown: ignored
    got = run(adapted.model, {"user": rows + 1, "age": age, "genres": served_bag}, "score")
    expected = run(model, {"uid": rows, "age": age, "genres": bag}, "out")
    np.testing.assert_allclose(got, expected[:, 0], rtol=1e-6)
    assert parity(model, adapted.model, FEATURE_SIGNATURE, mapping, rows=32) == 0.0


def test_initializers_listed_as_inputs_need_no_mapping() -> None:
    g = dot_model()
    model = g.model()
    model.graph.input.extend(
        onnx.helper.make_tensor_value_info(name, TensorProto.FLOAT, list(g.tables[name].shape))
        for name in ("U", "I")
    )  # as exporters writing IR 3 list them
    assert [t.name for t in graph_inputs(model)] == ["user_id", "item_id"]
    mapping = resolve_mapping(model, *TWO_ID, {"user": "user_id", "item": "item_id"}, {})
    adapted = adapt(model, two_id_signature(7, 8), mapping)
    assert [t.name for t in graph_inputs(onnx.load_from_string(adapted.model))] == ["user", "item"]
