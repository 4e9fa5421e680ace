"""Small ONNX graphs as other frameworks export them, for the tests of ``recserve import``.

Each is built with ``onnx.helper`` at an explicit IR version and opset, and its tables are returned
beside it so that a test can compute what a score must be.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from modelrepo import InputSpec, OutputSpec, Role, Signature, Source

IR_VERSION, OPSET = 10, 17


@dataclass
class Graph:
    """A model under construction: nodes, tables and the declared inputs and outputs."""

    nodes: list[onnx.NodeProto] = field(default_factory=list)
    tables: dict[str, np.ndarray] = field(default_factory=dict)
    inputs: list[onnx.ValueInfoProto] = field(default_factory=list)
    outputs: list[onnx.ValueInfoProto] = field(default_factory=list)

    def node(self, op: str, inputs: list[str], output: str, **attributes: Any) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], **attributes))
        return output

    def table(self, name: str, value: np.ndarray) -> str:
        self.tables[name] = value
        return name

    def take(self, name: str, elem_type: int, shape: list[Any]) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def give(self, name: str, shape: list[Any]) -> None:
        self.outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))

    def model(self, opset: int = OPSET) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            "exported",
            self.inputs,
            self.outputs,
            [numpy_helper.from_array(v, k) for k, v in self.tables.items()],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model, full_check=True)
        return model

    def save(self, path: Path, opset: int = OPSET) -> Path:
        onnx.save(self.model(opset), str(path))
        return path


def dot_model(
    *,
    user: str = "user_id",
    item: str = "item_id",
    output: str = "prob",
    id_type: int = TensorProto.INT64,
    batch: Any = "batch",
    n_users: int = 6,
    n_items: int = 7,
    dim: int = 3,
    keep_axis: bool = True,
    sigmoid: bool = False,
) -> Graph:
    """score = sum(user_table[user] * item_table[item]) (sigmoid of it if asked), ``[N, 1]``
    with ``keep_axis``; linear in the user's row unless ``sigmoid``."""
    rng = np.random.default_rng(7)
    g = Graph()
    users = g.take(user, id_type, [batch])
    items = g.take(item, id_type, [batch])
    user_table = g.table("U", rng.normal(size=(n_users, dim)).astype(np.float32))
    item_table = g.table("I", rng.normal(size=(n_items, dim)).astype(np.float32))
    u = g.node("Gather", [user_table, users], "eu")
    i = g.node("Gather", [item_table, items], "ei")
    product = g.node("Mul", [u, i], "product")
    axes = g.table("axes", np.array([1], np.int64))
    summed = "logit" if sigmoid else output
    total = g.node("ReduceSum", [product, axes], summed, keepdims=int(keep_axis))
    if sigmoid:
        g.node("Sigmoid", [total], output)
    g.give(output, [batch, 1] if keep_axis else [batch])
    return g


def shifted_id_model() -> Graph:
    """The user id also enters arithmetic (a per-id bias), so its rows cannot be moved."""
    g = dot_model(keep_axis=False, output="dot")
    as_float = g.node("Cast", ["user_id"], "user_float", to=TensorProto.FLOAT)
    bias = g.node("Mul", [as_float, g.table("per_id", np.array(0.5, np.float32))], "bias")
    g.node("Add", ["dot", bias], "prob")
    g.outputs.clear()
    g.give("prob", ["batch"])
    return g


def feature_model(rows: int | None = None, rows_type: int = TensorProto.INT64) -> Graph:
    """A user id, two dense features and a bag of 4 genres. As most exporters write it, the bag is
    one float weight per genre ``[n, 4]`` (the exporter knows no unknown genre), summed over the
    genre table; with ``rows``, the graph takes up to ``rows`` genre rows ``[n, rows]`` as the
    contract does (0 = padding, genre ``g`` = row ``g + 1``) and sums their rows of a table whose
    row 0 is zero."""
    rng = np.random.default_rng(3)
    g = Graph()
    user = g.node("Gather", [g.table("U", rng.normal(size=(5, 2)).astype(np.float32)),
                             g.take("uid", TensorProto.INT64, ["n"])], "eu")  # fmt: skip
    dense = g.take("age", TensorProto.FLOAT, ["n", 2])
    genre_rows = rng.normal(size=(4, 2)).astype(np.float32)
    if rows is None:
        genres = g.take("genres", TensorProto.FLOAT, ["n", 4])
        bag = g.node("MatMul", [genres, g.table("G", genre_rows)], "bag")
    else:
        genres = g.take("genres", rows_type, ["n", rows])
        padded = np.concatenate([np.zeros((1, 2), np.float32), genre_rows])
        gathered = g.node("Gather", [g.table("G", padded), genres], "genre_rows")
        summed = [gathered, g.table("bag_axis", np.array([1], np.int64))]
        bag = g.node("ReduceSum", summed, "bag", keepdims=0)
    total = g.node("Sum", [user, bag, dense], "total")
    g.node("ReduceSum", [total, g.table("axes", np.array([1], np.int64))], "out", keepdims=1)
    g.give("out", ["n", 1])
    return g


FEATURE_SIGNATURE = Signature(
    inputs=(
        InputSpec(name="user", role=Role.ID, source=Source.USER, dtype="INT64", shape=(-1,),
                  n_rows=6, vocabulary="users.txt"),
        InputSpec(name="age", role=Role.DENSE, source=Source.CONTEXT, dtype="FP32", shape=(-1, 2)),
        InputSpec(name="genres", role=Role.MULTI_HOT, source=Source.CONTEXT, dtype="INT64",
                  shape=(-1, 3), n_rows=5, vocabulary="genres.txt"),
    ),
    outputs=(OutputSpec(name="score", dtype="FP32", shape=(-1,)),),
    score="score",
)  # fmt: skip


def run(model: bytes | onnx.ModelProto, feeds: dict[str, np.ndarray], output: str) -> np.ndarray:
    """One output of ``model`` under ONNX Runtime (CPU)."""
    data = model if isinstance(model, bytes) else model.SerializeToString()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    (result,) = session.run([output], feeds)
    return np.asarray(result)


def changed(signature: Signature, name: str, **fields: Any) -> Signature:
    """``signature`` with ``fields`` of input ``name`` changed, validated again."""
    raw = signature.model_dump(mode="json")
    for spec in raw["inputs"]:
        if spec["name"] == name:
            spec.update(fields)
    return Signature.model_validate(raw)
