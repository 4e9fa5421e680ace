"""A served version's data plane: inputs checked against the signature before they are queued,
ids looked up through the vocabularies, one bad request failing alone in its batch."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelrepo import (
    InputSpec,
    Manifest,
    OutputSpec,
    Role,
    Signature,
    Source,
    Vocabulary,
    write_version,
)
from service.errors import InferenceFailed, InvalidInput
from service.runtime.session import TensorSpec
from tests.factories import publish_random_version, reference_scores
from tests.model_tools import rewrite_manifest, run, serving


def test_serves_correct_scores_in_batches(tmp_path: Path) -> None:
    _, params = publish_random_version(tmp_path, "ranker", n_users=30, n_items=70)

    async def main() -> None:
        async with serving(tmp_path) as (reconciler, _):
            served = reconciler.registry.get("ranker")
            assert served.inputs == (
                TensorSpec("user", "INT64", (-1,)),
                TensorSpec("item", "INT64", (-1,)),
            )
            assert served.outputs == (TensorSpec("score", "FP32", (-1,)),)
            rng = np.random.default_rng(3)
            requests = [
                (rng.integers(0, 31, size), rng.integers(0, 71, size))
                for size in rng.integers(1, 400, 40)
            ]
            outs = await asyncio.gather(
                *(served.infer({"user": u, "item": i}) for u, i in requests)
            )
            for (users, items), out in zip(requests, outs, strict=True):
                expected = reference_scores(params, users, items)
                np.testing.assert_allclose(out["score"], expected, atol=1e-5)
            assert served.stats.execution_count < len(requests)

    run(main())


def test_infer_validates_before_queueing(tmp_path: Path) -> None:
    _, params = publish_random_version(tmp_path, "m", n_users=50, n_items=40)

    async def main() -> None:
        async with serving(tmp_path) as (reconciler, _):
            served = reconciler.registry.get("m")
            ok_user, ok_item = np.array([1, 2]), np.array([3, 4])
            # Out of range: the value as sent (a UINT64 not as the int64 it wraps to), never the
            # size of the table (41 items, 51 users).
            for inputs, sent, at in [
                ({"item": np.array([3, 41])}, 41, 1),
                ({"user": np.array([-1, 2])}, -1, 0),
                ({"item": np.array([3, 2**64 - 1], np.uint64)}, 18446744073709551615, 1),
                ({"user": np.array([2**63, 1], np.uint64)}, 2**63, 0),
                ({"item": np.array([[1], [300]], np.int16)}, 300, 1),
            ]:
                (name,) = inputs
                with pytest.raises(InvalidInput) as refused:
                    await served.infer({"user": ok_user, "item": ok_item, **inputs})
                assert refused.value.message == (
                    f"input '{name}' value {sent} at index {at} is out of range for model 'm' "
                    "version 1"
                )
            bad: list[tuple[dict[str, np.ndarray], str]] = [
                ({"user": ok_user, "item": ok_item.astype(np.float32)}, "datatype float32"),
                ({"user": ok_user}, r"missing \['item'\]"),
                ({"user": ok_user, "item": ok_item, "x": ok_item}, r"unexpected \['x'\]"),
                ({"user": ok_user, "item": np.array([1, 2, 3])}, "same number of rows"),
                ({"user": ok_user, "item": np.ones((2, 2), np.int64)}, r"shape \[2, 2\]"),
            ]
            for inputs, reason in bad:
                with pytest.raises(InvalidInput, match=reason):
                    await served.infer(inputs)
            assert served.stats.execution_count == 0

            out = await served.infer(
                {"user": ok_user.astype(np.int32).reshape(2, 1), "item": ok_item}
            )
            expected = reference_scores(params, ok_user, ok_item)
            np.testing.assert_allclose(out["score"], expected, atol=1e-5)
            empty = await served.infer({"user": ok_user[:0], "item": ok_item[:0]})
            assert empty["score"].shape == (0,) and empty["score"].dtype == np.float32

    run(main())


def poison_item_row(version_dir: Path, bad_row: int) -> None:
    """Make item row ``bad_row`` index far outside the item table: that row fails in the runtime."""
    model = onnx.load(str(version_dir / "model.onnx"))
    graph = model.graph
    for node in graph.node:
        node.input[:] = ["item_idx" if name == "item" else name for name in node.input]
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(bad_row, dtype=np.int64), "poison_row"),
            numpy_helper.from_array(np.array(10**6, dtype=np.int64), "poison_jump"),
        ]
    )
    prefix = [
        helper.make_node("Equal", ["item", "poison_row"], ["is_bad"]),
        helper.make_node("Cast", ["is_bad"], ["bad_int"], to=TensorProto.INT64),
        helper.make_node("Mul", ["bad_int", "poison_jump"], ["jump"]),
        helper.make_node("Add", ["item", "jump"], ["item_idx"]),
    ]
    nodes = [*prefix, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save_model(model, str(version_dir / "model.onnx"))
    rewrite_manifest(version_dir)


def test_failing_request_fails_alone_in_a_mixed_batch(tmp_path: Path) -> None:
    published, params = publish_random_version(tmp_path, "m", n_users=50, n_items=40)
    poison_item_row(published.path, bad_row=7)
    (tmp_path / "m" / "config.json").write_text('{"warmup": {"batch_sizes": [1]}}')

    async def main() -> None:
        async with serving(tmp_path) as (reconciler, _):
            served = reconciler.registry.get("m")
            rng = np.random.default_rng(0)
            requests = []
            for k in range(12):
                items = rng.choice(np.setdiff1d(np.arange(41), [7]), 20)
                if k == 6:
                    items[5] = 7
                requests.append((rng.integers(0, 51, 20), items))
            results = await asyncio.gather(
                *(served.infer({"user": u, "item": i}) for u, i in requests),
                return_exceptions=True,
            )
            for k, ((users, items), result) in enumerate(zip(requests, results, strict=True)):
                if k == 6:
                    assert isinstance(result, InferenceFailed)
                    assert "Gather" in result.message
                else:
                    assert isinstance(result, dict)
                    expected = reference_scores(params, users, items)
                    np.testing.assert_allclose(result["score"], expected, atol=1e-5)
            assert served.stats.fail_count == 1 and served.stats.success_count == 11
            assert served.stats.execution_count > 2  # the mixed batch was retried in parts

    run(main())


def test_unknown_ids_map_to_row_zero_and_are_counted(tmp_path: Path) -> None:
    publish_random_version(tmp_path, "m", n_users=5, n_items=5)

    async def main() -> None:
        async with serving(tmp_path) as (reconciler, metrics):
            served = reconciler.registry.get("m")
            user = served.signature.one_from(Source.USER)
            item = served.signature.one_from(Source.ITEM)
            assert user is not None and item is not None
            rows, unknown = served.rows(item, ["i4", "zz", "i0", "yy"])
            assert rows.tolist() == [5, 0, 1, 0] and unknown == ["zz", "yy"]
            rows, unknown = served.rows(user, ["u2"])
            assert rows.tolist() == [3] and unknown == []
            assert served.vocabulary(item).ids == [f"i{i}" for i in range(5)]
            value = metrics.registry.get_sample_value
            labels = {"model": "m", "version": "1", "kind": "item"}
            assert value("recserve_unknown_ids_total", labels) == 2
            assert value("recserve_unknown_ids_total", {**labels, "kind": "user"}) is None

    run(main())


# -- a signature beyond two ids: an id, a dense and a multi-hot input ----------------------------

N_USERS, WIDTH, N_GENRES, BAG = 4, 3, 5, 3


def publish_side_feature_model(repository: Path) -> dict[str, np.ndarray]:
    """score = user_bias[user] + features @ w_dense + sum of w_genres over the bag (row 0, the
    padding, weighs 0), as a hand-built graph."""
    rng = np.random.default_rng(7)
    weights = {
        "user_bias": rng.normal(size=(N_USERS + 1, 1)).astype(np.float32),
        "w_dense": rng.normal(size=(WIDTH, 1)).astype(np.float32),
        "w_genres": rng.normal(size=(N_GENRES, 1)).astype(np.float32),
    }
    weights["w_genres"][0] = 0.0
    nodes = [
        helper.make_node("Gather", ["user_bias", "user"], ["u"]),
        helper.make_node("MatMul", ["features", "w_dense"], ["f"]),
        helper.make_node("Gather", ["w_genres", "genres"], ["g3"]),
        helper.make_node("ReduceSum", ["g3", "axis"], ["g"], keepdims=0),
        helper.make_node("Add", ["u", "f"], ["uf"]),
        helper.make_node("Add", ["uf", "g"], ["total"]),
        helper.make_node("Squeeze", ["total", "axis"], ["score"]),
    ]
    initializers = [numpy_helper.from_array(v, k) for k, v in weights.items()]
    initializers.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "axis"))
    graph = helper.make_graph(
        nodes,
        "side_features",
        [
            helper.make_tensor_value_info("user", TensorProto.INT64, ["n"]),
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", WIDTH]),
            helper.make_tensor_value_info("genres", TensorProto.INT64, ["n", BAG]),
        ],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n"])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    signature = Signature(
        inputs=(
            InputSpec(
                name="user", role=Role.ID, source=Source.USER, dtype="INT64", shape=(-1,),
                n_rows=N_USERS + 1, vocabulary="users.txt",
            ),
            InputSpec(
                name="features", role=Role.DENSE, source=Source.CONTEXT, dtype="FP32",
                shape=(-1, WIDTH),
            ),
            InputSpec(
                name="genres", role=Role.MULTI_HOT, source=Source.CONTEXT, dtype="INT64",
                shape=(-1, BAG), n_rows=N_GENRES, vocabulary="genres.txt",
            ),
        ),
        outputs=(OutputSpec(name="score", dtype="FP32", shape=(-1,)),),
        score="score",
    )  # fmt: skip
    write_version(
        repository,
        "side",
        Manifest(kind="side-features", signature=signature),
        model.SerializeToString(),
        {
            "users.txt": Vocabulary([f"u{i}" for i in range(N_USERS)]),
            "genres.txt": Vocabulary([f"g{i}" for i in range(1, N_GENRES)]),
        },
    )
    return weights


def test_dense_and_multi_hot_inputs_are_checked_against_the_signature(tmp_path: Path) -> None:
    weights = publish_side_feature_model(tmp_path)
    rng = np.random.default_rng(0)
    users = np.array([0, 1, 4])
    features = rng.normal(size=(3, WIDTH)).astype(np.float32)
    genres = np.array([[1, 4, 0], [0, 0, 0], [2, 2, 3]], dtype=np.int32)  # converted to INT64

    async def main() -> None:
        async with serving(tmp_path) as (reconciler, _):
            served = reconciler.registry.get("side")
            assert served.inputs[1:] == (
                TensorSpec("features", "FP32", (-1, WIDTH)),
                TensorSpec("genres", "INT64", (-1, BAG)),
            )
            out = await served.infer({"user": users, "features": features, "genres": genres})
            expected = (
                weights["user_bias"][users, 0]
                + (features @ weights["w_dense"])[:, 0]
                + weights["w_genres"][genres, 0].sum(axis=1)
            )
            np.testing.assert_allclose(out["score"], expected, rtol=1e-5, atol=1e-5)

            ok = {"user": users, "features": features, "genres": genres}
            bad: list[tuple[dict[str, np.ndarray], str]] = [
                ({**ok, "features": features.astype(np.int64)}, r"'features' has datatype int64"),
                ({**ok, "features": features[:, :2]}, r"shape \[3, 2\]; expected \[-1, 3\]"),
                ({**ok, "features": features[:, 0]}, r"'features' has shape \[3\]"),
                ({**ok, "genres": genres[:2]}, r"same number of rows; 'genres' has 2"),
                ({**ok, "genres": genres[:, None]}, r"'genres' has shape"),
                ({**ok, "genres": genres[:, :2]}, r"'genres' has shape \[3, 2\]; expected"),
                ({**ok, "genres": genres.astype(np.float32)}, r"'genres' has datatype float32"),
                ({**ok, "genres": np.array([[1, 4, 0], [0, 5, 0], [2, 2, 3]])},
                 r"^input 'genres' value 5 at index 1, 1 is out of range for model 'side'"),
                ({**ok, "user": np.array([0, 1, 5])},
                 r"^input 'user' value 5 at index 2 is out of range for model 'side' version 1$"),
                ({"user": users, "features": features}, r"missing \['genres'\]"),
                ({**ok, "features": np.where(features > 1, np.nan, features)},
                 r"'features' row \d holds a value that is not finite"),
            ]  # fmt: skip
            for inputs, reason in bad:
                with pytest.raises(InvalidInput, match=reason):
                    await served.infer(inputs)
            assert served.stats.fail_count == 0 and served.stats.success_count == 1

            empty = await served.infer(
                {"user": users[:0], "features": features[:0], "genres": genres[:0]}
            )
            assert empty["score"].shape == (0,)

    run(main())
