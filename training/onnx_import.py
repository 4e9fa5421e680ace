"""Adapt an ONNX graph trained elsewhere to the repository contract, or say why it cannot be.

A model exported by another framework names its tensors as its author chose, often gives a score
of shape ``[N, 1]``, may take int32 ids, and keeps ids ``0..n-1`` in rows ``0..n-1`` of its
embedding tables, while the contract (:mod:`modelrepo`) wants the signature's names, a score of
shape ``[N]``, int64 rows, and row 0 of every vocabulary-bound table as the unknown row (line ``r``
of a vocabulary is row ``r + 1``). :func:`adapt` rewrites the graph around its own nodes, which it
never changes:

- every graph input is fed by a node from the signature input it is mapped to: an identity, a
  cast of int64 rows to the graph's int32, or, for a bag (multi-hot), the conversion of the
  contract's rows (int64 ``[N, L]``, padded with 0, row 0 also the unknown category) to the
  graph's own float bag ``[N, n_rows - 1]``, one weight per category it knows: 1 for a category in
  the bag however often it is there, 0 for any other (padding and unknown categories weigh
  nothing). A graph whose bag input is already integer rows ``[N, L]`` is taken to number them as
  the contract does (0 = padding, line ``r`` of the vocabulary = row ``r + 1``) and is fed them as
  they are;
- an id input that only indexes embedding tables (Gather on an initializer, through casts) gets a
  row prepended to each of those tables, the mean of the table's rows: an unknown id is scored as
  the average user (or item). An id input used any other way gets ``max(row - 1, 0)``: an unknown
  id is scored as the table's first id;
- each mapped graph output feeds the signature output, reshaped from ``[N, 1]`` to ``[N]``.

Errors are :class:`ImportFailure` with one line that names the tensor and what was expected.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import onnx
from onnx import TensorProto, helper

from modelrepo import InputSpec, OutputSpec, Role, Signature
from training.onnx_feeds import ROWS, WEIGHTS, Builder
from training.onnx_graph import free_names, gathered_tables, prepend_mean_row

IR_VERSION = 10
"""The highest IR version written: what every ONNX Runtime from 1.20 loads."""
MIN_OPSET = 12
"""Below it the nodes the adapter adds do not exist as it uses them (Slice with inputs and
ScatterElements from 11, Max over int64 ids from 12)."""

_V2_NAMES: dict[int, str] = {
    TensorProto.FLOAT: "FP32",
    TensorProto.DOUBLE: "FP64",
    TensorProto.FLOAT16: "FP16",
    TensorProto.INT64: "INT64",
    TensorProto.INT32: "INT32",
    TensorProto.BOOL: "BOOL",
}
_ID_TYPES: tuple[int, ...] = (TensorProto.INT64, TensorProto.INT32)


class ImportFailure(ValueError):
    """The file cannot be served under the signature; the message says which tensor and why."""


@dataclass(frozen=True)
class Tensor:
    """A graph input or output: element type, and shape with -1 for a dynamic dimension."""

    name: str
    elem_type: int
    shape: tuple[int, ...] | None  # None: the graph does not say

    def describe(self) -> str:
        dtype = _V2_NAMES.get(self.elem_type, TensorProto.DataType.Name(self.elem_type))
        if self.shape is None:
            return f"{dtype} [?]"
        return f"{dtype} [{', '.join('N' if d < 0 else str(d) for d in self.shape)}]"


@dataclass(frozen=True)
class TensorMap:
    """Signature name -> graph name, for every input and every output of the signature."""

    inputs: dict[str, str]
    outputs: dict[str, str]


@dataclass(frozen=True)
class Adapted:
    """The adapted graph, serialised, and what was done to it (recorded in the manifest)."""

    model: bytes
    changes: tuple[str, ...]
    unknown: dict[str, str]  # signature id input -> how it serves an unknown id


def load_graph(path: Path) -> onnx.ModelProto:
    """The ONNX model in ``path`` (external data included), checked by the ONNX checker."""
    try:
        model = onnx.load(str(path))
    except OSError as exc:
        raise ImportFailure(f"cannot read {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # protobuf's DecodeError and onnx's own, for bytes that are no model
        raise ImportFailure(f"{path} is not an ONNX model: {first_line(exc)}") from None
    if not model.graph.node or not model.graph.output:
        raise ImportFailure(f"{path} is not an ONNX model: it holds no graph")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ImportFailure(f"{path} is not a valid ONNX model: {first_line(exc)}") from None
    return model


def first_line(exc: Exception) -> str:
    """The first line of an error from onnx or ONNX Runtime (some run to pages)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _tensor(info: onnx.ValueInfoProto) -> Tensor:
    tensor_type = info.type.tensor_type
    shape = None
    if tensor_type.HasField("shape"):
        shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim)
    return Tensor(info.name, tensor_type.elem_type, shape)


def graph_inputs(model: onnx.ModelProto) -> list[Tensor]:
    """The inputs a caller feeds (initializers that old exporters list as inputs left out)."""
    constants = {t.name for t in model.graph.initializer}
    return [_tensor(i) for i in model.graph.input if i.name not in constants]


