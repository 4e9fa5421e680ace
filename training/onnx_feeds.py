"""The nodes :mod:`training.onnx_import` adds around a graph: those that feed each graph input
from its signature input, and those that give each signature output from its graph output.

They use operators of opset 11 (the lowest :mod:`training.onnx_import` accepts) whose later
versions behave the same, and no intermediate larger than the graph input it computes.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from modelrepo import InputSpec, OutputSpec, Role
from training.onnx_graph import tensor_names

ROWS, WEIGHTS = "rows", "weights"
"""How a graph takes a bag: the contract's padded rows as they are, or one weight per category."""


def _scalar(value: float) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array([value], np.float32), "value")


class Builder:
    """The nodes and constants added before and after the graph's own nodes."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.taken = set(tensor_names(graph))
        self.before: list[onnx.NodeProto] = []
        self.after: list[onnx.NodeProto] = []
        self.constants: list[onnx.TensorProto] = []

    def fresh(self, base: str) -> str:
        name, n = base, 0
        while name in self.taken:
            n += 1
            name = f"{base}_{n}"
        self.taken.add(name)
        return name

    def constant(self, base: str, value: np.ndarray) -> str:
        name = self.fresh(base)
        self.constants.append(numpy_helper.from_array(value, name))
        return name

    def feed(self, spec: InputSpec, target: str, elem_type: int, tables: bool) -> str:
        """Nodes computing the graph input ``target`` from the signature input; what they do."""
        source, what = spec.name, ""
        if spec.role is Role.ID and not tables:
            one = self.constant(f"{spec.name}_one", np.array(1, np.int64))
            zero = self.constant(f"{spec.name}_zero", np.array(0, np.int64))
            shifted, clamped = self.fresh(f"{spec.name}_shifted"), self.fresh(f"{spec.name}_row")
            self.before.append(helper.make_node("Sub", [source, one], [shifted]))
            self.before.append(helper.make_node("Max", [shifted, zero], [clamped]))
            source, what = clamped, " as row - 1"
        if elem_type == TensorProto.INT32:
            self.before.append(helper.make_node("Cast", [source], [target], to=elem_type))
            return what + " cast to INT32"
        self.before.append(helper.make_node("Identity", [source], [target]))
        return what

    def bag(self, spec: InputSpec, target: str, form: str, elem_type: int) -> str:
        """Nodes computing the graph's bag ``target`` from the signature's padded rows.

        For a weights graph: a zero matrix ``[N, n_rows]`` gets a 1 scattered at every row of the
        bag (a repeated row is set twice to the same 1; padding sets column 0), then column 0 is
        sliced off. It costs ``N * (L + n_rows)`` values, never ``N * L * n_rows``. The rows are
        in ``[0, n_rows)``: the server checks them before they are queued."""
        if form == ROWS:
            return " as its rows" + self.feed(spec, target, elem_type, False)
        assert spec.n_rows is not None  # the signature requires it of a multi-hot input
        name = spec.name
        shape, batch, wide = (self.fresh(f"{name}_{part}") for part in ("shape", "n", "shape_wide"))
        first = self.constant(f"{name}_first", np.array([0], np.int64))
        columns = self.constant(f"{name}_columns", np.array([spec.n_rows], np.int64))
        zeros, ones, scattered = (self.fresh(f"{name}_{part}") for part in ("zeros", "ones", "hot"))
        starts = self.constant(f"{name}_from", np.array([1], np.int64))
        ends = self.constant(f"{name}_to", np.array([spec.n_rows], np.int64))
        axes = self.constant(f"{name}_axis", np.array([1], np.int64))
        self.before.extend([
            helper.make_node("Shape", [name], [shape]),
            helper.make_node("Gather", [shape, first], [batch], axis=0),
            helper.make_node("Concat", [batch, columns], [wide], axis=0),
            helper.make_node("ConstantOfShape", [wide], [zeros], value=_scalar(0.0)),
            helper.make_node("ConstantOfShape", [shape], [ones], value=_scalar(1.0)),
            helper.make_node("ScatterElements", [zeros, name, ones], [scattered], axis=1),
            helper.make_node("Slice", [scattered, starts, ends, axes], [target]),
        ])  # fmt: skip
        return " as 0/1 weights (padding and unknown rows weigh 0)"

    def give(self, spec: OutputSpec, source: str, reshape: bool) -> None:
        if reshape:
            shape = self.constant(f"{spec.name}_shape", np.array(spec.shape, np.int64))
            self.after.append(helper.make_node("Reshape", [source, shape], [spec.name]))
        else:
            self.after.append(helper.make_node("Identity", [source], [spec.name]))
