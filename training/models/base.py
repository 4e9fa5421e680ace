"""What every model kind shares: row checks, the ReLU tower, the output layer, L2, prediction.

A kind (a subclass registered in :mod:`training.models.registry`) declares its embedding tables and
the width it adds to the output layer's input, and writes its own forward, backward and ONNX graph.
Every kind scores a (user row, item row) pair with a logit; ``predict`` applies the sigmoid. The
parameter names and the computation match the ONNX graph the kind builds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, TypeAlias

import numpy as np
from numpy.typing import NDArray

from modelrepo import UNKNOWN_ROW, Signature, Source, two_id_signature
from training.layers import (
    Array,
    Dense,
    Dropout,
    Embedding,
    Grads,
    Mask,
    Params,
    ReLU,
    RowGroups,
    SparseRows,
    sigmoid,
)
from training.models.config import ModelConfig
from training.models.side import SideFeature

Rows: TypeAlias = NDArray[np.integer]
Rng: TypeAlias = np.random.Generator
Weights: TypeAlias = Mapping[str, NDArray[Any]]
"""Parameters as the exporter reads them."""

PREDICT_CHUNK_ROWS = 65_536
"""Rows per forward pass in ``Model.predict``: bounds the memory of scoring a large catalog."""


@dataclass(frozen=True)
class Table:
    """An embedding table of a kind: its parameter, the id that looks it up, its width."""

    name: str
    source: Literal[Source.USER, Source.ITEM]
    width: Literal["embedding_dim", "gmf_dim"]
    """The ``ModelConfig`` field that sets the table's width."""

    def dim(self, config: ModelConfig) -> int:
        dim: int = getattr(config, self.width)
        return dim


@dataclass
class ForwardCache:
    """What ``Model.backward`` needs from a forward pass."""

    users: Rows
    items: Rows
    tower_inputs: list[Array]
    tower_masks: list[Mask]
    """Per tower layer: the ReLU's 0/1 mask, times the dropout multiplier in training."""
    head_input: Array
    saved: tuple[Array, ...] = ()
    """What the kind's own backward needs besides (NeuMF: the looked-up GMF vectors)."""


class GraphNodes(Protocol):
    """Where a kind writes its ONNX graph (``training.export`` implements it with ``onnx``).

    ``add`` appends one node of operator ``op`` and returns the name of its output.
    """

    def add(self, op: str, inputs: list[str], output: str, **attributes: Any) -> str: ...

    def constant(self, name: str, value: NDArray[Any]) -> str: ...


