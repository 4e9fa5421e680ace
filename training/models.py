"""NCF-MLP and NeuMF recommenders in NumPy with hand-written backpropagation.

Both score a (user row, item row) pair with a logit; ``predict`` applies the sigmoid. The
parameter names and the computation match the ONNX graph built by ``training.export``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from training.layers import (
    UNKNOWN_ROW,
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

PREDICT_CHUNK_ROWS = 65_536
"""Rows per forward pass in ``Model.predict``: bounds the memory of scoring a large catalog."""


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and regularisation of a model.

    ``l2`` adds ``l2 / 2`` times the squared norm of every weight matrix and of each distinct
    embedding row the batch looks up (biases excluded) to the loss, so that an embedding update
    touches only the looked-up rows. ``dropout`` is the rate applied after each ReLU of the MLP
    tower in training (NeuMF's GMF branch has none).
    """

    kind: Literal["mlp", "neumf"] = "mlp"
    embedding_dim: int = 32
    tower: tuple[int, ...] = (64, 32, 16)
    gmf_dim: int = 16
    l2: float = 0.0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("mlp", "neumf"):
            raise ValueError(f"unknown model kind {self.kind!r}; expected 'mlp' or 'neumf'")
        if self.embedding_dim < 1 or self.gmf_dim < 1:
            raise ValueError("embedding sizes must be positive")
        if not self.tower or any(width < 1 for width in self.tower):
            raise ValueError(f"tower needs at least one positive layer width, got {self.tower}")
        if self.l2 < 0:
            raise ValueError(f"l2 must be non-negative, got {self.l2}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


@dataclass
class ForwardCache:
    """What ``Model.backward`` needs from a forward pass."""

    users: NDArray[np.integer]
    items: NDArray[np.integer]
    tower_inputs: list[Array]
    tower_masks: list[Mask]
    """Per tower layer: the ReLU's 0/1 mask, times the dropout multiplier in training."""
    head_input: Array
    gmf_vectors: tuple[Array, Array] | None = None
    """NeuMF only: the looked-up GMF user and item vectors."""


class Model:
    """Shared machinery: row checks, the ReLU tower, the output layer, L2, prediction."""

    config: ModelConfig
    n_user_rows: int
    n_item_rows: int
    params: Params

    def __init__(self, config: ModelConfig, n_user_rows: int, n_item_rows: int, params: Params):
        self.config = config
        self.n_user_rows = n_user_rows
        self.n_item_rows = n_item_rows
        self.params = params
        self._tower = [Dense(f"W{layer}", f"b{layer}") for layer in range(len(config.tower))]
        self._dropout = Dropout(config.dropout)
        self._head = Dense("w_out", "b_out")
        self._tables: tuple[tuple[str, bool], ...] = ()
        """(table name, looked up by user rows?) for every embedding table."""

    def forward(
        self,
        users: NDArray[np.integer],
        items: NDArray[np.integer],
        *,
        train: bool = False,
        rng: np.random.Generator | None = None,
    ) -> tuple[Array, ForwardCache]:
        """Logits [N] for embedding rows ``users``/``items`` [N] and the cache for backward.

        With ``train`` and a non-zero dropout rate, ``rng`` draws the dropout masks.
        """
        self._check_rows(users, self.n_user_rows, "user")
        self._check_rows(items, self.n_item_rows, "item")
        if users.shape != items.shape:
            raise ValueError(f"users {users.shape} and items {items.shape} differ in shape")
        dropout_rng = None
        if train and self.config.dropout > 0.0:
            if rng is None:
                raise ValueError("training with dropout needs an rng")
            dropout_rng = rng
        return self._forward(users, items, dropout_rng)

    def backward(self, cache: ForwardCache, dlogits: Array) -> Grads:
        """Gradients of ``sum(dlogits * logits) + regularization(cache)`` for every parameter.

        Embedding tables get a ``SparseRows`` gradient over the rows the batch looked up.
        """
        grads = self._backward(cache, dlogits)
        if self.config.l2 > 0.0:
            self._add_l2(grads)
        return grads

    def regularization(self, cache: ForwardCache) -> float:
        """The L2 term of the loss for the batch behind ``cache`` (0 when ``l2`` is 0)."""
        l2 = self.config.l2
        if l2 == 0.0:
            return 0.0
        total = 0.0
        for name, by_user in self._tables:
            rows = np.unique(cache.users if by_user else cache.items)
            looked_up = self.params[name][rows]
            total += float(np.vdot(looked_up, looked_up))
        for name in self._weight_names():
            weight = self.params[name]
            total += float(np.vdot(weight, weight))
        return 0.5 * l2 * total

    def predict(
        self, users: NDArray[np.integer], items: NDArray[np.integer]
    ) -> NDArray[np.float32]:
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

    def _forward(
        self,
        users: NDArray[np.integer],
        items: NDArray[np.integer],
        rng: np.random.Generator | None,
    ) -> tuple[Array, ForwardCache]:
        raise NotImplementedError

    def _backward(self, cache: ForwardCache, dlogits: Array) -> Grads:
        raise NotImplementedError

    @staticmethod
    def _check_rows(rows: NDArray[np.integer], n_rows: int, what: str) -> None:
        if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
            raise ValueError(
                f"{what} rows must be a 1-d integer array, got {rows.dtype}{rows.shape}"
            )
        if rows.size and (rows.min() < 0 or rows.max() >= n_rows):
            raise ValueError(f"{what} rows must lie in [0, {n_rows})")

    def _weight_names(self) -> list[str]:
        return [layer.weight for layer in self._tower] + [self._head.weight]

    def _tower_forward(
        self, x: Array, rng: np.random.Generator | None
    ) -> tuple[Array, list[Array], list[Mask]]:
        inputs: list[Array] = []
        masks: list[Mask] = []
        for layer in self._tower:
            inputs.append(x)
            x, relu_mask = ReLU.forward(layer.forward(self.params, x))
            if rng is None:
                masks.append(relu_mask)
            else:
                x, drop_mask = self._dropout.forward(x, rng)
                masks.append(drop_mask * relu_mask)
        return x, inputs, masks

    def _tower_backward(self, dout: Array, cache: ForwardCache, grads: Grads) -> Array:
        for layer, x, mask in zip(
            reversed(self._tower),
            reversed(cache.tower_inputs),
            reversed(cache.tower_masks),
            strict=True,
        ):
            dout, grads[layer.weight], grads[layer.bias] = layer.backward(
                self.params, x, ReLU.backward(mask, dout)
            )
        return dout

    def _head_forward(self, head_input: Array) -> Array:
        return self._head.forward(self.params, head_input)[:, 0]

    def _head_backward(self, head_input: Array, dlogits: Array, grads: Grads) -> Array:
        dhead, grads["w_out"], grads["b_out"] = self._head.backward(
            self.params, head_input, dlogits[:, None]
        )
        return dhead

    def _add_l2(self, grads: Grads) -> None:
        l2 = self.config.l2
        for name in self._weight_names():
            grad = grads[name]
            assert not isinstance(grad, SparseRows)
            grad += l2 * self.params[name]
        for name, _ in self._tables:
            sparse = grads[name]
            assert isinstance(sparse, SparseRows)
            grads[name] = SparseRows(
                sparse.rows, sparse.values + l2 * self.params[name][sparse.rows]
            )


class NCFMLP(Model):
    """NCF's MLP model: concat(user_emb[u], item_emb[i]) -> ReLU tower -> logit."""

    def __init__(self, config: ModelConfig, n_user_rows: int, n_item_rows: int, params: Params):
        super().__init__(config, n_user_rows, n_item_rows, params)
        self._user = Embedding("user_emb")
        self._item = Embedding("item_emb")
        self._tables = (("user_emb", True), ("item_emb", False))

    def _forward(
        self,
        users: NDArray[np.integer],
        items: NDArray[np.integer],
        rng: np.random.Generator | None,
    ) -> tuple[Array, ForwardCache]:
        x = np.concatenate(
            [self._user.forward(self.params, users), self._item.forward(self.params, items)],
            axis=1,
        )
        head_input, inputs, masks = self._tower_forward(x, rng)
        cache = ForwardCache(users, items, inputs, masks, head_input)
        return self._head_forward(head_input), cache

    def _backward(self, cache: ForwardCache, dlogits: Array) -> Grads:
        grads: Grads = {}
        dhead = self._head_backward(cache.head_input, dlogits, grads)
        dx = self._tower_backward(dhead, cache, grads)
        dim = self.config.embedding_dim
        grads["user_emb"] = self._user.backward(cache.users, dx[:, :dim])
        grads["item_emb"] = self._item.backward(cache.items, dx[:, dim:])
        return grads


class NeuMF(Model):
    """NCF's NeuMF: concat(gmf_user[u] * gmf_item[i], MLP tower output) -> logit."""

    def __init__(self, config: ModelConfig, n_user_rows: int, n_item_rows: int, params: Params):
        super().__init__(config, n_user_rows, n_item_rows, params)
        self._gmf_user = Embedding("gmf_user_emb")
        self._gmf_item = Embedding("gmf_item_emb")
        self._mlp_user = Embedding("mlp_user_emb")
        self._mlp_item = Embedding("mlp_item_emb")
        self._tables = (
            ("gmf_user_emb", True),
            ("gmf_item_emb", False),
            ("mlp_user_emb", True),
            ("mlp_item_emb", False),
        )

    def _forward(
        self,
        users: NDArray[np.integer],
        items: NDArray[np.integer],
        rng: np.random.Generator | None,
    ) -> tuple[Array, ForwardCache]:
        gmf_user = self._gmf_user.forward(self.params, users)
        gmf_item = self._gmf_item.forward(self.params, items)
        x = np.concatenate(
            [
                self._mlp_user.forward(self.params, users),
                self._mlp_item.forward(self.params, items),
            ],
            axis=1,
        )
        tower_out, inputs, masks = self._tower_forward(x, rng)
        head_input = np.concatenate([gmf_user * gmf_item, tower_out], axis=1)
        cache = ForwardCache(users, items, inputs, masks, head_input, (gmf_user, gmf_item))
        return self._head_forward(head_input), cache

    def _backward(self, cache: ForwardCache, dlogits: Array) -> Grads:
        assert cache.gmf_vectors is not None
        gmf_user, gmf_item = cache.gmf_vectors
        grads: Grads = {}
        dhead = self._head_backward(cache.head_input, dlogits, grads)
        gmf_dim = self.config.gmf_dim
        dgmf = dhead[:, :gmf_dim]
        dx = self._tower_backward(dhead[:, gmf_dim:], cache, grads)
        dim = self.config.embedding_dim
        users, items = RowGroups.of(cache.users), RowGroups.of(cache.items)
        grads["gmf_user_emb"] = self._gmf_user.backward(users, dgmf * gmf_item)
        grads["gmf_item_emb"] = self._gmf_item.backward(items, dgmf * gmf_user)
        grads["mlp_user_emb"] = self._mlp_user.backward(users, dx[:, :dim])
        grads["mlp_item_emb"] = self._mlp_item.backward(items, dx[:, dim:])
        return grads


def _embedding(rng: np.random.Generator, n_rows: int, dim: int) -> NDArray[np.float32]:
    """Normal(0, 0.01) rows as in the NCF paper; the unknown-id row starts at zero."""
    table = rng.normal(0.0, 0.01, (n_rows, dim)).astype(np.float32)
    table[UNKNOWN_ROW] = 0.0
    return table


def init_params(config: ModelConfig, n_user_rows: int, n_item_rows: int, seed: int) -> Params:
    """Fresh float32 parameters: small normal embeddings, He-normal tower, Glorot-uniform output.

    The unknown-id rows start at zero, so a cold-start user or item contributes nothing to the
    GMF branch and the neutral point to the MLP tower until training moves them.
    """
    if n_user_rows < 1 or n_item_rows < 1:
        raise ValueError("embedding tables need at least the unknown-id row")
    rng = np.random.default_rng(seed)
    params: Params = {}
    dim = config.embedding_dim
    if config.kind == "mlp":
        params["user_emb"] = _embedding(rng, n_user_rows, dim)
        params["item_emb"] = _embedding(rng, n_item_rows, dim)
    else:
        params["gmf_user_emb"] = _embedding(rng, n_user_rows, config.gmf_dim)
        params["gmf_item_emb"] = _embedding(rng, n_item_rows, config.gmf_dim)
        params["mlp_user_emb"] = _embedding(rng, n_user_rows, dim)
        params["mlp_item_emb"] = _embedding(rng, n_item_rows, dim)
    width = 2 * dim
    for layer, out in enumerate(config.tower):
        std = np.sqrt(2.0 / width)
        params[f"W{layer}"] = rng.normal(0.0, std, (width, out)).astype(np.float32)
        params[f"b{layer}"] = np.zeros(out, dtype=np.float32)
        width = out
    if config.kind == "neumf":
        width += config.gmf_dim
    limit = np.sqrt(6.0 / (width + 1))
    params["w_out"] = rng.uniform(-limit, limit, (width, 1)).astype(np.float32)
    params["b_out"] = np.zeros(1, dtype=np.float32)
    return params


def build_model(config: ModelConfig, n_user_rows: int, n_item_rows: int, seed: int) -> Model:
    """A freshly initialised model; the same arguments give the same weights."""
    params = init_params(config, n_user_rows, n_item_rows, seed)
    model_class = NCFMLP if config.kind == "mlp" else NeuMF
    return model_class(config, n_user_rows, n_item_rows, params)
