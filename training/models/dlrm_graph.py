"""The ONNX form of the dlrm kind, from its signature's inputs to the top MLP's input.

It mirrors :meth:`training.models.dlrm.DLRM._forward_feeds` node by node: Gather for the ids and
the categorical features; for a multi-hot feature [N, L], Gather [N, L, D] times the mask
(value != 0) as float, summed over L and divided by max(count, 1); the numeric inputs concatenated
through the bottom MLP (Gemm + Relu); the F vectors stacked [N, F, D], MatMul with their
transpose [N, F, F], flattened, and the upper triangle gathered; the bottom MLP's output
concatenated before the products. The inputs are taken in the signature's order, as the model
takes its features, so the vectors line up. :func:`mf_head_graph` then joins the top MLP's output
with the MF head (the user and item vectors' product, their biases) for the output layer.
"""

from __future__ import annotations

import numpy as np

from modelrepo import Role, Signature, Source
from training.models.base import GraphNodes, Weights

_IDS = {Source.USER: "user_emb", Source.ITEM: "item_emb"}
_FLOAT = 1
"""ONNX's element type FLOAT (``onnx.TensorProto.FLOAT``): the kinds write graphs through
``GraphNodes`` without importing onnx."""


def embedding_param(input_name: str) -> str:
    """The embedding table of a categorical or multi-hot input."""
    return f"{input_name}_emb"


def bottom_layer(k: int) -> tuple[str, str]:
    """The weight and bias of layer ``k`` of the bottom MLP."""
    return f"W_bottom{k}", f"b_bottom{k}"


def side_param(name: str) -> bool:
    """Whether ``name`` is a parameter only a model with side features has."""
    return (name.endswith("_emb") and name not in _IDS.values()) or name.startswith("W_bottom")


def interaction_graph(nodes: GraphNodes, params: Weights, signature: Signature) -> str:
    """Write the nodes from the inputs to the top MLP's input; returns its name."""
    vectors: list[str] = []
    dense: list[str] = []
    bags = 0
    for spec in signature.inputs:
        table = _IDS.get(spec.source, embedding_param(spec.name))
        if spec.role is not Role.DENSE and params[table].shape[0] != spec.n_rows:
            raise ValueError(
                f"{table} has {params[table].shape[0]} rows, '{spec.name}' {spec.n_rows}"
            )
        if spec.role is Role.ID:
            vectors.append(nodes.add("Gather", [table, spec.name], f"{spec.name}_vec", axis=0))
        elif spec.role is Role.MULTI_HOT:
            vectors.append(_bag(nodes, table, spec.name, first=bags == 0))
            bags += 1
        else:
            dense.append(spec.name)
    bottom = _bottom_mlp(nodes, params, dense) if dense else None
    if bottom is not None:
        vectors.append(bottom)
    dots = _pairwise_dots(nodes, vectors, params["user_emb"].shape[1])
    if bottom is None:
        return dots
    return nodes.add("Concat", [bottom, dots], "top_in", axis=1)


def mf_head_graph(nodes: GraphNodes, signature: Signature, tower: str) -> str:
    """The output layer's input: the top MLP's output ``tower``, the element-wise product of the
    id vectors ``interaction_graph`` gathered, the user's and the item's bias."""
    user, item = (signature.one_from(source) for source in (Source.USER, Source.ITEM))
    if user is None or item is None:
        raise ValueError("a dlrm model takes a user and an item input")
    product = nodes.add("Mul", [f"{user.name}_vec", f"{item.name}_vec"], "mf_product")
    user_bias = nodes.add("Gather", ["user_bias", user.name], "user_bias_row", axis=0)
    item_bias = nodes.add("Gather", ["item_bias", item.name], "item_bias_row", axis=0)
    return nodes.add("Concat", [tower, product, user_bias, item_bias], "head_in", axis=1)


def _bag(nodes: GraphNodes, table: str, name: str, *, first: bool) -> str:
    """The mean embedding of the non-zero entries of bag input ``name`` [N, L] (0 if empty)."""
    if first:  # constants shared by every bag
        nodes.constant("bag_zero", np.array(0, dtype=np.int64))
        nodes.constant("bag_one", np.array(1.0, dtype=np.float32))
        nodes.constant("bag_length_axis", np.array([1], dtype=np.int64))
        nodes.constant("bag_unsqueeze_axes", np.array([2], dtype=np.int64))
    is_zero = nodes.add("Equal", [name, "bag_zero"], f"{name}_is_pad")
    present = nodes.add("Not", [is_zero], f"{name}_present")
    mask = nodes.add("Cast", [present], f"{name}_mask", to=_FLOAT)
    rows = nodes.add("Gather", [table, name], f"{name}_rows", axis=0)
    mask3 = nodes.add("Unsqueeze", [mask, "bag_unsqueeze_axes"], f"{name}_mask3")
    kept = nodes.add("Mul", [rows, mask3], f"{name}_kept")
    total = nodes.add("ReduceSum", [kept, "bag_length_axis"], f"{name}_sum", keepdims=0)
    count = nodes.add("ReduceSum", [mask, "bag_length_axis"], f"{name}_count", keepdims=1)
    divisor = nodes.add("Max", [count, "bag_one"], f"{name}_divisor")
    return nodes.add("Div", [total, divisor], f"{name}_vec")


def _bottom_mlp(nodes: GraphNodes, params: Weights, dense: list[str]) -> str:
    """The numeric inputs, concatenated, through the bottom MLP's Gemm + Relu layers."""
    x = dense[0] if len(dense) == 1 else nodes.add("Concat", dense, "bottom_in", axis=1)
    k = 0
    while bottom_layer(k)[0] in params:
        linear = nodes.add("Gemm", [x, *bottom_layer(k)], f"bottom{k}_lin")
        x = nodes.add("Relu", [linear], f"bottom{k}")
        k += 1
    return x


def _pairwise_dots(nodes: GraphNodes, vectors: list[str], dim: int) -> str:
    """[N, F(F-1)/2]: the dot product of every pair of the F vectors [N, D], upper triangle."""
    n = len(vectors)
    first, second = np.triu_indices(n, k=1)
    nodes.constant("stack_shape", np.array([-1, n, dim], dtype=np.int64))
    nodes.constant("products_shape", np.array([-1, n * n], dtype=np.int64))
    nodes.constant("pair_index", (first * n + second).astype(np.int64))
    joined = nodes.add("Concat", vectors, "vectors_flat", axis=1)
    stacked = nodes.add("Reshape", [joined, "stack_shape"], "vectors")
    transposed = nodes.add("Transpose", [stacked], "vectors_t", perm=[0, 2, 1])
    products = nodes.add("MatMul", [stacked, transposed], "products")
    flat = nodes.add("Reshape", [products, "products_shape"], "products_flat")
    return nodes.add("Gather", [flat, "pair_index"], "dots", axis=1)
