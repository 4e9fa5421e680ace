"""The parameters of the dlrm kind: their names and shapes for a config and its side features,
and their initialisation, apart from the model so that its module stays about the computation."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np

from modelrepo import UNKNOWN_ROW
from training.layers import Params
from training.models.config import ModelConfig
from training.models.dlrm_graph import bottom_layer, feature_table
from training.models.dlrm_interaction import interaction_width
from training.models.side import SideFeature


def mf_width(config: ModelConfig) -> int:
    """The MF head's columns of the output layer's input: the product, two biases."""
    return config.embedding_dim + 2


def param_shapes(
    config: ModelConfig, n_user_rows: int, n_item_rows: int, features: Sequence[SideFeature]
) -> dict[str, tuple[int, ...]]:
    """Every parameter's shape, in the order ``init_params`` draws them."""
    dim = config.embedding_dim
    shapes: dict[str, tuple[int, ...]] = {"user_emb": (n_user_rows, dim)}
    shapes["item_emb"] = (n_item_rows, dim)
    for feature in features:
        table = feature_table(feature.input_spec())
        if feature.embedded and feature.n_rows is not None and table not in shapes:
            shapes[table] = (feature.n_rows, dim)
    dense_width = sum(feature.width for feature in features if not feature.embedded)
    n_vectors = 2 + sum(feature.embedded for feature in features)
    if dense_width:
        n_vectors += 1
        widths = [dense_width, *config.bottom, dim]
        for k, (fan_in, out) in enumerate(pairwise(widths)):
            weight, bias = bottom_layer(k)
            shapes[weight], shapes[bias] = (fan_in, out), (out,)
    width = interaction_width(n_vectors, dim) + (dim if dense_width else 0)
    for k, out in enumerate(config.tower):
        shapes[f"W{k}"], shapes[f"b{k}"] = (width, out), (out,)
        width = out
    shapes["user_bias"], shapes["item_bias"] = (n_user_rows, 1), (n_item_rows, 1)
    shapes["w_out"], shapes["b_out"] = (width + mf_width(config), 1), (1,)
    return shapes


def init_params(
    config: ModelConfig,
    n_user_rows: int,
    n_item_rows: int,
    seed: int,
    features: Sequence[SideFeature] = (),
) -> Params:
    """As the other kinds: embeddings normal(0, 0.01) with row 0 (unknown id, unknown category,
    padding) at zero, He-normal ReLU layers, a Glorot output layer over the top MLP, zero biases;
    the output weights of the MF head at ones, as ``mf``'s."""
    if n_user_rows < 1 or n_item_rows < 1:
        raise ValueError("embedding tables need at least the unknown-id row")
    rng = np.random.default_rng(seed)
    params: Params = {}
    for name, shape in param_shapes(config, n_user_rows, n_item_rows, features).items():
        if name.endswith("_emb"):
            params[name] = rng.normal(0.0, 0.01, shape).astype(np.float32)
            params[name][UNKNOWN_ROW] = 0.0
        elif name == "w_out":
            limit = np.sqrt(6.0 / (config.tower[-1] + 1))
            params[name] = rng.uniform(-limit, limit, shape).astype(np.float32)
            params[name][config.tower[-1] :] = 1.0
        elif name.startswith("W"):
            params[name] = rng.normal(0.0, np.sqrt(2.0 / shape[0]), shape).astype(np.float32)
        else:
            params[name] = np.zeros(shape, dtype=np.float32)
    return params
