"""Atomic publication of a new model version into the repository (design.md §3).

The version's files are written into a hidden staging directory inside ``<repository>/<model>/`` and
renamed into place under the next integer version. ``rename(2)`` of a directory onto an existing,
non-empty directory fails, so two publishers can never claim the same number: the loser retries with
the next one. A lock file serialises publishers on one host; the rename rule keeps shared volumes
safe.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

MODEL_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_MAX_ATTEMPTS = 100


@dataclass(frozen=True)
class PublishedVersion:
    model_name: str
    version: int
    path: Path


def existing_versions(model_dir: Path) -> list[int]:
    """Integer versions present in ``model_dir``, ascending; anything else is ignored."""
    if not model_dir.is_dir():
        return []
    return sorted(
        int(entry.name)
        for entry in model_dir.iterdir()
        if entry.name.isdigit() and int(entry.name) > 0 and entry.is_dir()
    )


@contextlib.contextmanager
def _publish_lock(model_dir: Path) -> Iterator[None]:
    with open(model_dir / ".publish.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def publish_version(
    repository: Path, model_name: str, write: Callable[[Path], None]
) -> PublishedVersion:
    """Stage a version with ``write(staging_dir)`` and rename it into the next integer version."""
    if not MODEL_NAME_PATTERN.fullmatch(model_name):
        raise ValueError(
            f"model name {model_name!r} must match {MODEL_NAME_PATTERN.pattern} "
            "(lower-case letters, digits, '_', '.', '-'; at most 64 characters)"
        )
    model_dir = repository / model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=model_dir))
    try:
        write(staging)
        staging.chmod(0o755)  # mkdtemp creates 0700; servers may run as another user
        _fsync_tree(staging)
        with _publish_lock(model_dir):
            for _ in range(_MAX_ATTEMPTS):
                version = max(existing_versions(model_dir), default=0) + 1
                target = model_dir / str(version)
                try:
                    if target.exists():
                        continue
                    os.rename(staging, target)
                except OSError as exc:
                    if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                        continue
                    raise
                _fsync_dir(model_dir)
                return PublishedVersion(model_name, version, target)
        raise RuntimeError(f"could not claim a version number under {model_dir}")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _fsync_tree(directory: Path) -> None:
    for path in directory.rglob("*"):
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
