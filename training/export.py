"""Export trained parameters to an ONNX graph that honours the model-repository contract.

Inputs ``user`` and ``item`` are int64 embedding-row indices of shape [N]; the output ``score`` is
the float32 probability of shape [N]. The graph uses only Gather, Concat, Gemm, Relu, Mul, Sigmoid
and Squeeze, at an explicit opset and IR version that ONNX Runtime 1.20+ loads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 10
INPUT_NAMES = ("user", "item")
OUTPUT_NAME = "score"


def _tower(nodes: list[onnx.NodeProto], params: Mapping[str, np.ndarray], x: str) -> str:
    """Dense+ReLU layers ``W0, b0, W1, b1, ...`` applied to ``x``; returns the output name."""
    layer = 0
    while f"W{layer}" in params:
        out = f"tower{layer}"
        nodes.append(helper.make_node("Gemm", [x, f"W{layer}", f"b{layer}"], [f"{out}_lin"]))
        nodes.append(helper.make_node("Relu", [f"{out}_lin"], [out]))
        x = out
        layer += 1
    return x


def build_graph(params: Mapping[str, np.ndarray], kind: str) -> onnx.ModelProto:
    """Build the ONNX model for an ``mlp`` (NCF-MLP) or ``neumf`` parameter set."""
    nodes: list[onnx.NodeProto] = []
    if kind == "mlp":
        user_table, item_table = "user_emb", "item_emb"
    elif kind == "neumf":
        user_table, item_table = "mlp_user_emb", "mlp_item_emb"
    else:
        raise ValueError(f"unknown model kind {kind!r}; expected 'mlp' or 'neumf'")
    nodes.append(helper.make_node("Gather", [user_table, "user"], ["u_vec"], axis=0))
    nodes.append(helper.make_node("Gather", [item_table, "item"], ["i_vec"], axis=0))
    nodes.append(helper.make_node("Concat", ["u_vec", "i_vec"], ["mlp_in"], axis=1))
    head = _tower(nodes, params, "mlp_in")
    if kind == "neumf":
        nodes.append(helper.make_node("Gather", ["gmf_user_emb", "user"], ["gu_vec"], axis=0))
        nodes.append(helper.make_node("Gather", ["gmf_item_emb", "item"], ["gi_vec"], axis=0))
        nodes.append(helper.make_node("Mul", ["gu_vec", "gi_vec"], ["gmf_out"]))
        nodes.append(helper.make_node("Concat", ["gmf_out", head], ["joined"], axis=1))
        head = "joined"
    nodes.append(helper.make_node("Gemm", [head, "w_out", "b_out"], ["logit2d"]))
    nodes.append(helper.make_node("Sigmoid", ["logit2d"], ["prob2d"]))
    nodes.append(helper.make_node("Squeeze", ["prob2d", "squeeze_axes"], [OUTPUT_NAME]))

    initializers = [
        numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name)
        for name, value in sorted(params.items())
    ]
    initializers.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "squeeze_axes"))
    graph = helper.make_graph(
        nodes,
        f"recserve_{kind}",
        inputs=[helper.make_tensor_value_info(n, TensorProto.INT64, ["N"]) for n in INPUT_NAMES],
        outputs=[helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N"])],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="recserve.training",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def export_onnx(params: Mapping[str, np.ndarray], kind: str, path: Path) -> None:
    """Write ``model.onnx`` for the given parameters to ``path``."""
    onnx.save_model(build_graph(params, kind), str(path))


def model_bytes(params: Mapping[str, np.ndarray], kind: str) -> bytes:
    """The serialised ONNX model for the given parameters (what ``model.onnx`` holds)."""
    return build_graph(params, kind).SerializeToString()


def onnx_parity(
    path: Path,
    predict: Callable[[np.ndarray, np.ndarray], np.ndarray],
    users: np.ndarray,
    items: np.ndarray,
) -> float:
    """Largest absolute difference between ONNX Runtime (CPU) and ``predict`` on the given rows."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {"user": users.astype(np.int64), "item": items.astype(np.int64)}
    (onnx_scores,) = session.run([OUTPUT_NAME], feeds)
    reference = np.asarray(predict(users, items), dtype=np.float64)
    return float(np.max(np.abs(np.asarray(onnx_scores, dtype=np.float64) - reference), initial=0.0))
