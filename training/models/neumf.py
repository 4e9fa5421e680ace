"""NCF's NeuMF (He et al. 2017): concat(gmf_user[u] * gmf_item[i], MLP tower output) -> logit."""

from __future__ import annotations

import numpy as np

from modelrepo import Source
from training.layers import Array, Grads, RowGroups
from training.models.base import ForwardCache, GraphNodes, Model, Rng, Rows, Table, Weights
from training.models.config import ModelConfig
from training.models.registry import register

_MLP_TABLES = ("mlp_user_emb", "mlp_item_emb")


@register("neumf")
class NeuMF(Model):
    """The GMF branch has no dropout; the output layer sees ``gmf_dim`` more inputs."""

    tables = (
        Table("gmf_user_emb", Source.USER, "gmf_dim"),
        Table("gmf_item_emb", Source.ITEM, "gmf_dim"),
        Table("mlp_user_emb", Source.USER, "embedding_dim"),
        Table("mlp_item_emb", Source.ITEM, "embedding_dim"),
    )

    @classmethod
    def head_extra(cls, config: ModelConfig) -> int:
        return config.gmf_dim

    def _forward(self, users: Rows, items: Rows, rng: Rng | None) -> ForwardCache:
        gmf_user = self._lookup("gmf_user_emb", users)
        gmf_item = self._lookup("gmf_item_emb", items)
        cache = self._mlp_forward(_MLP_TABLES, users, items, rng)
        cache.head_input = np.concatenate([gmf_user * gmf_item, cache.head_input], axis=1)
        cache.saved = (gmf_user, gmf_item)
        return cache

    def _backward(self, cache: ForwardCache, dhead: Array, grads: Grads) -> None:
        gmf_user, gmf_item = cache.saved
        gmf_dim = self.config.gmf_dim
        dgmf = dhead[:, :gmf_dim]
        # Both tables of a side look up the same rows: group them once.
        users, items = RowGroups.of(cache.users), RowGroups.of(cache.items)
        self._mlp_backward(_MLP_TABLES, dhead[:, gmf_dim:], cache, grads, users, items)
        grads["gmf_user_emb"] = self._embeddings["gmf_user_emb"].backward(users, dgmf * gmf_item)
        grads["gmf_item_emb"] = self._embeddings["gmf_item_emb"].backward(items, dgmf * gmf_user)

    @classmethod
    def graph_head_input(cls, nodes: GraphNodes, params: Weights, user: str, item: str) -> str:
        tower = cls._graph_mlp_branch(nodes, params, _MLP_TABLES, user, item)
        gmf_user = nodes.add("Gather", ["gmf_user_emb", user], "gu_vec", axis=0)
        gmf_item = nodes.add("Gather", ["gmf_item_emb", item], "gi_vec", axis=0)
        product = nodes.add("Mul", [gmf_user, gmf_item], "gmf_out")
        return nodes.add("Concat", [product, tower], "joined", axis=1)
