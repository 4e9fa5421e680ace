"""The model kinds by name: the one place that feeds the CLI's choices and config validation.

A kind is a subclass of :class:`training.models.base.Model` decorated with :func:`register`; the
package imports every kind module, so the registry is complete once ``training.models`` is. This
module sits below the model classes and their config (it imports neither), so that both can use it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

KindT = TypeVar("KindT", bound=type)

_KINDS: dict[str, type] = {}


def register(name: str) -> Callable[[KindT], KindT]:
    """Class decorator: make the class the model kind called ``name``."""

    def add(cls: KindT) -> KindT:
        if name in _KINDS:
            raise ValueError(f"model kind {name!r} is registered twice")
        cls.kind = name  # type: ignore[attr-defined]
        _KINDS[name] = cls
        return cls

    return add


def kind_names() -> tuple[str, ...]:
    """The registered kinds, in registration order."""
    return tuple(_KINDS)


def registered(kind: str) -> type:
    """The class registered as ``kind``; ValueError naming the known kinds otherwise."""
    try:
        return _KINDS[kind]
    except KeyError:
        known = " or ".join(repr(name) for name in _KINDS)
        raise ValueError(f"unknown model kind {kind!r}; expected {known}") from None
