"""Scanning the model repository (design.md §3): model and version directories, file stamps.

Model names match ``[a-z0-9][a-z0-9_.-]{0,63}``; versions are directories named by a positive
integer. Hidden entries (a publisher's staging directory, a lock file) and anything else are
skipped. A stamp of a version's files (size, mtime, inode) tells the server when a version was
replaced in place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from training.publish import MODEL_NAME_PATTERN

MODEL_FILE = "model.onnx"
METADATA_FILE = "metadata.json"
USERS_FILE = "users.txt"
ITEMS_FILE = "items.txt"
VERSION_FILES = (MODEL_FILE, METADATA_FILE, USERS_FILE, ITEMS_FILE)

# (size, mtime_ns, inode) per file; None where the file is missing.
FileStamp = tuple[int, int, int] | None


@dataclass(frozen=True)
class ModelDir:
    name: str
    path: Path
    versions: tuple[int, ...]  # ascending


def is_model_name(name: str) -> bool:
    return MODEL_NAME_PATTERN.fullmatch(name) is not None


def parse_version(name: str) -> int | None:
    """The version number a directory name stands for, or None (``"01"`` and ``"+1"`` are not)."""
    if not name.isascii() or not name.isdigit() or name.startswith("0"):
        return None
    return int(name)


def list_versions(model_dir: Path) -> tuple[int, ...]:
    versions: list[int] = []
    with os.scandir(model_dir) as entries:
        for entry in entries:
            version = parse_version(entry.name)
            if version is not None and entry.is_dir():
                versions.append(version)
    return tuple(sorted(versions))


def scan(root: Path) -> dict[str, ModelDir]:
    """Model directories under ``root`` by name; raises OSError when ``root`` cannot be read."""
    models: dict[str, ModelDir] = {}
    with os.scandir(root) as entries:
        for entry in entries:
            if not is_model_name(entry.name) or not entry.is_dir():
                continue
            path = Path(entry.path)
            try:
                versions = list_versions(path)
            except OSError:
                continue  # removed or unreadable between the two listings
            models[entry.name] = ModelDir(entry.name, path, versions)
    return models


def stamp_file(path: Path) -> FileStamp:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def stamp_version(version_dir: Path) -> tuple[FileStamp, ...]:
    """What changes when any of the version's files is rewritten, replaced or removed."""
    return tuple(stamp_file(version_dir / name) for name in VERSION_FILES)
