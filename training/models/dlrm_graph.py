"""The ONNX form of the dlrm kind, from its signature's inputs to the top MLP's input.

It computes :meth:`training.models.dlrm.DLRM._forward_feeds`'s function in the form ONNX Runtime
runs fastest on one CPU thread (measured per batch of 100 and 800 rows; the parity tests hold it
to the NumPy forward): Gather for the ids and the categorical features; for a multi-hot feature
[N, L], the mean of its non-zero entries' rows, each column of the bag gathering from the table
with row 0 (padding) zeroed and a count column, then one Sum; the numeric inputs concatenated
through the bottom MLP (Gemm + Relu); the interaction of the F vectors, elementwise nodes over
[N, D]; the bottom MLP's output concatenated before it. The inputs are taken in the
signature's order, as the model takes its features, so the vectors line up.
:func:`mf_head_graph` then joins the top MLP's output with the MF head (the product of the
user's vector, with any bag of the user's items added, and the item's; their biases) for the
output layer.
"""

from __future__ import annotations

import numpy as np

from modelrepo import InputSpec, Role, Signature, Source
from training.models.base import GraphNodes, Weights
from training.models.dlrm_inputs import joins_user_vector

_IDS = {Source.USER: "user_emb", Source.ITEM: "item_emb"}


def embedding_param(input_name: str) -> str:
    """The embedding table of a categorical or multi-hot input of its own."""
    return f"{input_name}_emb"


def feature_table(spec: InputSpec) -> str:
    """The embedding table input ``spec`` reads: the item ids' for a bag of the user's items
    (``joins_user_vector``: its values are item rows), else its own."""
    return _IDS[Source.ITEM] if joins_user_vector(spec) else embedding_param(spec.name)


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
        table = _IDS.get(spec.source, feature_table(spec))
        if spec.role is not Role.DENSE and params[table].shape[0] != spec.n_rows:
            raise ValueError(
                f"{table} has {params[table].shape[0]} rows, '{spec.name}' {spec.n_rows}"
            )
        if spec.role is Role.ID:
            vectors.append(nodes.add("Gather", [table, spec.name], f"{spec.name}_vec", axis=0))
        elif spec.role is Role.MULTI_HOT:
            vectors.append(_bag(nodes, params, table, spec.name, spec.width, first=bags == 0))
            bags += 1
        else:
            dense.append(spec.name)
    bottom = _bottom_mlp(nodes, params, dense) if dense else None
    if bottom is not None:
        vectors.append(bottom)
    pairs = _interaction(nodes, vectors)
    if bottom is None:
        return pairs
    return nodes.add("Concat", [bottom, pairs], "top_in", axis=1)


def mf_head_graph(nodes: GraphNodes, signature: Signature, tower: str) -> str:
    """The output layer's input: the top MLP's output ``tower``, the element-wise product of the
    user's vector (its id's, plus any bag of its items: ``joins_user_vector``) and the item's,
    the user's and the item's bias."""
    user, item = (signature.one_from(source) for source in (Source.USER, Source.ITEM))
    if user is None or item is None:
        raise ValueError("a dlrm model takes a user and an item input")
    joining = [f"{spec.name}_vec" for spec in signature.inputs if joins_user_vector(spec)]
    vector = f"{user.name}_vec"
    if joining:
        vector = nodes.add("Sum", [vector, *joining], "mf_user")
    product = nodes.add("Mul", [vector, f"{item.name}_vec"], "mf_product")
    user_bias = nodes.add("Gather", ["user_bias", user.name], "user_bias_row", axis=0)
    item_bias = nodes.add("Gather", ["item_bias", item.name], "item_bias_row", axis=0)
    return nodes.add("Concat", [tower, product, user_bias, item_bias], "head_in", axis=1)


