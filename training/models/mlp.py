"""NCF's MLP model (He et al. 2017): concat(user_emb[u], item_emb[i]) -> ReLU tower -> logit."""

from __future__ import annotations

from modelrepo import Source
from training.layers import Array, Grads
from training.models.base import ForwardCache, GraphNodes, Model, Rng, Rows, Table, Weights
from training.models.registry import register

_TABLES = ("user_emb", "item_emb")


@register("mlp")
class NCFMLP(Model):
    tables = (
        Table("user_emb", Source.USER, "embedding_dim"),
        Table("item_emb", Source.ITEM, "embedding_dim"),
    )

    def _forward(self, users: Rows, items: Rows, rng: Rng | None) -> ForwardCache:
        return self._mlp_forward(_TABLES, users, items, rng)

    def _backward(self, cache: ForwardCache, dhead: Array, grads: Grads) -> None:
        self._mlp_backward(_TABLES, dhead, cache, grads, cache.users, cache.items)

    @classmethod
    def graph_head_input(cls, nodes: GraphNodes, params: Weights, user: str, item: str) -> str:
        return cls._graph_mlp_branch(nodes, params, _TABLES, user, item)
