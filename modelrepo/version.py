"""Reading and writing a version directory: the only code that touches one.

:func:`write_version` stages every file in a hidden directory inside ``<repository>/<model>/`` and
renames it into place under the next integer version. ``rename(2)`` of a directory onto an existing,
non-empty one fails, so two publishers can never claim the same number: the loser takes the next.
A lock file serialises publishers on one host; the rename rule keeps shared volumes safe.

:func:`read_version` reads the manifest, checks every file against its sha256, parses the
vocabularies the signature names and checks their sizes: a version that breaks the contract in any
way raises :class:`modelrepo.errors.VersionError` with a reason meant for an operator.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from modelrepo.errors import VersionError
from modelrepo.history import History, parse_history
from modelrepo.layout import (
    HISTORY_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    MODEL_NAME_PATTERN,
    MODEL_NAME_RULE,
    RETRIEVAL_FILE,
    is_model_name,
    list_versions,
)
from modelrepo.manifest import Manifest
from modelrepo.retrieval import RetrievalVectors, parse_retrieval
from modelrepo.signature import InputSpec
from modelrepo.tables import Table, parse_table, table_bytes
from modelrepo.vocabulary import Vocabulary

_MAX_ATTEMPTS = 100
_LOCK_FILE = ".publish.lock"


@dataclass(frozen=True)
class StoredVersion:
    """A version read from disk and checked against its manifest."""

    path: Path
    manifest: Manifest
    model: bytes
    vocabularies: Mapping[str, Vocabulary]  # by file name
    tables: Mapping[str, Mapping[str, np.ndarray]] = field(default_factory=dict)
    """Feature tables by file name, then by input name (see :mod:`modelrepo.tables`)."""
    history: History | None = None
    """The users' training histories (:mod:`modelrepo.history`); None where none is published."""
    retrieval: RetrievalVectors | None = None
    """The retrieval vectors (:mod:`modelrepo.retrieval`); None where none is published."""

    def vocabulary(self, spec: InputSpec) -> Vocabulary:
        """The vocabulary an id (or multi-hot) input is bound to."""
        if spec.vocabulary is None:
            raise KeyError(f"input '{spec.name}' has no vocabulary")
        return self.vocabularies[spec.vocabulary]


@dataclass(frozen=True)
class PublishedVersion:
    model_name: str
    version: int
    path: Path
    manifest: Manifest


def _read_bytes(path: Path, name: str) -> bytes:
    try:
        return (path / name).read_bytes()
    except FileNotFoundError:
        raise VersionError(f"{name} is missing") from None
    except OSError as exc:
        raise VersionError(f"cannot read {name}: {exc}") from None


def read_manifest(path: Path) -> Manifest:
    """The manifest of the version in ``path``."""
    return Manifest.from_json(_read_bytes(path, MANIFEST_FILE))


def _read_file(path: Path, name: str, manifest: Manifest) -> bytes:
    """A file of the version, checked against the sha256 the manifest holds for it."""
    data = _read_bytes(path, name)
    expected = manifest.files.get(name)
    if expected:
        digest = hashlib.sha256(data).hexdigest()
        if digest != expected.lower():
            raise VersionError(
                f"{name} sha256 {digest[:12]}… does not match {MANIFEST_FILE} "
                f"({expected[:12]}…): truncated, or replaced without its manifest"
            )
    return data


def read_version(path: Path) -> StoredVersion:
    """Read and check the version in ``path``; raises :class:`VersionError` naming the fault."""
    manifest = read_manifest(path)
    vocabularies: dict[str, Vocabulary] = {}
    for spec in manifest.signature.inputs:
        if spec.vocabulary is None:
            continue
        vocabulary = vocabularies.get(spec.vocabulary)
        if vocabulary is None:
            data = _read_file(path, spec.vocabulary, manifest)
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise VersionError(f"cannot read {spec.vocabulary}: {exc}") from None
            vocabulary = Vocabulary.parse(text, spec.vocabulary)
            vocabularies[spec.vocabulary] = vocabulary
        if vocabulary.n_rows != spec.n_rows:
            raise VersionError(
                f"{spec.vocabulary} has {len(vocabulary)} ids ({vocabulary.n_rows} rows with the "
                f"unknown row) but input '{spec.name}' of the signature has {spec.n_rows} rows"
            )
    tables = {
        name: parse_table(_read_file(path, name, manifest), name, manifest.signature)
        for name in manifest.signature.tables()
    }
    history = None
    if HISTORY_FILE in manifest.files:  # optional: imported and older versions have none
        history = parse_history(_read_file(path, HISTORY_FILE, manifest), manifest.signature)
    retrieval = None
    if RETRIEVAL_FILE in manifest.files:  # optional: only a run that trains a retrieval model
        retrieval = parse_retrieval(_read_file(path, RETRIEVAL_FILE, manifest), manifest.signature)
    model = _read_file(path, MODEL_FILE, manifest)
    return StoredVersion(path, manifest, model, vocabularies, tables, history, retrieval)