def _bag(
    nodes: GraphNodes, params: Weights, table: str, name: str, width: int, *, first: bool
) -> str:
    """The mean embedding of the non-zero entries of bag input ``name`` [N, L] (0 if empty).

    Written for ONNX Runtime's speed rather than node for node with the NumPy forward: the bag's
    values index a table whose row 0 (padding) is zero and which carries a count column (1 on
    every other row), so that padding adds nothing to the sum nor to the count without a mask.
    The bag is sliced into its L columns (ONNX Runtime fuses the Slices into one Split), each
    gathers its rows [N, 1, D + 1] and one Sum adds them: faster than gathering [N, L, D + 1] and
    summing its L slices (by a quarter at 800 rows) or a ReduceSum over the middle axis.
    """
    rows_table = _bag_table(nodes, table, name, params[table].shape[0])
    if first:  # constants shared by every bag
        nodes.constant("bag_one", np.array(1.0, dtype=np.float32))
        nodes.constant("bag_axis", np.array([1], dtype=np.int64))
        nodes.constant("bag_start", np.array([0], dtype=np.int64))
    dim = params[table].shape[1]
    for k in range(width + 1):
        nodes.constant(f"{name}_at{k}", np.array([k], dtype=np.int64))
    nodes.constant(f"{name}_dim", np.array([dim], dtype=np.int64))
    nodes.constant(f"{name}_dim_end", np.array([dim + 1], dtype=np.int64))
    columns = [
        nodes.add("Slice", [name, f"{name}_at{k}", f"{name}_at{k + 1}", "bag_axis"],
                  f"{name}_column{k}")
        for k in range(width)
    ]  # fmt: skip
    entries = [
        nodes.add("Gather", [rows_table, column], f"{name}_entry{k}", axis=0)
        for k, column in enumerate(columns)
    ]
    summed = entries[0] if width == 1 else nodes.add("Sum", entries, f"{name}_totals3")
    both = nodes.add("Squeeze", [summed, "bag_axis"], f"{name}_totals")
    total = nodes.add("Slice", [both, "bag_start", f"{name}_dim", "bag_axis"], f"{name}_sum")
    count = nodes.add(
        "Slice", [both, f"{name}_dim", f"{name}_dim_end", "bag_axis"], f"{name}_count"
    )
    divisor = nodes.add("Max", [count, "bag_one"], f"{name}_divisor")
    return nodes.add("Div", [total, divisor], f"{name}_vec")


def _bag_table(nodes: GraphNodes, table: str, name: str, n_rows: int) -> str:
    """``table`` with row 0 zeroed and a column after its own holding 1 (0 on row 0).

    Written from the parameter by Mul and Concat rather than stored: ONNX Runtime folds them at
    load, and the graph holds the table once, under its own name.
    """
    kept = np.ones((n_rows, 1), dtype=np.float32)
    kept[0] = 0.0
    nodes.constant(f"{name}_row_kept", kept)
    zeroed = nodes.add("Mul", [table, f"{name}_row_kept"], f"{name}_zeroed_table")
    return nodes.add("Concat", [zeroed, f"{name}_row_kept"], f"{name}_bag_table", axis=1)


def _bottom_mlp(nodes: GraphNodes, params: Weights, dense: list[str]) -> str:
    """The numeric inputs, concatenated, through the bottom MLP's Gemm + Relu layers."""
    x = dense[0] if len(dense) == 1 else nodes.add("Concat", dense, "bottom_in", axis=1)
    k = 0
    while bottom_layer(k)[0] in params:
        linear = nodes.add("Gemm", [x, *bottom_layer(k)], f"bottom{k}_lin")
        x = nodes.add("Relu", [linear], f"bottom{k}")
        k += 1
    return x


def _interaction(nodes: GraphNodes, vectors: list[str]) -> str:
    """The interaction of the F vectors [N, D] (``training.models.dlrm_interaction``): with F > 2,
    ``sum_k v_k * (v_0 + ... + v_{k-1})`` [N, D], a chain of Add and Mul nodes and one Sum; with
    two (an id-only model), their dot product [N, 1], a Mul and a ReduceSum."""
    if len(vectors) == 2:
        nodes.constant("dot_axis", np.array([1], dtype=np.int64))
        product = nodes.add("Mul", vectors, "pair_product")
        return nodes.add("ReduceSum", [product, "dot_axis"], "interaction", keepdims=1)
    before, products = vectors[0], []
    for k, vector in enumerate(vectors[1:], start=1):
        products.append(nodes.add("Mul", [vector, before], f"pairs_with{k}"))
        if k < len(vectors) - 1:
            before = nodes.add("Add", [before, vector], f"vectors_before{k + 1}")
    return nodes.add("Sum", products, "interaction")
