"""What the server knows of each model and each of its versions: one record per (model, version).

A version's record holds its explicit state and the reason shown in the repository index (in full
to the admin token only: a load failure's reason can name paths and library messages), the copy
that takes its requests, and the facts the version policy needs: whether its directory is still
on disk, which files its served copy was loaded from, which files failed to load (a failed
version is retried only when they change), and how many retired copies are still draining.

The reconciler moves a record from state to state (:meth:`VersionRecord.begin_load`,
:meth:`~VersionRecord.serve`, :meth:`~VersionRecord.fail`, :meth:`~VersionRecord.retire`); a
version that is neither loading, ready nor unloading is at rest, and
:meth:`ModelRecord.settle` gives it its reason: unloaded, failed, an invalid ``config.json``, or
not chosen by the version policy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from modelrepo.layout import FileStamp
from service.errors import ShuttingDown
from service.models.config import EffectiveConfig
from service.models.served import ServedVersion

Stamp = tuple[FileStamp | None, ...]
"""The files of a version and its model's ``config.json``: what a served copy was loaded from."""

UNREAD: FileStamp = ("", -1, -1, -1)  # stamps no file: config.json is read on the next pass
POLICY_REASON = "not served under the version policy"
UNAVAILABLE = "UNAVAILABLE"


class State(StrEnum):
    LOADING = "LOADING"
    READY = "READY"
    FAILED = "FAILED"
    UNLOADING = "UNLOADING"
    NOT_SERVED = "NOT_SERVED"

    @property
    def shown(self) -> str:
        """The state as the repository index shows it (Triton's: a failed version is
        UNAVAILABLE, with its reason)."""
        return UNAVAILABLE if self in (State.FAILED, State.NOT_SERVED) else self.value


@dataclass(frozen=True)
class Failure:
    stamp: Stamp
    reason: str


@dataclass
class VersionRecord:
    version: int
    state: State = State.NOT_SERVED
    reason: str = ""
    serving: ServedVersion | None = None  # the copy handed out; READY only
    stamp: Stamp = ()  # the files ``serving`` was loaded from
    failure: Failure | None = None  # the files that last failed to load, and why
    on_disk: bool = True
    draining: int = 0  # retired copies still finishing their queued requests

    def begin_load(self) -> None:
        """A load starts; a served copy keeps serving until the new one replaces it."""
        if self.serving is None:
            self.state, self.reason = State.LOADING, ""

    def serve(self, copy: ServedVersion, stamp: Stamp) -> None:
        self.serving, self.stamp, self.failure = copy, stamp, None
        self.state, self.reason = State.READY, ""

    def fail(self, stamp: Stamp, reason: str) -> None:
        self.failure = Failure(stamp, reason)
        if self.serving is not None:  # changed on disk, and the change does not load
            self.reason = f"serving the copy loaded before; reloading failed: {reason}"
        else:
            self.state, self.reason = State.FAILED, reason

    def forget_failure(self) -> None:
        """Try the version again even if its files are unchanged (gone from disk, explicit load)."""
        self.failure = None
        if self.serving is not None:
            self.reason = ""

    def retire(self, copy: ServedVersion) -> None:
        """``copy`` stops being handed out and drains; the version is unloading unless a newer
        copy of it already serves (reloaded in place)."""
        self.draining += 1
        if copy is self.serving:
            self.serving = None
            self.state, self.reason = State.UNLOADING, ""


@dataclass
class ModelRecord:
    """One model directory: its config and its versions' records."""

    name: str
    path: Path
    versions: dict[int, VersionRecord] = field(default_factory=dict)
    config_stamp: FileStamp | None = UNREAD
    config: EffectiveConfig | None = None
    config_error: str = ""
    unloaded: bool = False  # explicitly; polling leaves it unloaded until an explicit load
    latest: ServedVersion | None = None

    def track(self, on_disk: Iterable[int]) -> None:
        """Record which version directories are on disk now."""
        present = set(on_disk)
        for version in present:
            self.versions.setdefault(version, VersionRecord(version))
        for record in self.versions.values():
            record.on_disk = record.version in present
            if not record.on_disk:
                record.forget_failure()  # gone from the repository: a new one is a new attempt

    def on_disk(self) -> list[int]:
        return [v for v, record in self.versions.items() if record.on_disk]

    def served(self) -> dict[int, ServedVersion]:
        return {
            version: record.serving
            for version, record in sorted(self.versions.items())
            if record.serving is not None
        }

    def settle(self) -> None:
        """Give every version at rest its state and reason, forget those gone from disk, and
        point ``latest`` at the highest served copy. Called when no load is in progress: a
        version still LOADING then was abandoned."""
        for version, record in list(self.versions.items()):
            if record.serving is not None:
                continue
            if record.draining:
                record.state, record.reason = State.UNLOADING, ""
            else:
                self._rest(version, record)
        served = self.served()
        self.latest = served[max(served)] if served else None

    def drained(self, record: VersionRecord) -> None:
        """A retired copy of ``record`` has finished; the version rests once the last one has."""
        record.draining -= 1
        if record.state is State.UNLOADING and not record.draining:
            self._rest(record.version, record)

    def _rest(self, version: int, record: VersionRecord) -> None:
        if not record.on_disk:
            if self.versions.get(version) is record:
                del self.versions[version]
        elif self.unloaded:
            record.state, record.reason = State.NOT_SERVED, "unloaded"
        elif record.failure is not None:
            record.state, record.reason = State.FAILED, record.failure.reason
        else:
            record.state, record.reason = State.NOT_SERVED, self.config_error or POLICY_REASON

    def why_not_ready(self) -> str:
        """Why the model has no version ready, as a suffix of an error message for the admin
        token's caller (an explicit load); callers of the model are told only "not ready"."""
        if self.unloaded:
            return ": unloaded"
        if self.config_error:
            return f": {self.config_error}"
        for _, record in sorted(self.versions.items(), reverse=True):
            if record.failure is not None:
                return f": {record.failure.reason}"
        return ""


@dataclass
class ServingStatus:
    """Whether the server hands out versions: started, and not yet stopping."""

    provider: str = ""
    started: bool = False
    stopping: bool = False

    def refuse_if_stopping(self) -> None:
        """Shutdown is reported one way, to lookups and repository calls alike."""
        if self.stopping:
            raise ShuttingDown("the server is shutting down; send the request elsewhere")
