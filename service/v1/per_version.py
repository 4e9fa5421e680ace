"""What ``/v1`` derives from a served version once (how to feed it, its filters' indexes), kept
while the version lives and dropped with it."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from service.models.served import ServedVersion

T = TypeVar("T")


class PerVersion(Generic[T]):
    """``build(version)`` computed on a version's first use, then the same object for it."""

    def __init__(self, build: Callable[[ServedVersion], T]) -> None:
        self._build = build
        self._made: weakref.WeakKeyDictionary[ServedVersion, T] = weakref.WeakKeyDictionary()

    def __call__(self, version: ServedVersion) -> T:
        made = self._made.get(version)
        if made is None:
            made = self._made[version] = self._build(version)
        return made
