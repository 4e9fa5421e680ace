"""Export trained parameters to an ONNX graph that honours the model's signature.

The graph's inputs and outputs are the signature's (for today's kinds the two-id one: int64 rows
``user`` and ``item`` of shape [N] -> float32 ``score`` [N]); the nodes between are the kind's
(:meth:`training.models.Model.graph`). The graph uses only Gather, Concat, Gemm, Relu, Mul, Sigmoid
and Squeeze (and, for the side features of ``dlrm``: Equal, Not, Cast, Unsqueeze, ReduceSum, Max,
Div, Reshape, Transpose, MatMul), at an explicit opset and IR version that ONNX Runtime 1.20+ loads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

from modelrepo import Role, Signature, Source
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


def build_graph(
    params: Mapping[str, np.ndarray], kind: str, signature: Signature | None = None
) -> onnx.ModelProto:
    """Build the ONNX model for a parameter set of the model kind named ``kind``.

    ``signature`` is the model's (``model.signature``); without it, the one its kind derives from
    the parameters (which a model with side features refuses: its signature is its features').
    """
    cls = model_class(kind)
    signature = signature or cls.signature_for(params)
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


def model_bytes(
    params: Mapping[str, np.ndarray], kind: str, signature: Signature | None = None
) -> bytes:
    """The serialised ONNX model for the given parameters (what a version's graph file holds)."""
    data: bytes = build_graph(params, kind, signature).SerializeToString()
    return data


def export_onnx(
    params: Mapping[str, np.ndarray], kind: str, path: Path, signature: Signature | None = None
) -> None:
    """Write the ONNX model for the given parameters to ``path``."""
    path.write_bytes(model_bytes(params, kind, signature))


class SideInputs(Protocol):
    """A model with inputs beside the two ids, as the parity check calls it (``models.DLRM``)."""

    def inputs_for(self, users: np.ndarray, items: np.ndarray) -> dict[str, np.ndarray]:
        """Every input's feed for id rows (the features the model's tables hold for them)."""
        ...

    def predict_inputs(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        """Probabilities for explicit feeds of every input."""
        ...


def random_feeds(
    signature: Signature, users: np.ndarray, items: np.ndarray, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Feeds of every input for the given id rows, the others drawn over their whole range:
    categories with the unknown row 0, bags of every length from empty to full (padded with 0,
    with unknown entries among the categories), and standardised numbers. Row 0 of the batch has
    every feature at its default: category 0, an empty bag, zeros."""
    n = users.shape[0]
    feeds: dict[str, np.ndarray] = {}
    for spec in signature.inputs:
        if spec.source in (Source.USER, Source.ITEM):
            feeds[spec.name] = (users if spec.source is Source.USER else items).astype(np.int64)
        elif spec.role is Role.DENSE:
            feeds[spec.name] = rng.normal(0.0, 1.5, (n, spec.width)).astype(np.float32)
            feeds[spec.name][:1] = 0.0
        else:
            values = rng.integers(0, spec.n_rows or 1, (n, spec.width), dtype=np.int64)
            lengths = rng.integers(0, spec.width + 1, (n, 1))
            values[np.arange(spec.width) >= lengths] = 0  # padding after each bag's entries
            values[:1] = 0
            feeds[spec.name] = values if spec.role is Role.MULTI_HOT else values[:, 0]
    return feeds


def onnx_parity(
    model: bytes,
    predict: Callable[[np.ndarray, np.ndarray], np.ndarray],
    users: np.ndarray,
    items: np.ndarray,
    signature: Signature,
    side: SideInputs | None = None,
    seed: int = 0,
) -> float:
    """Largest absolute difference between ONNX Runtime (CPU) and ``predict`` on the given rows.

    ``model`` is the serialised graph; ``signature`` names its user and item inputs and the score.
    A model with inputs beside the ids (``side``: the model itself) is checked on all of them:
    on the features its tables hold for the rows (against ``predict``), and on
    :func:`random_feeds` drawn with ``seed`` (against ``side.predict_inputs``).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    def gap(feeds: Mapping[str, np.ndarray], reference: np.ndarray) -> float:
        (onnx_scores,) = session.run([signature.score], dict(feeds))
        difference = np.asarray(onnx_scores, dtype=np.float64) - np.asarray(reference, np.float64)
        return float(np.max(np.abs(difference), initial=0.0))

    feeds: dict[str, np.ndarray] = {}
    for source, rows in ((Source.USER, users), (Source.ITEM, items)):
        spec = signature.one_from(source)
        if spec is None:
            raise ValueError(f"the signature has no {source} input")
        feeds[spec.name] = rows.astype(np.int64)
    if len(signature.inputs) == len(feeds):
        return gap(feeds, predict(users, items))
    if side is None:
        raise ValueError("a model with side inputs is checked on them: pass the model as side")
    drawn = random_feeds(signature, users, items, np.random.default_rng(seed))
    on_tables = gap(side.inputs_for(users, items), predict(users, items))
    return max(on_tables, gap(drawn, side.predict_inputs(drawn)))
