"""DLRM (Naumov et al. 2019, the MLPerf recommendation model) over the two ids and side features.

Every categorical input (the user id, the item id, each categorical feature) is looked up in its
own embedding table of width D = ``embedding_dim``; a multi-hot feature is the mean of the
embeddings of its non-zero entries (a zero vector for an empty bag: 0 is padding). A bag of the
user's items (a user-side multi-hot input over the item ids: ``--history-items``) is read from the
item table itself, and its mean joins the user's vector in the MF head (SVD++'s implicit-feedback
term); sharing the table scored NDCG@10 about 0.01 higher on MovieLens 100K than a table of its
own, on each of four split seeds (10 items per bag). The numeric features, concatenated, go through
the bottom MLP (ReLU layers ``bottom``, then a ReLU layer to D). The interaction of all those
D-vectors (the bottom MLP's output among them) is the sum of their pairs' element-wise products
(NFM's bi-interaction, in place of DLRM's pairwise dot products: as good on MovieLens 100K and
faster to serve; ``training.models.dlrm_interaction``), after the bottom MLP's output; then the
top MLP (``tower``). The output layer also reads an "MF head" (weights starting at ones): the
user and item vectors' element-wise product and a bias per user and per item, as ``mf``'s; DLRM
alone lacks the item bias that carries popularity, and lost to ``mf`` on MovieLens 100K. Then the
sigmoid. Without numeric features there is no bottom MLP and the top MLP sees the interaction
alone (an id-only dlrm model: the dot product of the user and item vectors).

The features come from the tables of its :class:`~training.models.side.SideFeature`s:
``forward(users, items)`` gathers the rows' features, as the training loop and the server by id
do; ``forward_inputs`` takes every input of the signature explicitly, as the ONNX graph does (a
cold-start user: id row 0 with its own features). In training, ``id_dropout`` replaces user ids
by the unknown row while keeping their features, so that row 0 learns to lean on the features; a
dropped id's bias is row 0's too, as when the server scores an id the model does not know. Item
ids are never dropped: a caller cannot send an item's features, so an unknown item is never
served from them, and dropping item ids (their bias, which carries popularity) cost cold-start
users HR@10 on MovieLens 100K (0.415 against 0.426 at rate 0.3, 0.415 against 0.447 at 0.5).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from modelrepo import UNKNOWN_ROW, Role, Signature, Source, two_id_signature
from training.layers import Array, Dense, Embedding, Grads, Mask, Params, SparseRows, sigmoid
from training.models import base
from training.models.base import ForwardCache, GraphNodes, Model, Rng, Rows, Table, Weights
from training.models.config import ModelConfig
from training.models.dlrm_graph import (
    bottom_layer,
    feature_table,
    interaction_graph,
    mf_head_graph,
    side_param,
)
from training.models.dlrm_inputs import Feeds, check_feeds, dlrm_signature, joins_user_vector
from training.models.dlrm_interaction import interaction, interaction_backward
from training.models.dlrm_params import init_params, mf_width, param_shapes
from training.models.registry import register
from training.models.side import SideFeature


@dataclass
class DLRMCache(ForwardCache):
    """The forward pass's inputs and intermediate values that the backward pass reads."""

    feeds: Feeds = field(default_factory=dict)
    vectors: Array | None = None
    """[N, F, D]: the user, item, categorical, bag and bottom-MLP vectors, in that order."""
    bag_counts: dict[str, Array] = field(default_factory=dict)
    """Per multi-hot input: max(non-zero entries, 1) per row, [N, 1]."""
    bottom_inputs: list[Array] = field(default_factory=list)
    bottom_masks: list[Mask] = field(default_factory=list)


@dataclass(frozen=True)
class _BiasTable(Table):
    """A one-column table: one bias per id (the MF head's), whatever the embedding size."""

    def dim(self, config: ModelConfig) -> int:
        return 1


def _bottom_layers(config: ModelConfig) -> list[Dense]:
    return [Dense(*bottom_layer(k)) for k in range(len(config.bottom) + 1)]


