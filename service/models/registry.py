"""The served versions as handlers see them: read-only lookups over the reconciler's records.

Every lookup is a few dictionary reads on the event loop; the reconciler changes the records only
on the event loop too, so a handler never sees a half-made change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from service.errors import ModelNotFound, ModelNotReady
from service.models.served import ServedVersion
from service.models.state import (
    POLICY_REASON,
    UNAVAILABLE,
    ModelRecord,
    ServingStatus,
    State,
)

NO_VERSIONS = "no versions"
UNLOADED = "unloaded"  # as service.models.state words it
FAILED_PUBLIC = "failed to load"
RELOAD_FAILED_PUBLIC = "serving the copy loaded before; reloading failed"
_PUBLIC_REASONS = frozenset({"", NO_VERSIONS, UNLOADED, POLICY_REASON})
"""Reasons the server itself words, which hold nothing from the files or the libraries."""


@dataclass(frozen=True)
class IndexEntry:
    name: str
    version: str
    state: str  # READY | UNAVAILABLE | LOADING | UNLOADING
    reason: str

    def public(self) -> IndexEntry:
        """The entry as anyone may read it: a reason the server words itself, or one that says
        only what happened. A load failure's own reason can name files, paths and library
        messages; it stays in the log and in the index answered to the admin token."""
        if self.reason in _PUBLIC_REASONS:
            return self
        reason = RELOAD_FAILED_PUBLIC if self.state == State.READY else FAILED_PUBLIC
        return IndexEntry(self.name, self.version, self.state, reason)


class Registry:
    """Finds served versions by name and version; explains why one is not served."""

    def __init__(self, models: Mapping[str, ModelRecord], status: ServingStatus) -> None:
        self._models = models
        self._status = status

    @property
    def ready(self) -> bool:
        return self._status.started and not self._status.stopping

    @property
    def provider(self) -> str:
        """The execution provider chosen at start (``CPUExecutionProvider``, ``CUDA...``)."""
        return self._status.provider

    def get(self, name: str, version: int | None = None) -> ServedVersion:
        """The served version (None: the highest served one).

        A version that exists but does not serve is "not ready", whatever the reason: anyone
        may call it, and the reason can name paths, checksums and library messages. The reason
        is logged when the load fails and shown in the index to the admin token.
        """
        self._status.refuse_if_stopping()
        model = self._model(name)
        if version is None:
            if model.latest is None:
                raise ModelNotReady(f"model '{name}' has no version ready")
            return model.latest
        record = model.versions.get(version)
        if record is None:
            raise ModelNotFound(f"model '{name}' has no version {version}")
        if record.serving is None:
            raise ModelNotReady(f"model '{name}' version {version} is not ready")
        return record.serving

    def versions(self, name: str) -> list[int]:
        """The versions of ``name`` that take requests, ascending."""
        return list(self._model(name).served())

    def index(self) -> list[IndexEntry]:
        """Every model and version the repository holds or the server still serves, with its
        state and the reason it is not ready."""
        entries: list[IndexEntry] = []
        for name in sorted(self._models):
            model = self._models[name]
            if not model.versions:
                entries.append(IndexEntry(name, "", UNAVAILABLE, model.config_error or NO_VERSIONS))
            for version, record in sorted(model.versions.items()):
                entries.append(IndexEntry(name, str(version), record.state.shown, record.reason))
        return entries

    def _model(self, name: str) -> ModelRecord:
        model = self._models.get(name)
        if model is None:
            raise ModelNotFound(f"unknown model '{name}'")
        return model