class Model(ABC):
    """The shared machinery of every kind; subclasses are the kinds."""

    kind: ClassVar[str]
    """The name the CLI and ``ModelConfig.kind`` use; set by ``registry.register``."""
    tables: ClassVar[tuple[Table, ...]]

    def __init__(self, config: ModelConfig, n_user_rows: int, n_item_rows: int, params: Params):
        self.config = config
        self.n_user_rows = n_user_rows
        self.n_item_rows = n_item_rows
        self.params = params
        self._tower = [Dense(f"W{layer}", f"b{layer}") for layer in range(len(config.tower))]
        self._dropout = Dropout(config.dropout)
        self._head = Dense("w_out", "b_out")
        self._embeddings = {table.name: Embedding(table.name) for table in self.tables}

    # -- what a kind writes ---------------------------------------------------------------

    @classmethod
    def head_extra(cls, config: ModelConfig) -> int:
        """Width the kind adds to the tower's output before the output layer."""
        return 0

    @abstractmethod
    def _forward(self, users: Rows, items: Rows, rng: Rng | None) -> ForwardCache:
        """From the rows to the output layer's input (``head_input`` of the returned cache)."""

    @abstractmethod
    def _backward(self, cache: ForwardCache, dhead: Array, grads: Grads) -> None:
        """Add to ``grads`` the kind's gradients, given the gradient of the output layer's input."""

    @classmethod
    @abstractmethod
    def graph_head_input(cls, nodes: GraphNodes, params: Weights, user: str, item: str) -> str:
        """Write the graph from the ``user`` and ``item`` inputs to the output layer's input."""

    # -- parameters -----------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        config: ModelConfig,
        n_user_rows: int,
        n_item_rows: int,
        seed: int,
        features: Sequence[SideFeature] = (),
    ) -> Model:
        """A freshly initialised model; only a kind that reads side features takes ``features``."""
        if features:
            raise ValueError(f"a {cls.kind} model takes no side features")
        params = cls.init_params(config, n_user_rows, n_item_rows, seed)
        return cls(config, n_user_rows, n_item_rows, params)

    @classmethod
    def init_params(
        cls, config: ModelConfig, n_user_rows: int, n_item_rows: int, seed: int
    ) -> Params:
        """Fresh float32 parameters: small normal embeddings, He-normal tower, Glorot output.

        The unknown-id rows start at zero, so a cold-start user or item contributes nothing to a
        product of embeddings and the neutral point to the MLP tower until training moves them.
        """
        if n_user_rows < 1 or n_item_rows < 1:
            raise ValueError("embedding tables need at least the unknown-id row")
        rng = np.random.default_rng(seed)
        rows = {Source.USER: n_user_rows, Source.ITEM: n_item_rows}
        params: Params = {
            table.name: _embedding(rng, rows[table.source], table.dim(config))
            for table in cls.tables
        }
        width = 2 * config.embedding_dim
        for layer, out in enumerate(config.tower):
            std = np.sqrt(2.0 / width)
            params[f"W{layer}"] = rng.normal(0.0, std, (width, out)).astype(np.float32)
            params[f"b{layer}"] = np.zeros(out, dtype=np.float32)
            width = out
        width += cls.head_extra(config)
        limit = np.sqrt(6.0 / (width + 1))
        params["w_out"] = rng.uniform(-limit, limit, (width, 1)).astype(np.float32)
        params["b_out"] = np.zeros(1, dtype=np.float32)
        return params

    @classmethod
    def signature_for(cls, params: Weights) -> Signature:
        """The signature of a model with these parameters: its tables' rows are the id rows."""
        rows = {table.source: params[table.name].shape[0] for table in cls.tables}
        return two_id_signature(rows[Source.USER], rows[Source.ITEM])

    @property
    def signature(self) -> Signature:
        return self.signature_for(self.params)

    @property
    def side_features(self) -> tuple[SideFeature, ...]:
        """The side features the model reads beside the two ids (none for most kinds)."""
        return ()

    # -- training and inference -----------------------------------------------------------

    def forward(
        self,
        users: Rows,
        items: Rows,
        *,
        train: bool = False,
        rng: Rng | None = None,
        sample_features: Mapping[str, NDArray[Any]] | None = None,
    ) -> tuple[Array, ForwardCache]:
        """Logits [N] for embedding rows ``users``/``items`` [N] and the cache for backward.

        With ``train`` and a non-zero dropout rate, ``rng`` draws the dropout masks.
        ``sample_features``: per-row values of side features that replace the tables' (only a kind
        that reads side features takes them).
        """
        if sample_features:
            raise ValueError(f"a {self.kind} model takes no side features")
        self._check_pairs(users, items)
        cache = self._forward(users, items, self._dropout_rng(train, rng))
        return self._head.forward(self.params, cache.head_input)[:, 0], cache

    def backward(self, cache: ForwardCache, dlogits: Array) -> Grads:
        """Gradients of ``sum(dlogits * logits) + regularization(cache)`` for every parameter.

        Embedding tables get a ``SparseRows`` gradient over the rows the batch looked up.
        """
        grads: Grads = {}
        dhead, grads["w_out"], grads["b_out"] = self._head.backward(
            self.params, cache.head_input, dlogits[:, None]
        )
        self._backward(cache, dhead, grads)
        if self.config.l2 > 0.0:
            self._add_l2(grads)
        return grads

    def regularization(self, cache: ForwardCache) -> float:
        """The L2 term of the loss for the batch behind ``cache`` (0 when ``l2`` is 0)."""
        l2 = self.config.l2
        if l2 == 0.0:
            return 0.0
        total = 0.0
        for table in self.tables:
            rows = np.unique(cache.users if table.source is Source.USER else cache.items)
            looked_up = self.params[table.name][rows]
            total += float(np.vdot(looked_up, looked_up))
        for name in self._weight_names():
            weight = self.params[name]
            total += float(np.vdot(weight, weight))
        return 0.5 * l2 * total

    def predict(self, users: Rows, items: Rows) -> NDArray[np.float32]:
        """Probabilities [N] float32 in inference mode (no dropout), in chunks of rows."""
        users = np.asarray(users)
        items = np.asarray(items)
        if users.shape != items.shape:
            raise ValueError(f"users {users.shape} and items {items.shape} differ in shape")
        out = np.empty(users.shape[0], dtype=np.float32)
        for start in range(0, users.shape[0], PREDICT_CHUNK_ROWS):
            stop = start + PREDICT_CHUNK_ROWS
            logits, _ = self.forward(users[start:stop], items[start:stop])
            out[start:stop] = sigmoid(logits)
        return out

    # -- shared pieces --------------------------------------------------------------------

    def _lookup(self, table: str, rows: Rows) -> Array:
        return self._embeddings[table].forward(self.params, rows)

    def _mlp_forward(
        self, tables: tuple[str, str], users: Rows, items: Rows, rng: Rng | None
    ) -> ForwardCache:
        """concat(user table[users], item table[items]) -> the ReLU tower.

        The cache's ``head_input`` is the tower's output.
        """
        x = np.concatenate([self._lookup(tables[0], users), self._lookup(tables[1], items)], axis=1)
        out, inputs, masks = self._tower_forward(x, rng)
        return ForwardCache(users, items, inputs, masks, out)

    def _mlp_backward(
        self, tables: tuple[str, str], dout: Array, cache: ForwardCache, grads: Grads,
        users: Rows | RowGroups, items: Rows | RowGroups,
    ) -> None:  # fmt: skip
        """The gradients of the tower and of the two tables ``_mlp_forward`` looked up."""
        dx = self._tower_backward(dout, cache, grads)
        dim = self.config.embedding_dim
        grads[tables[0]] = self._embeddings[tables[0]].backward(users, dx[:, :dim])
        grads[tables[1]] = self._embeddings[tables[1]].backward(items, dx[:, dim:])

    def _check_pairs(self, users: Rows, items: Rows) -> None:
        """ValueError unless ``users`` and ``items`` are rows of this model, one each per pair."""
        self._check_rows(users, self.n_user_rows, "user")
        self._check_rows(items, self.n_item_rows, "item")
        if users.shape != items.shape:
            raise ValueError(f"users {users.shape} and items {items.shape} differ in shape")

    def _dropout_rng(self, train: bool, rng: Rng | None) -> Rng | None:
        """What draws the tower's dropout masks: ``rng`` when training with dropout, else None."""
        if not (train and self.config.dropout > 0.0):
            return None
        if rng is None:
            raise ValueError("training with dropout needs an rng")
        return rng

    @staticmethod
    def _check_rows(rows: Rows, n_rows: int, what: str) -> None:
        if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
            raise ValueError(
                f"{what} rows must be a 1-d integer array, got {rows.dtype}{rows.shape}"
            )
        if rows.size and (rows.min() < 0 or rows.max() >= n_rows):
            raise ValueError(f"{what} rows must lie in [0, {n_rows})")

    def _weight_names(self) -> list[str]:
        return [layer.weight for layer in self._tower] + [self._head.weight]

    def _tower_forward(self, x: Array, rng: Rng | None) -> tuple[Array, list[Array], list[Mask]]:
        return self._relu_forward(self._tower, x, rng)

    def _relu_forward(
        self, layers: list[Dense], x: Array, rng: Rng | None
    ) -> tuple[Array, list[Array], list[Mask]]:
        """Dense+ReLU ``layers`` over ``x`` (dropout after each with ``rng``): the output, each
        layer's input and each ReLU's mask (times the dropout multiplier)."""
        inputs: list[Array] = []
        masks: list[Mask] = []
        for layer in layers:
            inputs.append(x)
            x, relu_mask = ReLU.forward(layer.forward(self.params, x))
            if rng is None:
                masks.append(relu_mask)
            else:
                x, drop_mask = self._dropout.forward(x, rng)
                masks.append(drop_mask * relu_mask)
        return x, inputs, masks

    def _tower_backward(self, dout: Array, cache: ForwardCache, grads: Grads) -> Array:
        return self._relu_backward(self._tower, dout, cache.tower_inputs, cache.tower_masks, grads)

    def _relu_backward(
        self, layers: list[Dense], dout: Array, inputs: list[Array], masks: list[Mask],
        grads: Grads,
    ) -> Array:  # fmt: skip
        """The gradients of ``_relu_forward``'s layers into ``grads``; returns the input's."""
        for layer, x, mask in zip(reversed(layers), reversed(inputs), reversed(masks), strict=True):
            dout, grads[layer.weight], grads[layer.bias] = layer.backward(
                self.params, x, ReLU.backward(mask, dout)
            )
        return dout

    def _add_l2(self, grads: Grads) -> None:
        l2 = self.config.l2
        for name in self._weight_names():
            grad = grads[name]
            assert not isinstance(grad, SparseRows)
            grad += l2 * self.params[name]
        for table in self.tables:
            sparse = grads[table.name]
            assert isinstance(sparse, SparseRows)
            grads[table.name] = SparseRows(
                sparse.rows, sparse.values + l2 * self.params[table.name][sparse.rows]
            )

    # -- the ONNX graph -------------------------------------------------------------------

    @classmethod
    def graph(cls, nodes: GraphNodes, params: Weights, signature: Signature) -> None:
        """Write the whole graph: the kind's part, then the output layer, sigmoid and squeeze."""
        head = cls.graph_inputs(nodes, params, signature)
        logit = nodes.add("Gemm", [head, "w_out", "b_out"], "logit2d")
        prob = nodes.add("Sigmoid", [logit], "prob2d")
        axes = nodes.constant("squeeze_axes", np.array([1], dtype=np.int64))
        nodes.add("Squeeze", [prob, axes], signature.score)

    @classmethod
    def graph_inputs(cls, nodes: GraphNodes, params: Weights, signature: Signature) -> str:
        """Write the graph from the signature's inputs to the output layer's input: for a kind
        of the two ids, :meth:`graph_head_input` on them."""
        user, item = (signature.one_from(source) for source in (Source.USER, Source.ITEM))
        if user is None or item is None:
            raise ValueError(f"a {cls.kind} model takes a user and an item input")
        return cls.graph_head_input(nodes, params, user.name, item.name)

    @staticmethod
    def _graph_tower(nodes: GraphNodes, params: Weights, x: str) -> str:
        """Dense+ReLU layers ``W0, b0, W1, b1, ...`` applied to ``x``; returns the output name."""
        layer = 0
        while f"W{layer}" in params:
            linear = nodes.add("Gemm", [x, f"W{layer}", f"b{layer}"], f"tower{layer}_lin")
            x = nodes.add("Relu", [linear], f"tower{layer}")
            layer += 1
        return x

    @classmethod
    def _graph_mlp_branch(
        cls, nodes: GraphNodes, params: Weights, tables: tuple[str, str], user: str, item: str
    ) -> str:
        """concat(user table[user], item table[item]) -> the ReLU tower; returns its output."""
        user_vec = nodes.add("Gather", [tables[0], user], "u_vec", axis=0)
        item_vec = nodes.add("Gather", [tables[1], item], "i_vec", axis=0)
        joined = nodes.add("Concat", [user_vec, item_vec], "mlp_in", axis=1)
        return cls._graph_tower(nodes, params, joined)


def _embedding(rng: Rng, n_rows: int, dim: int) -> NDArray[np.float32]:
    """Normal(0, 0.01) rows as in the NCF paper; the unknown-id row starts at zero."""
    table = rng.normal(0.0, 0.01, (n_rows, dim)).astype(np.float32)
    table[UNKNOWN_ROW] = 0.0
    return table