def graph_outputs(model: onnx.ModelProto) -> list[Tensor]:
    """The outputs, with shapes inferred where the graph does not declare them."""
    outputs = [_tensor(o) for o in model.graph.output]
    if all(o.shape is not None for o in outputs):
        return outputs
    inferred = onnx.shape_inference.infer_shapes(model)
    return [_tensor(o) for o in inferred.graph.output]


def resolve_mapping(
    model: onnx.ModelProto,
    inputs: Sequence[str],
    outputs: Sequence[str],
    given_inputs: Mapping[str, str],
    given_outputs: Mapping[str, str],
) -> TensorMap:
    """Each signature name's graph tensor; a name the graph shares needs no mapping, and a single
    output maps to the signature's single output. Every graph input must be mapped."""
    resolved_in = _resolve("input", inputs, [t.name for t in graph_inputs(model)], given_inputs)
    resolved_out = _resolve("output", outputs, [t.name for t in model.graph.output], given_outputs)
    mapped = set(resolved_in.values())
    for tensor in graph_inputs(model):
        if tensor.name not in mapped:
            raise ImportFailure(
                f"graph input '{tensor.name}' ({tensor.describe()}) is not mapped: the signature "
                f"takes {list(inputs)}; map it with --input NAME={tensor.name}, or describe an "
                "input for it in a --signature file"
            )
    return TensorMap(resolved_in, resolved_out)


def _resolve(
    kind: str, wanted: Sequence[str], graph: Sequence[str], given: Mapping[str, str]
) -> dict[str, str]:
    for name, tensor in given.items():
        if name not in wanted:
            raise ImportFailure(
                f"--{kind} {name}={tensor}: the signature has no {kind} '{name}' "
                f"(its {kind}s: {list(wanted)})"
            )
        if tensor not in graph:
            raise ImportFailure(
                f"--{kind} {name}={tensor}: the graph has no {kind} '{tensor}' "
                f"(its {kind}s: {list(graph)})"
            )
    resolved: dict[str, str] = {}
    for name in wanted:
        if name in given:
            resolved[name] = given[name]
        elif name in graph:
            resolved[name] = name
        elif kind == "output" and len(wanted) == 1 and len(graph) == 1:
            resolved[name] = graph[0]
        else:
            raise ImportFailure(
                f"signature {kind} '{name}' is not mapped: pass --{kind} {name}=TENSOR with "
                f"TENSOR one of the graph's {kind}s {list(graph)}"
            )
    used = list(resolved.values())
    twice = sorted({t for t in used if used.count(t) > 1})
    if twice:
        raise ImportFailure(f"graph {kind} {twice} is mapped to more than one signature {kind}")
    return resolved


def table_rows(model: onnx.ModelProto, name: str) -> int | None:
    """Rows of the embedding tables the graph input ``name`` indexes (the fewest, if they differ);
    None if it does anything else than index tables."""
    tables = gathered_tables(model.graph, name)
    if not tables:
        return None
    return min(int(t.dims[0]) for t in tables)


def adapt(model: onnx.ModelProto, signature: Signature, mapping: TensorMap) -> Adapted:
    """The graph rewritten to take and give exactly what ``signature`` declares."""
    model = copy.deepcopy(model)
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        raise ImportFailure(
            f"the graph uses opset {opset}; export it with opset {MIN_OPSET} or later"
        )
    found_in = {t.name: t for t in graph_inputs(model)}
    found_out = {t.name: t for t in graph_outputs(model)}
    for spec in signature.inputs:
        _check_input(spec, found_in[mapping.inputs[spec.name]])
    reshape = {
        spec.name: _check_output(spec, found_out[mapping.outputs[spec.name]])
        for spec in signature.outputs
    }
    ids = [spec for spec in signature.inputs if spec.role is Role.ID]
    prepend = {spec.name: gathered_tables(graph, mapping.inputs[spec.name]) for spec in ids}
    renamed = free_names(graph, [*mapping.inputs, *mapping.outputs])
    inputs = {k: renamed.get(v, v) for k, v in mapping.inputs.items()}
    outputs = {k: renamed.get(v, v) for k, v in mapping.outputs.items()}

    builder = Builder(graph)
    changes: list[str] = []
    unknown: dict[str, str] = {}
    for spec in signature.inputs:
        original = mapping.inputs[spec.name]
        elem_type = found_in[original].elem_type
        if spec.role is Role.MULTI_HOT:
            form = _bag_form(spec, found_in[original])
            what = builder.bag(spec, inputs[spec.name], form, elem_type)
        else:
            what = builder.feed(spec, inputs[spec.name], elem_type, bool(prepend.get(spec.name)))
        changes.append(f"input '{spec.name}' feeds graph input '{original}'{what}")
        if spec.role is Role.ID:
            tables = prepend[spec.name]
            if tables:
                for table in tables:
                    prepend_mean_row(table)
                names = ", ".join(f"'{t.name}'" for t in tables)
                unknown[spec.name] = f"mean row of {names} (prepended as row 0)"
            else:
                unknown[spec.name] = "row 0 of the original graph (rows shifted by one)"
    for out in signature.outputs:
        builder.give(out, outputs[out.name], reshape[out.name])
        dims = ", ".join("N" if d < 0 else str(d) for d in out.shape)
        how = f" reshaped to [{dims}]" if reshape[out.name] else ""
        changes.append(f"output '{out.name}' is graph output '{mapping.outputs[out.name]}'{how}")

    del graph.input[:]  # initializers listed as inputs too (IR < 4) are constants here
    graph.input.extend(_value_info(s) for s in signature.inputs)
    del graph.output[:]
    graph.output.extend(_value_info(s) for s in signature.outputs)
    nodes = [*builder.before, *graph.node, *builder.after]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(builder.constants)
    del graph.value_info[:]  # shapes recorded by the exporter: the tables' are now a row longer
    model.ir_version = min(model.ir_version, IR_VERSION)
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ImportFailure(f"the adapted graph fails the checker: {first_line(exc)}") from None
    return Adapted(model.SerializeToString(), tuple(changes), unknown)


