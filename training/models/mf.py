"""Matrix factorisation: a dot product of user and item embeddings, plus a bias per user and item.

logit = w_out . concat(p_u * q_i, b_u, b_i) + b_out, with ``w_out`` starting at ones, so that the
model starts as the plain biased dot product ``<p_u, q_i> + b_u + b_i`` (NCF's GMF with biases).
A well-tuned dot product beats the learned MLP similarities on implicit feedback (Rendle et al.,
"Neural Collaborative Filtering vs. Matrix Factorization Revisited", 2020); the item bias carries
the popularity the MLP kinds have to learn through their tower. The factor size is
``embedding_dim``; ``tower``, ``gmf_dim`` and ``dropout`` do not apply, and the kind has no tower.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modelrepo import Source
from training.layers import Array, Grads, Params, RowGroups
from training.models.base import ForwardCache, GraphNodes, Model, Rng, Rows, Table, Weights
from training.models.config import ModelConfig
from training.models.registry import register


@dataclass(frozen=True)
class _BiasTable(Table):
    """A one-column table: one bias per id, whatever the embedding sizes."""

    def dim(self, config: ModelConfig) -> int:
        return 1


@register("mf")
class MF(Model):
    tables = (
        Table("user_emb", Source.USER, "embedding_dim"),
        Table("item_emb", Source.ITEM, "embedding_dim"),
        _BiasTable("user_bias", Source.USER, "embedding_dim"),
        _BiasTable("item_bias", Source.ITEM, "embedding_dim"),
    )

    @classmethod
    def init_params(
        cls, config: ModelConfig, n_user_rows: int, n_item_rows: int, seed: int
    ) -> Params:
        """The shared initialisation without the tower; ``w_out`` ones, biases zero."""
        params = super().init_params(config, n_user_rows, n_item_rows, seed)
        for layer in range(len(config.tower)):
            del params[f"W{layer}"], params[f"b{layer}"]
        params["w_out"] = np.ones((config.embedding_dim + 2, 1), dtype=np.float32)
        params["user_bias"][...] = 0.0
        params["item_bias"][...] = 0.0
        return params

    def __init__(self, config: ModelConfig, n_user_rows: int, n_item_rows: int, params: Params):
        super().__init__(config, n_user_rows, n_item_rows, params)
        self._tower = []  # no tower: L2 reaches the tables and ``w_out`` only

    def _forward(self, users: Rows, items: Rows, rng: Rng | None) -> ForwardCache:
        user, item = self._lookup("user_emb", users), self._lookup("item_emb", items)
        biases = (self._lookup("user_bias", users), self._lookup("item_bias", items))
        head_input = np.concatenate([user * item, *biases], axis=1)
        return ForwardCache(users, items, [], [], head_input, saved=(user, item))

    def _backward(self, cache: ForwardCache, dhead: Array, grads: Grads) -> None:
        user, item = cache.saved
        dim = self.config.embedding_dim
        dproduct = dhead[:, :dim]
        users, items = RowGroups.of(cache.users), RowGroups.of(cache.items)
        grads["user_emb"] = self._embeddings["user_emb"].backward(users, dproduct * item)
        grads["item_emb"] = self._embeddings["item_emb"].backward(items, dproduct * user)
        grads["user_bias"] = self._embeddings["user_bias"].backward(users, dhead[:, dim : dim + 1])
        grads["item_bias"] = self._embeddings["item_bias"].backward(items, dhead[:, dim + 1 :])

    @classmethod
    def graph_head_input(cls, nodes: GraphNodes, params: Weights, user: str, item: str) -> str:
        user_vec = nodes.add("Gather", ["user_emb", user], "u_vec", axis=0)
        item_vec = nodes.add("Gather", ["item_emb", item], "i_vec", axis=0)
        product = nodes.add("Mul", [user_vec, item_vec], "product")
        user_bias = nodes.add("Gather", ["user_bias", user], "u_bias", axis=0)
        item_bias = nodes.add("Gather", ["item_bias", item], "i_bias", axis=0)
        return nodes.add("Concat", [product, user_bias, item_bias], "joined", axis=1)