def write_version(
    repository: Path,
    model_name: str,
    manifest: Manifest,
    model: bytes,
    vocabularies: Mapping[str, Vocabulary],
    extra_files: Mapping[str, bytes] | None = None,
    tables: Mapping[str, Table] | None = None,
    retrieval: RetrievalVectors | None = None,
) -> PublishedVersion:
    """Publish a new version of ``model_name`` atomically; returns its number and path.

    ``vocabularies`` holds a vocabulary for every file the signature names, ``tables`` every
    feature table it names (checked against it); ``retrieval`` the retrieval vectors (checked
    against it); ``extra_files`` (training history, plots) travel with the version. The manifest
    is written with the sha256 of every other file.
    """
    if not is_model_name(model_name):
        raise ValueError(
            f"model name {model_name!r} must match {MODEL_NAME_PATTERN.pattern} ({MODEL_NAME_RULE})"
        )
    named = {spec.vocabulary for spec in manifest.signature.inputs if spec.vocabulary}
    if named != set(vocabularies):
        raise ValueError(
            f"the signature names the vocabularies {sorted(named)}, given {sorted(vocabularies)}"
        )
    files: dict[str, bytes] = {MODEL_FILE: model}
    for name, vocabulary in vocabularies.items():
        files[name] = vocabulary.to_text().encode("utf-8")
    files.update(_table_files(manifest, tables or {}))
    if retrieval is not None:
        files[RETRIEVAL_FILE] = retrieval.to_bytes()
    for name, data in (extra_files or {}).items():
        if name in files or name == MANIFEST_FILE or "/" in name or name.startswith("."):
            raise ValueError(f"extra file name {name!r} is taken or not a plain file name")
        files[name] = data
    if HISTORY_FILE in files:  # checked as a reader will: a server would refuse the version
        try:
            parse_history(files[HISTORY_FILE], manifest.signature)
        except VersionError as exc:
            raise ValueError(str(exc)) from None
    if RETRIEVAL_FILE in files:  # checked as a reader will, like the history
        try:
            parse_retrieval(files[RETRIEVAL_FILE], manifest.signature)
        except VersionError as exc:
            raise ValueError(str(exc)) from None
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())}
    manifest = manifest.model_copy(update={"files": digests})
    files[MANIFEST_FILE] = manifest.to_json().encode("utf-8")

    model_dir = repository / model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=model_dir))
    try:
        for name, data in files.items():
            (staging / name).write_bytes(data)
        staging.chmod(0o755)  # mkdtemp creates 0700; servers may run as another user
        _fsync_tree(staging)
        with _publish_lock(model_dir):
            version = _claim(staging, model_dir)
        return PublishedVersion(model_name, version, model_dir / str(version), manifest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _table_files(manifest: Manifest, tables: Mapping[str, Table]) -> dict[str, bytes]:
    """The table files the signature names, serialised; each checked as a reader will."""
    named = set(manifest.signature.tables())
    if named != set(tables):
        raise ValueError(f"the signature names the tables {sorted(named)}, given {sorted(tables)}")
    files = {name: table_bytes(arrays) for name, arrays in tables.items()}
    for name, data in files.items():
        try:
            parse_table(data, name, manifest.signature)
        except VersionError as exc:
            raise ValueError(str(exc)) from None
    return files


def _claim(staging: Path, model_dir: Path) -> int:
    """Rename ``staging`` to the first free version after the highest; returns its number."""
    version = max(list_versions(model_dir), default=0) + 1
    for _ in range(_MAX_ATTEMPTS):
        target = model_dir / str(version)
        try:
            if not target.exists():
                os.rename(staging, target)
                _fsync_dir(model_dir)
                return version
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
        version += 1
    raise RuntimeError(f"could not claim a version number under {model_dir}")


@contextlib.contextmanager
def _publish_lock(model_dir: Path) -> Iterator[None]:
    with open(model_dir / _LOCK_FILE, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fsync_tree(directory: Path) -> None:
    for path in directory.iterdir():
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
