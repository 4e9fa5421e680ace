"""Whether a model repository can be served from or published into, said in one line.

A repository given by mistake (a path that does not exist, a file, a directory without the
permissions) is cheap to find before starting work and costly after: a server that reports ready
with no models, a training run whose hours are lost when it cannot publish. The server, the
training command and ``recserve models`` ask here first and stop with the line.
A relative path is shown with the absolute one it stands for: the directory a command was run from
is the usual surprise.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def shown(root: Path) -> str:
    """``root`` as given, followed by its absolute path when it is relative."""
    return str(root) if root.is_absolute() else f"{root} ({root.absolute()})"


def read_problem(root: Path) -> str | None:
    """Why the repository at ``root`` cannot be listed, or None when it can."""
    try:
        with os.scandir(root):
            pass
    except FileNotFoundError:
        return f"model repository {shown(root)} does not exist"
    except NotADirectoryError:
        return f"model repository {shown(root)} is not a directory"
    except OSError as exc:
        return f"model repository {shown(root)} cannot be read: {exc.strerror or exc}"
    return None


def publish_problem(root: Path) -> str | None:
    """Why versions cannot be published into ``root``, or None once it is a directory this process
    has written into. It is created when missing (the first publication would create it anyway),
    and written to by creating and removing a hidden directory, which every reader skips: asking
    the filesystem is the only answer that holds for every user, mount and permission model."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        return f"model repository {shown(root)} is not a directory"
    except OSError as exc:
        return f"model repository {shown(root)} cannot be created: {exc.strerror or exc}"
    try:
        probe = tempfile.mkdtemp(prefix=".write-check-", dir=root)
        os.rmdir(probe)
    except OSError as exc:
        return f"model repository {shown(root)} is not writable: {exc.strerror or exc}"
    return None
