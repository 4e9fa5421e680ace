"""Where things are in a model repository, and the rules for their names.

    <repository>/<model-name>/config.json          optional serving settings
    <repository>/<model-name>/<version>/            a positive integer; the highest is "latest"
        metadata.json                               the manifest (modelrepo.manifest)
        model.onnx                                  the graph
        users.txt, items.txt, ...                   the vocabularies the signature names
        history.npz                                 optional: the users' training histories
        retrieval.npz                               optional: user and item retrieval vectors

A model name matches ``[a-z0-9][a-z0-9_.-]{0,63}``; a version directory is named by a positive
integer written without sign or leading zero (``"01"`` names nothing). Hidden entries (a
publisher's staging directory, its lock file) and anything else are skipped by every reader.
Row 0 of every vocabulary-bound table is the unknown row.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

MANIFEST_FILE = "metadata.json"
MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.json"
USERS_FILE = "users.txt"
ITEMS_FILE = "items.txt"
HISTORY_FILE = "history.npz"  # modelrepo.history; optional
RETRIEVAL_FILE = "retrieval.npz"  # modelrepo.retrieval; optional

UNKNOWN_ROW = 0
"""Row 0 of every table bound to a vocabulary serves every id the vocabulary does not hold."""

MODEL_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
MODEL_NAME_RULE = "lower-case letters, digits, '_', '.', '-'; at most 64 characters"
_MAX_VERSION_DIGITS = 18


def is_model_name(name: str) -> bool:
    return MODEL_NAME_PATTERN.fullmatch(name) is not None


def parse_version(name: str) -> int | None:
    """The version a directory name stands for, or None (``"01"``, ``"+1"``, ``"0"`` are not)."""
    if len(name) > _MAX_VERSION_DIGITS or not name.isascii() or not name.isdigit():
        return None
    if name.startswith("0"):
        return None
    return int(name)


def list_versions(model_dir: Path) -> tuple[int, ...]:
    """The version directories of one model, ascending; raises OSError if it cannot be listed."""
    versions: list[int] = []
    with os.scandir(model_dir) as entries:
        for entry in entries:
            version = parse_version(entry.name)
            if version is not None and entry.is_dir():
                versions.append(version)
    return tuple(sorted(versions))


@dataclass(frozen=True)
class ModelDir:
    name: str
    path: Path
    versions: tuple[int, ...]  # ascending


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


# (name, size, mtime_ns, inode) per file of a version directory.
FileStamp = tuple[str, int, int, int]


def stamp_version(version_dir: Path) -> tuple[FileStamp, ...]:
    """What changes when any file of the version is written, replaced, added or removed.

    An unreadable directory stamps as empty, which differs from any version that has files.
    """
    stamps: list[FileStamp] = []
    try:
        with os.scandir(version_dir) as entries:
            for entry in entries:
                try:
                    st = entry.stat()
                except OSError:
                    continue
                stamps.append((entry.name, st.st_size, st.st_mtime_ns, st.st_ino))
    except OSError:
        return ()
    return tuple(sorted(stamps))


def stamp_file(path: Path) -> FileStamp | None:
    """The stamp of one file (a model's ``config.json``); None where it is missing."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (path.name, st.st_size, st.st_mtime_ns, st.st_ino)
