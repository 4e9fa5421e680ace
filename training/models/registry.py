"""The model kinds by name: the one place that feeds the CLI's choices and config validation.

A kind is a subclass of :class:`training.models.base.Model` decorated with :func:`register`; the
package imports every kind module, so the registry is complete once ``training.models`` is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from training.models.base import Model
    from training.models.config import ModelConfig

KindT = TypeVar("KindT", bound="type[Model]")

_KINDS: dict[str, type[Model]] = {}


def register(name: str) -> Callable[[KindT], KindT]:
    """Class decorator: make the class the model kind called ``name``."""

    def add(cls: KindT) -> KindT:
        if name in _KINDS:
            raise ValueError(f"model kind {name!r} is registered twice")
        cls.kind = name
        _KINDS[name] = cls
        return cls

    return add


def kind_names() -> tuple[str, ...]:
    """The registered kinds, in registration order."""
    return tuple(_KINDS)


def model_class(kind: str) -> type[Model]:
    """The class of the kind called ``kind``; ValueError naming the known kinds otherwise."""
    try:
        return _KINDS[kind]
    except KeyError:
        known = " or ".join(repr(name) for name in _KINDS)
        raise ValueError(f"unknown model kind {kind!r}; expected {known}") from None


def build_model(config: ModelConfig, n_user_rows: int, n_item_rows: int, seed: int) -> Model:
    """A freshly initialised model of ``config.kind``; the same arguments give the same weights."""
    cls = model_class(config.kind)
    params = cls.init_params(config, n_user_rows, n_item_rows, seed)
    return cls(config, n_user_rows, n_item_rows, params)
