"""The ``.npz`` files of a version (feature tables, histories, retrieval vectors): written
uncompressed (loading is a copy, not a decompression) and read back without pickles, a file that
is not an archive of arrays refused as a :class:`VersionError` naming it."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping

import numpy as np

from modelrepo.errors import VersionError


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """The ``.npz`` bytes of ``arrays`` (each made contiguous; a 0-d array stays 0-d)."""
    buffer = io.BytesIO()
    contiguous = {name: np.asarray(value, order="C") for name, value in arrays.items()}
    np.savez(buffer, allow_pickle=False, **contiguous)
    return buffer.getvalue()


def read_npz(data: bytes, file: str) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` archive ``data`` (version file ``file``), by name."""
    try:
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a bare .npy array
            raise VersionError(f"cannot read {file}: not an .npz archive")
        with loaded as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise VersionError(f"cannot read {file}: {exc}") from None
