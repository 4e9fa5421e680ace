"""Model classes by kind name, and a freshly initialised model for a config."""

from __future__ import annotations

from collections.abc import Sequence

from training.models.base import Model
from training.models.config import ModelConfig
from training.models.registry import registered
from training.models.side import SideFeature


def model_class(kind: str) -> type[Model]:
    """The class of the kind called ``kind``; ValueError naming the known kinds otherwise."""
    cls = registered(kind)
    if not issubclass(cls, Model):
        raise TypeError(f"model kind {kind!r} is registered with {cls!r}, not a Model")
    return cls


def build_model(
    config: ModelConfig,
    n_user_rows: int,
    n_item_rows: int,
    seed: int,
    features: Sequence[SideFeature] = (),
) -> Model:
    """A freshly initialised model of ``config.kind``; the same arguments give the same weights.

    ``features`` are the side features of a kind that reads them (``dlrm``); other kinds refuse
    any.
    """
    return model_class(config.kind).build(config, n_user_rows, n_item_rows, seed, features)
