"""Recommender models in NumPy with hand-written backpropagation, one class per model kind.

Importing the package registers every kind (:mod:`training.models.mlp`,
:mod:`training.models.neumf`,
:mod:`training.models.mf`, :mod:`training.models.dlrm`, which also reads side features:
:mod:`training.models.side`); to add one, write a ``Model`` subclass in its own module, decorate
it with ``@register("name")`` and import it here.
"""

from __future__ import annotations

from training.models.base import ForwardCache, GraphNodes, Model, Table
from training.models.config import ModelConfig
from training.models.dlrm import DLRM
from training.models.factory import build_model, model_class
from training.models.mf import MF
from training.models.mlp import NCFMLP
from training.models.neumf import NeuMF
from training.models.registry import kind_names, register
from training.models.side import SideFeature, feature_tables

__all__ = [
    "DLRM",
    "MF",
    "NCFMLP",
    "ForwardCache",
    "GraphNodes",
    "Model",
    "ModelConfig",
    "NeuMF",
    "SideFeature",
    "Table",
    "build_model",
    "feature_tables",
    "kind_names",
    "model_class",
    "register",
]
