"""Model classes by kind name, and a freshly initialised model for a config."""

from __future__ import annotations

from training.models.base import Model
from training.models.config import ModelConfig
from training.models.registry import registered


def model_class(kind: str) -> type[Model]:
    """The class of the kind called ``kind``; ValueError naming the known kinds otherwise."""
    cls = registered(kind)
    if not issubclass(cls, Model):
        raise TypeError(f"model kind {kind!r} is registered with {cls!r}, not a Model")
    return cls


def build_model(config: ModelConfig, n_user_rows: int, n_item_rows: int, seed: int) -> Model:
    """A freshly initialised model of ``config.kind``; the same arguments give the same weights."""
    cls = model_class(config.kind)
    params = cls.init_params(config, n_user_rows, n_item_rows, seed)
    return cls(config, n_user_rows, n_item_rows, params)
