"""The one error the contract package raises (a version or its manifest breaks the contract),
and how a pydantic validation error is told in one line."""

from __future__ import annotations

from pydantic import ValidationError


class VersionError(Exception):
    """A version directory cannot be read as the contract says; the message names what and why."""


def describe(exc: ValidationError, most: int = 5) -> str:
    """A pydantic error as one line: ``where: what`` for each of its first ``most`` problems."""
    parts = []
    for error in exc.errors(include_url=False)[:most]:
        where = ".".join(str(p) for p in error["loc"])
        parts.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
    return "; ".join(parts)
