"""Export trained parameters to an ONNX graph that honours the model's signature.

The graph's inputs and outputs are the signature's (for today's kinds the two-id one: int64 rows
``user`` and ``item`` of shape [N] -> float32 ``score`` [N]); the nodes between are the kind's
(:meth:`training.models.Model.graph`). The graph uses only Gather, Concat, Gemm, Relu, Mul, Sigmoid
and Squeeze, at an explicit opset and IR version that ONNX Runtime 1.20+ loads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

from modelrepo import Signature, Source
from training.models import model_class

OPSET = 17
IR_VERSION = 10
_TENSOR_TYPES = {"INT64": TensorProto.INT64, "FP32": TensorProto.FLOAT}


class _Nodes:
    """The nodes and constants of a graph under construction (``models.GraphNodes``)."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.constants: list[onnx.TensorProto] = []

    def add(self, op: str, inputs: list[str], output: str, **attributes: Any) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], **attributes))
        return output

    def constant(self, name: str, value: NDArray[Any]) -> str:
        self.constants.append(numpy_helper.from_array(value, name))
        return name


def _value_info(name: str, dtype: str, shape: tuple[int, ...]) -> onnx.ValueInfoProto:
    dims = ["N" if dim < 0 else dim for dim in shape]
    return helper.make_tensor_value_info(name, _TENSOR_TYPES[dtype], dims)


def build_graph(params: Mapping[str, np.ndarray], kind: str) -> onnx.ModelProto:
    """Build the ONNX model for a parameter set of the model kind named ``kind``."""
    cls = model_class(kind)
    signature = cls.signature_for(params)
    nodes = _Nodes()
    cls.graph(nodes, params, signature)
    initializers = [
        numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name)
        for name, value in sorted(params.items())
    ]
    graph = helper.make_graph(
        nodes.nodes,
        f"recserve_{kind}",
        inputs=[_value_info(s.name, s.dtype, s.shape) for s in signature.inputs],
        outputs=[_value_info(s.name, s.dtype, s.shape) for s in signature.outputs],
        initializer=initializers + nodes.constants,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="recserve.training",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def model_bytes(params: Mapping[str, np.ndarray], kind: str) -> bytes:
    """The serialised ONNX model for the given parameters (what a version's graph file holds)."""
    data: bytes = build_graph(params, kind).SerializeToString()
    return data


def export_onnx(params: Mapping[str, np.ndarray], kind: str, path: Path) -> None:
    """Write the ONNX model for the given parameters to ``path``."""
    path.write_bytes(model_bytes(params, kind))


def onnx_parity(
    model: bytes,
    predict: Callable[[np.ndarray, np.ndarray], np.ndarray],
    users: np.ndarray,
    items: np.ndarray,
    signature: Signature,
) -> float:
    """Largest absolute difference between ONNX Runtime (CPU) and ``predict`` on the given rows.

    ``model`` is the serialised graph; ``signature`` names its user and item inputs and the score.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    feeds: dict[str, np.ndarray] = {}
    for source, rows in ((Source.USER, users), (Source.ITEM, items)):
        spec = signature.one_from(source)
        if spec is None:
            raise ValueError(f"the signature has no {source} input")
        feeds[spec.name] = rows.astype(np.int64)
    (onnx_scores,) = session.run([signature.score], feeds)
    reference = np.asarray(predict(users, items), dtype=np.float64)
    return float(np.max(np.abs(np.asarray(onnx_scores, dtype=np.float64) - reference), initial=0.0))
