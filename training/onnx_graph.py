"""Tensor names and embedding tables in an ONNX graph: what :mod:`training.onnx_import` rewrites.

A graph names every tensor once (single static assignment), including in the bodies of If, Loop and
Scan nodes, which may read names of the graph around them: renaming and searching go through them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

_FLOAT_TABLES: tuple[int, ...] = (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16)


def gathered_tables(graph: onnx.GraphProto, name: str) -> list[onnx.TensorProto]:
    """The float initializers that ``name`` only ever indexes (row Gather, through Casts), each
    indexed by nothing else; empty when the input is used any other way."""
    initializers = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for tensor in node.input:
            consumers.setdefault(tensor, []).append(node)
    outputs = {o.name for o in graph.output}
    nested = set(_subgraph_inputs(graph.node))
    tables: dict[str, onnx.TensorProto] = {}
    gathers: set[int] = set()
    pending = [name]
    while pending:
        current = pending.pop()
        if current in outputs or current in nested:
            return []
        for node in consumers.get(current, []):
            if node.op_type == "Cast" and node.input[0] == current:
                pending.append(node.output[0])
                continue
            table = initializers.get(node.input[0]) if node.op_type == "Gather" else None
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            if table is None or node.input[1:] != [current] or axis != 0:
                return []
            if table.data_type not in _FLOAT_TABLES or len(table.dims) < 2:
                return []
            tables[table.name] = table
            gathers.add(id(node))
    for table_name in tables:
        if any(id(node) not in gathers for node in consumers.get(table_name, [])):
            return []  # the table is also read some other way: its rows must not move
        if table_name in outputs or table_name in nested:
            return []
    return list(tables.values())


def prepend_mean_row(table: onnx.TensorProto) -> None:
    """Make row 0 of ``table`` the mean of its rows; row r becomes row r + 1."""
    rows = numpy_helper.to_array(table)
    mean = rows.astype(np.float64).mean(axis=0, keepdims=True).astype(rows.dtype)
    table.CopyFrom(numpy_helper.from_array(np.concatenate([mean, rows]), table.name))


def _subgraphs(nodes: Iterable[onnx.NodeProto]) -> Iterator[onnx.GraphProto]:
    for node in nodes:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield attribute.g
            yield from attribute.graphs


def _subgraph_inputs(nodes: Iterable[onnx.NodeProto]) -> Iterator[str]:
    """Tensor names read inside subgraphs (If, Loop, Scan bodies), outer-scope ones included."""
    for sub in _subgraphs(nodes):
        for node in sub.node:
            yield from node.input
        yield from _subgraph_inputs(sub.node)


def tensor_names(graph: onnx.GraphProto) -> Iterator[str]:
    """Every tensor name of the graph and its subgraphs."""
    for node in graph.node:
        yield from node.input
        yield from node.output
    yield from (t.name for t in graph.initializer)
    yield from (v.name for v in (*graph.input, *graph.output, *graph.value_info))
    for sub in _subgraphs(graph.node):
        yield from tensor_names(sub)


def free_names(graph: onnx.GraphProto, wanted: Sequence[str]) -> dict[str, str]:
    """Rename the graph's tensors that carry a name the signature takes; old -> new."""
    taken = set(tensor_names(graph))
    renamed: dict[str, str] = {}
    for name in wanted:
        if name not in taken:
            continue
        new, n = f"{name}_original", 0
        while new in taken:
            n += 1
            new = f"{name}_original_{n}"
        taken.add(new)
        _rename(graph, name, new)
        renamed[name] = new
    return renamed


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if t == old else t for t in node.input]
        node.output[:] = [new if t == old else t for t in node.output]
    for item in (*graph.initializer, *graph.input, *graph.output, *graph.value_info):
        if item.name == old:
            item.name = new
    for sub in _subgraphs(graph.node):
        _rename(sub, old, new)
