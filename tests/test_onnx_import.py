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
from training.import_check import parity, sample_bags, unknown_feeds, weights
from training.onnx_import import (
    Adapted,
    ImportFailure,
    TensorMap,
    adapt,
    graph_inputs,
    resolve_mapping,
    table_rows,
)

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


FEATURES: tuple[list[str], list[str], dict[str, str], dict[str, str]] = (
    ["user", "age", "genres"],
    ["score"],
    {"user": "uid"},
    {},
)
BAGS = np.array([  # rows of the genres vocabulary, padded with 0 (also the unknown genre)
    [0, 0, 0],  # empty
    [2, 0, 0],
    [1, 1, 3],  # genre row 1 twice
    [4, 2, 4],  # all genres but row 3 (repeated row 4)
    [0, 3, 0],  # an unknown genre before row 3
], np.int64)  # fmt: skip
WEIGHTS = np.array([  # the same bags as the exporter's weights: genre rows 1..4, once each
    [0, 0, 0, 0],
    [0, 1, 0, 0],
    [1, 0, 1, 0],
    [0, 1, 0, 1],
    [0, 0, 1, 0],
], np.float32)  # fmt: skip


def feature_feeds() -> tuple[np.ndarray, np.ndarray]:
    """Five user rows (0: unknown) and their two dense values."""
    age = np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)
    return np.array([0, 1, 2, 3, 4], np.int64), age


def adapt_features(model: onnx.ModelProto, theirs: np.ndarray) -> tuple[TensorMap, Adapted]:
    """Adapt :func:`feature_model` ``model``; check the result as the server does on load, and
    that it scores :data:`BAGS` as the original scores ``theirs``, the same bags as it takes
    them."""
    mapping = resolve_mapping(model, *FEATURES)
    adapted = adapt(model, FEATURE_SIGNATURE, mapping)
    check_graph(FEATURE_SIGNATURE, *served_specs(adapted.model))
    users, age = feature_feeds()
    got = run(adapted.model, {"user": users + 1, "age": age, "genres": BAGS}, "score")
    expected = run(model, {"uid": users, "age": age, "genres": theirs}, "out")
    np.testing.assert_array_equal(got, expected[:, 0])
    return mapping, adapted


@pytest.mark.parametrize("opset", [13, 17, 21])
def test_a_bag_of_rows_feeds_the_graphs_weights_once_per_known_category(opset: int) -> None:
    model = feature_model().model(opset)
    mapping, adapted = adapt_features(model, WEIGHTS)
    assert (
        "input 'genres' feeds graph input 'genres' as 0/1 weights (padding and unknown rows "
        "weigh 0)" in adapted.changes
    )
    assert parity(model, adapted.model, FEATURE_SIGNATURE, mapping, rows=64) == 0.0


def test_the_parity_check_sees_a_bag_that_counts_a_repeated_category_twice() -> None:
    model = feature_model().model()
    mapping = resolve_mapping(model, *FEATURES)
    wrong = onnx.load_from_string(adapt(model, FEATURE_SIGNATURE, mapping).model)
    (scatter,) = [node for node in wrong.graph.node if node.op_type == "ScatterElements"]
    scatter.attribute.append(onnx.helper.make_attribute("reduction", "add"))  # opset 16+
    assert parity(model, wrong.SerializeToString(), FEATURE_SIGNATURE, mapping, rows=64) > 0.1


def test_sampled_bags_have_every_length_padding_repeats_and_unknown_categories() -> None:
    bags = sample_bags(np.random.default_rng(0), 400, 4, 50)
    assert bags.dtype == np.int64 and bags.shape == (400, 4)
    assert ((bags >= 0) & (bags < 50)).all()
    lengths = np.array([np.flatnonzero(bag).max(initial=-1) + 1 for bag in bags])
    assert set(lengths) == {0, 1, 2, 3, 4}
    assert any(0 in bag[: n - 1] for bag, n in zip(bags, lengths, strict=True))  # unknown inside
    assert any(len(set(bag[bag > 0])) < np.count_nonzero(bag) for bag in bags)  # a repeat
    np.testing.assert_array_equal(weights(BAGS, 5), WEIGHTS)
    users, age = feature_feeds()
    unknown = unknown_feeds(FEATURE_SIGNATURE, {"user": users + 1, "age": age, "genres": BAGS})
    assert not unknown["user"].any() and not unknown["genres"].any()
    assert unknown["genres"].shape == BAGS.shape and unknown["age"] is age


@pytest.mark.parametrize("rows_type", [TensorProto.INT64, TensorProto.INT32])
def test_a_graph_that_takes_rows_is_fed_them_as_they_are(rows_type: int) -> None:
    model = feature_model(rows=3, rows_type=rows_type).model()
    theirs = BAGS.astype(onnx.helper.tensor_dtype_to_np_dtype(rows_type))
    mapping, adapted = adapt_features(model, theirs)
    assert "input 'genres' feeds graph input 'genres' as its rows" in adapted.changes[2]
    assert table_rows(model, "genres") == 5
    assert parity(model, adapted.model, FEATURE_SIGNATURE, mapping, rows=64) == 0.0


@pytest.mark.parametrize(
    ("rows", "elem_type", "width", "found"),
    [
        (None, TensorProto.FLOAT, 5, "FP32 [N, 5]"),  # a column for the unknown genre too
        (4, TensorProto.INT64, 4, "INT64 [N, 4]"),  # longer bags than the signature's 3
        (None, TensorProto.DOUBLE, 4, "FP64 [N, 4]"),
    ],
)
def test_a_bag_of_another_type_or_width_is_refused_naming_what_it_needs(
    rows: int | None, elem_type: int, width: int, found: str
) -> None:
    model = feature_model(rows=rows).model()
    bag = next(i for i in model.graph.input if i.name == "genres")
    bag.type.tensor_type.elem_type = elem_type
    bag.type.tensor_type.shape.dim[1].dim_value = width
    mapping = resolve_mapping(model, *FEATURES)
    with pytest.raises(ImportFailure) as failure:
        adapt(model, FEATURE_SIGNATURE, mapping)
    assert str(failure.value) == (
        f"graph input 'genres' is {found}, but signature input 'genres' (multi_hot) needs "
        "FP32 [N, 4] (one weight per category of its 4, no column for the unknown row 0) or "
        "INT64 or INT32 [N, 3] (rows padded with 0)"
    )


def test_a_graph_below_the_opset_of_the_adapters_nodes_is_refused() -> None:
    """The id shift takes the maximum of int64 ids, which ONNX defines from opset 12."""
    model = dot_model().model()
    mapping = resolve_mapping(model, *TWO_ID, {"user": "user_id", "item": "item_id"}, {})
    model.opset_import[0].version = 11  # as an exporter at opset 11 would declare it
    with pytest.raises(ImportFailure, match="uses opset 11; export it with opset 12 or later"):
        adapt(model, two_id_signature(7, 8), mapping)


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