@register("dlrm")
class DLRM(Model):
    """Parameters: ``user_emb``, ``item_emb``, ``<input>_emb`` per categorical or multi-hot
    feature (a bag of the user's items reads ``item_emb``), ``W_bottom<k>``/``b_bottom<k>`` (with
    numeric features), the tower, ``user_bias`` and ``item_bias`` (the MF head's) and the output
    layer over the tower's output and the MF head."""

    tables = (
        Table("user_emb", Source.USER, "embedding_dim"),
        Table("item_emb", Source.ITEM, "embedding_dim"),
        _BiasTable("user_bias", Source.USER, "embedding_dim"),
        _BiasTable("item_bias", Source.ITEM, "embedding_dim"),
    )

    def __init__(
        self,
        config: ModelConfig,
        n_user_rows: int,
        n_item_rows: int,
        params: Params,
        features: Sequence[SideFeature] = (),
    ) -> None:
        super().__init__(config, n_user_rows, n_item_rows, params)
        self.features = tuple(features)
        self._signature = dlrm_signature(n_user_rows, n_item_rows, self.features)
        id_rows = {Source.USER_TABLE: n_user_rows, Source.ITEM_TABLE: n_item_rows}
        for feature in self.features:
            if feature.table is not None and feature.table.shape[0] != id_rows[feature.source]:
                raise ValueError(
                    f"{feature.name}: the table has {feature.table.shape[0]} rows, the "
                    f"{feature.source} ids {id_rows[feature.source]}"
                )
        expected = param_shapes(config, n_user_rows, n_item_rows, self.features)
        shapes = {name: value.shape for name, value in params.items()}
        if shapes != expected:
            raise ValueError(f"parameters {shapes} do not fit the features: expected {expected}")
        self._embedded = [feature for feature in self.features if feature.embedded]
        self._dense = [feature for feature in self.features if not feature.embedded]
        self._bottom = _bottom_layers(config) if self._dense else []
        self._tables = {f.name: feature_table(f.input_spec()) for f in self._embedded}
        """The embedding table of each categorical or multi-hot input (a bag of the user's items
        reads the item table)."""
        for table in set(self._tables.values()) - set(self._embeddings):
            self._embeddings[table] = Embedding(table)
        self._joining = [
            k for k, f in enumerate(self._embedded, start=2) if joins_user_vector(f.input_spec())
        ]
        """The vectors (indices into the stack) that join the user's in the MF head."""

    # -- parameters and signature ---------------------------------------------------------

    @classmethod
    def build(
        cls,
        config: ModelConfig,
        n_user_rows: int,
        n_item_rows: int,
        seed: int,
        features: Sequence[SideFeature] = (),
    ) -> DLRM:
        params = cls.init_params(config, n_user_rows, n_item_rows, seed, features)
        return cls(config, n_user_rows, n_item_rows, params, features)

    @classmethod
    def init_params(
        cls,
        config: ModelConfig,
        n_user_rows: int,
        n_item_rows: int,
        seed: int,
        features: Sequence[SideFeature] = (),
    ) -> Params:
        """Freshly drawn parameters (``training.models.dlrm_params``)."""
        return init_params(config, n_user_rows, n_item_rows, seed, features)

    @classmethod
    def signature_for(cls, params: Weights) -> Signature:
        """Only an id-only dlrm model's signature follows from its parameters."""
        if any(side_param(name) for name in params):
            raise ValueError("a dlrm model with side features: take its signature from the model")
        return super().signature_for(params)

    @property
    def signature(self) -> Signature:
        return self._signature

    @property
    def side_features(self) -> tuple[SideFeature, ...]:
        return self.features

    def _weight_names(self) -> list[str]:
        return super()._weight_names() + [layer.weight for layer in self._bottom]

    # -- inputs ---------------------------------------------------------------------------

    def inputs_for(self, users: Rows, items: Rows) -> dict[str, NDArray[Any]]:
        """The graph's feeds for id rows: each row's features from the tables (defaults for a
        context feature). A cold-start user: set the ``user`` feed to 0, keep its features."""
        feeds: dict[str, NDArray[Any]] = {
            "user": np.asarray(users, dtype=np.int64),
            "item": np.asarray(items, dtype=np.int64),
        }
        for feature in self.features:
            if feature.table is None:
                feeds[feature.name] = feature.defaults(feeds["user"].shape[0])
            else:
                rows = feeds["user" if feature.source is Source.USER_TABLE else "item"]
                feeds[feature.name] = feature.table[rows]
        return feeds

    def check_inputs(self, feeds: Feeds) -> dict[str, NDArray[Any]]:
        """``feeds`` checked against the signature: every input, its type, shape and range."""
        return check_feeds(self._signature, feeds)

    # -- forward and backward -------------------------------------------------------------

    def forward(
        self,
        users: Rows,
        items: Rows,
        *,
        train: bool = False,
        rng: Rng | None = None,
        sample_features: Mapping[str, NDArray[Any]] | None = None,
    ) -> tuple[Array, ForwardCache]:
        """Logits for id rows, their features gathered from the tables (``sample_features``
        replaces a table's rows by per-row values: a training positive's preceding items); in
        training, user ids replaced by the unknown row at rate ``id_dropout`` (their features
        kept)."""
        self._check_pairs(users, items)
        feeds = self.inputs_for(users, items)
        if sample_features:
            unknown = set(sample_features) - {f.name for f in self.features if f.table is not None}
            if unknown:
                raise ValueError(f"sample features {sorted(unknown)} are not table features")
            feeds = check_feeds(self._signature, {**feeds, **sample_features})
        rate = self.config.id_dropout
        if train and rate > 0.0:
            if rng is None:
                raise ValueError("training with id dropout needs an rng")
            dropped = rng.random(users.size) < rate
            feeds["user"] = np.where(dropped, UNKNOWN_ROW, feeds["user"])
        return self._run(feeds, train, rng)

    def forward_inputs(
        self, feeds: Feeds, *, train: bool = False, rng: Rng | None = None
    ) -> tuple[Array, ForwardCache]:
        """Logits for explicit inputs (every input of the signature, as the graph takes them)."""
        return self._run(self.check_inputs(feeds), train, rng)

    def predict_inputs(self, feeds: Feeds) -> NDArray[np.float32]:
        """Probabilities [N] float32 for explicit inputs, in inference mode, in chunks of rows."""
        checked = self.check_inputs(feeds)
        n = checked["user"].shape[0]
        out = np.empty(n, dtype=np.float32)
        for start in range(0, n, base.PREDICT_CHUNK_ROWS):
            stop = start + base.PREDICT_CHUNK_ROWS
            logits, _ = self._run({k: v[start:stop] for k, v in checked.items()}, False, None)
            out[start:stop] = sigmoid(logits)
        return out

    def predict_cold(self, users: Rows, items: Rows) -> NDArray[np.float32]:
        """Probabilities for users served as the model would serve ones it never saw: the
        unknown id row with each user's own features (cold-start evaluation)."""
        feeds = self.inputs_for(users, items)
        feeds["user"] = np.full_like(feeds["user"], UNKNOWN_ROW)
        return self.predict_inputs(feeds)

    def _run(self, feeds: Feeds, train: bool, rng: Rng | None) -> tuple[Array, ForwardCache]:
        cache = self._forward_feeds(feeds, self._dropout_rng(train, rng))
        return self._head.forward(self.params, cache.head_input)[:, 0], cache

    def _forward(self, users: Rows, items: Rows, rng: Rng | None) -> ForwardCache:
        return self._forward_feeds(self.inputs_for(users, items), rng)

    def _forward_feeds(self, feeds: Feeds, rng: Rng | None) -> DLRMCache:
        users, items = feeds["user"], feeds["item"]
        cache = DLRMCache(users, items, [], [], np.empty(0), feeds=feeds)
        vectors = [self._lookup("user_emb", users), self._lookup("item_emb", items)]
        for feature in self._embedded:
            rows = feeds[feature.name]
            looked_up = self._lookup(self._tables[feature.name], rows)
            if feature.role is Role.MULTI_HOT:
                mask = (rows != 0).astype(looked_up.dtype)
                count = np.maximum(mask.sum(axis=1, keepdims=True), 1.0)
                cache.bag_counts[feature.name] = count
                looked_up = np.einsum("nl,nld->nd", mask, looked_up) / count
            vectors.append(looked_up)
        dense = None
        if self._dense:
            dtype = self.params[self._bottom[0].weight].dtype
            x = np.concatenate([feeds[f.name] for f in self._dense], axis=1).astype(dtype)
            x, cache.bottom_inputs, cache.bottom_masks = self._relu_forward(self._bottom, x, None)
            dense = x
            vectors.append(x)
        stacked = np.stack(vectors, axis=1)
        pairs = interaction(stacked)
        top = pairs if dense is None else np.concatenate([dense, pairs], axis=1)
        tower, cache.tower_inputs, cache.tower_masks = self._tower_forward(top, rng)
        biases = (self._lookup("user_bias", users), self._lookup("item_bias", items))
        user = sum((vectors[k] for k in self._joining), start=vectors[0])
        cache.head_input = np.concatenate([tower, user * vectors[1], *biases], axis=1)
        cache.vectors = stacked
        return cache

    def _backward(self, cache: ForwardCache, dhead: Array, grads: Grads) -> None:
        assert isinstance(cache, DLRMCache) and cache.vectors is not None
        stacked = cache.vectors
        dim = stacked.shape[2]
        split = dhead.shape[1] - mf_width(self.config)
        dproduct, dbiases = dhead[:, split : split + dim], dhead[:, split + dim :]
        dtop = self._tower_backward(dhead[:, :split], cache, grads)
        dvectors = interaction_backward(dtop[:, dim:] if self._dense else dtop, stacked)
        user = stacked[:, [0, *self._joining]].sum(axis=1)
        for k in (0, *self._joining):
            dvectors[:, k] += dproduct * stacked[:, 1]
        dvectors[:, 1] += dproduct * user
        users, items = cache.users, cache.items
        grads["user_emb"] = self._embeddings["user_emb"].backward(users, dvectors[:, 0])
        grads["user_bias"] = self._embeddings["user_bias"].backward(users, dbiases[:, :1])
        grads["item_bias"] = self._embeddings["item_bias"].backward(items, dbiases[:, 1:])
        # Per table, the rows looked up and their gradients: the item table also gets those of
        # a bag of the user's items.
        lookups: dict[str, list[tuple[NDArray[np.integer], Array]]] = {
            "user_emb": [(users, dvectors[:, 0])], "item_emb": [(items, dvectors[:, 1])],
        }  # fmt: skip
        for k, feature in enumerate(self._embedded, start=2):
            rows, dvector = cache.feeds[feature.name], dvectors[:, k]
            if feature.role is Role.MULTI_HOT:
                present = rows != 0
                samples = np.nonzero(present)[0]
                dvector = (dvector / cache.bag_counts[feature.name])[samples]
                rows = rows[present]
            lookups.setdefault(self._tables[feature.name], []).append((rows, dvector))
        for name, parts in lookups.items():
            rows = np.concatenate([part[0] for part in parts])
            grads[name] = self._embeddings[name].backward(
                rows, np.concatenate([p[1] for p in parts])
            )
        if self._dense:
            dx: Array = dtop[:, :dim] + dvectors[:, -1]
            self._relu_backward(self._bottom, dx, cache.bottom_inputs, cache.bottom_masks, grads)

    # -- L2 over the looked-up feature rows -----------------------------------------------

    def _feature_rows(self, feature: SideFeature, cache: ForwardCache) -> NDArray[np.integer]:
        """The distinct rows of ``feature``'s table the batch looked up (a bag's non-zero ones)."""
        assert isinstance(cache, DLRMCache)
        rows = cache.feeds[feature.name]
        return np.unique(rows[rows != 0] if feature.role is Role.MULTI_HOT else rows)

    def regularization(self, cache: ForwardCache) -> float:
        """As every kind's, plus each feature table's looked-up rows (an item-table row the
        batch read as an item and in a bag counts once)."""
        assert isinstance(cache, DLRMCache)
        total = super().regularization(cache)
        l2 = self.config.l2
        for feature in self._embedded if l2 > 0.0 else ():
            table, rows = self._tables[feature.name], self._feature_rows(feature, cache)
            if table == "item_emb":
                rows = np.setdiff1d(rows, cache.items)
            looked_up = self.params[table][rows]
            total += 0.5 * l2 * float(np.vdot(looked_up, looked_up))
        return total

    def _add_l2(self, grads: Grads) -> None:
        super()._add_l2(grads)  # the item table's rows, bags' included
        for name in {table for table in self._tables.values() if table != "item_emb"}:
            sparse = grads[name]
            assert isinstance(sparse, SparseRows)
            values = sparse.values + self.config.l2 * self.params[name][sparse.rows]
            grads[name] = SparseRows(sparse.rows, values)

    # -- the ONNX graph -------------------------------------------------------------------

    @classmethod
    def graph_head_input(cls, nodes: GraphNodes, params: Weights, user: str, item: str) -> str:
        signature = two_id_signature(params["user_emb"].shape[0], params["item_emb"].shape[0])
        return cls.graph_inputs(nodes, params, signature)

    @classmethod
    def graph_inputs(cls, nodes: GraphNodes, params: Weights, signature: Signature) -> str:
        tower = cls._graph_tower(nodes, params, interaction_graph(nodes, params, signature))
        return mf_head_graph(nodes, signature, tower)
