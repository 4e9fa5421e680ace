"""The one error the contract package raises: a version (or its manifest) breaks the contract."""

from __future__ import annotations


class VersionError(Exception):
    """A version directory cannot be read as the contract says; the message names what and why."""