def _check_input(spec: InputSpec, found: Tensor) -> None:
    """The graph input fits the signature input it is mapped to, once adapted."""
    if spec.role is Role.MULTI_HOT:
        _bag_form(spec, found)
        return
    width: int | None = None
    if spec.role is Role.ID:
        allowed, expected = _ID_TYPES, "INT64 or INT32 [N]"
    else:
        width = spec.width
        allowed, expected = (TensorProto.FLOAT,), f"FP32 [N, {width}]"
    if not _fits_input(found, allowed, width):
        _refuse_input(spec, found, expected)


def _bag_form(spec: InputSpec, found: Tensor) -> str:
    """How the graph takes the bag of signature input ``spec``: ``weights``, FP32 ``[N, C]`` with
    one column per category it knows (``C = n_rows - 1``: no column for the unknown category), or
    ``rows``, integers ``[N, L]`` numbered as the contract numbers them."""
    categories = (spec.n_rows or 1) - 1
    if _fits_input(found, (TensorProto.FLOAT,), categories):
        return WEIGHTS
    if _fits_input(found, _ID_TYPES, spec.width):
        return ROWS
    _refuse_input(
        spec,
        found,
        f"FP32 [N, {categories}] (one weight per category of its {categories}, no column for "
        f"the unknown row 0) or INT64 or INT32 [N, {spec.width}] (rows padded with 0)",
    )


def _fits_input(found: Tensor, allowed: Sequence[int], width: int | None) -> bool:
    """``found`` is of a type in ``allowed``, ``[N]`` (``width`` None) or ``[N, width]``, its
    batch axis dynamic (and its width, if the graph leaves it free)."""
    shape = found.shape
    rank = 1 if width is None else 2
    return found.elem_type in allowed and (
        shape is None
        or (len(shape) == rank and shape[0] == -1 and (width is None or shape[1] in (width, -1)))
    )


def _refuse_input(spec: InputSpec, found: Tensor, expected: str) -> NoReturn:
    hint = ""
    if found.shape and found.shape[0] > 0:
        hint = "; export it with a dynamic batch axis (dynamic_axes or dynamic_shapes)"
    raise ImportFailure(
        f"graph input '{found.name}' is {found.describe()}, but signature input "
        f"'{spec.name}' ({spec.role}) needs {expected}{hint}"
    )


def _check_output(spec: OutputSpec, found: Tensor) -> bool:
    """The graph output fits the signature output as it is (False) or reshaped from [.., 1]."""
    dtype = _V2_NAMES.get(found.elem_type)
    shape = found.shape
    same = shape is not None and len(shape) == len(spec.shape) and _fits(shape, spec.shape)
    squeezed = (
        shape is not None
        and len(shape) == len(spec.shape) + 1
        and shape[-1] == 1
        and _fits(shape[:-1], spec.shape)
    )
    if dtype != spec.dtype or not (same or squeezed):
        wanted = ", ".join("N" if d < 0 else str(d) for d in spec.shape)
        raise ImportFailure(
            f"graph output '{found.name}' is {found.describe()}, but signature output "
            f"'{spec.name}' is {spec.dtype} [{wanted}] (an output with one more axis of "
            "size 1 is reshaped; nothing else is)"
        )
    return squeezed


def _fits(graph: Sequence[int], declared: Sequence[int]) -> bool:
    """As the server checks a graph: a dimension the signature leaves free is free in the graph."""
    return all(g in (d, -1) for g, d in zip(graph, declared, strict=True))


def _value_info(spec: InputSpec | OutputSpec) -> onnx.ValueInfoProto:
    elem = {"INT64": TensorProto.INT64, "FP32": TensorProto.FLOAT}[spec.dtype]
    return helper.make_tensor_value_info(spec.name, elem, ["N" if d < 0 else d for d in spec.shape])
