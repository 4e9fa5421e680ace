"""Small side features and dlrm models for the dlrm tests: every role, padding and an empty bag."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from modelrepo import Source
from modelrepo.layout import ITEMS_FILE
from training.models import DLRM, ModelConfig, SideFeature, build_model

N_USER_ROWS, N_ITEM_ROWS = 7, 6
USERS = np.array([1, 2, 6, 0, 2, 3, 1, 5, 2, 4, 6, 3])
ITEMS = np.array([3, 1, 5, 2, 0, 3, 4, 1, 3, 5, 4, 2])
CONFIG = ModelConfig(kind="dlrm", embedding_dim=3, tower=(5, 4), bottom=(4,), id_dropout=0.0)

OCCUPATION = SideFeature.categorical(
    "occupation", Source.USER_TABLE, 4, np.array([0, 1, 2, 3, 1, 0, 2])
)
AGE = SideFeature.dense(
    "age",
    Source.USER_TABLE,
    np.array([[0, 0], [-1.2, 0.3], [0.4, -0.8], [1.1, 1.5], [-0.3, 0.9], [0.8, -1.4], [2.0, 0.1]]),
    mean=[35.0, 1990.0],
    std=[12.0, 8.0],
)
# Item 3 has an empty bag; the others are padded with 0 after their genres.
GENRES = SideFeature.multi_hot(
    "genres",
    Source.ITEM_TABLE,
    5,
    np.array([[0, 0, 0], [1, 2, 0], [3, 0, 0], [0, 0, 0], [4, 1, 2], [2, 3, 0]]),
)
YEAR = SideFeature.dense("year", Source.ITEM_TABLE, np.array([[0], [1], [-1], [0.5], [-2], [0.2]]),
                         mean=[1995.0], std=[4.0])  # fmt: skip
DEVICE = SideFeature.categorical("device", Source.CONTEXT, 3, None)
# A bag of the user's items (over the item ids): joins the user's vector in the MF head.
RECENT = SideFeature.multi_hot(
    "recent_items",
    Source.USER_TABLE,
    N_ITEM_ROWS,
    np.array([[0, 0], [3, 1], [0, 0], [5, 2], [1, 0], [4, 4], [2, 0]]),
    vocabulary=ITEMS_FILE,
)

FEATURE_SETS: dict[str, tuple[SideFeature, ...]] = {
    "all": (OCCUPATION, AGE, GENRES, YEAR),
    "all_and_history": (OCCUPATION, AGE, GENRES, YEAR, RECENT),
    "history": (RECENT,),
    "no_numeric": (OCCUPATION, GENRES),
    "numeric_only": (AGE,),
    "ids_only": (),
}


def dlrm(features: Sequence[SideFeature], config: ModelConfig = CONFIG, seed: int = 3) -> DLRM:
    """A small dlrm model over ``features``."""
    model = build_model(config, N_USER_ROWS, N_ITEM_ROWS, seed, features)
    assert isinstance(model, DLRM)
    return model


def spread(model: DLRM, seed: int = 4, dtype: type[np.floating] = np.float64) -> DLRM:
    """``model`` with parameters of ``dtype`` whose values spread the scores: embeddings
    normal(0, 1) (the unknown and padding rows too), biases normal(0, 0.3), weights scaled by
    their fan-in. The NCF initialisation gives gradients too small to check meaningfully."""
    rng = np.random.default_rng(seed)
    for name, value in model.params.items():
        if name.endswith("_emb"):
            scale = 1.0
        elif name.startswith("b"):
            scale = 0.3
        else:
            scale = 1.5 / np.sqrt(value.shape[0])
        model.params[name] = rng.normal(0.0, scale, value.shape).astype(dtype)
    return model


def table(feature: SideFeature) -> np.ndarray[Any, Any]:
    """The table of a user or item feature."""
    assert feature.table is not None
    return feature.table
