"""Thread count of NumPy's OpenBLAS, set at run time.

The models' matrices are small (a batch of 1024 rows by at most a few hundred columns), so extra
BLAS threads gain little, and on a machine whose cores are busy with other work they wait on each
other and slow training by an order of magnitude. Training therefore runs with one thread unless
told otherwise. Where the BLAS is not an OpenBLAS found in the process (or not on Linux), the
limit is a no-op.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

_PREFIXES = ("scipy_openblas", "openblas")
_SUFFIXES = ("64_", "_64_", "")


@cache
def _openblas() -> tuple[Callable[[int], None], Callable[[], int]] | None:
    """(set, get) of the OpenBLAS loaded by NumPy, or None."""
    import numpy  # noqa: F401  (loads the BLAS this looks for)

    maps = Path("/proc/self/maps")
    try:
        paths = {line.split()[-1] for line in maps.read_text().splitlines() if "openblas" in line}
    except OSError:
        return None
    for path in sorted(p for p in paths if ".so" in p):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in _PREFIXES:
            for suffix in _SUFFIXES:
                setter = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                getter = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                if setter is not None and getter is not None:
                    setter.argtypes, setter.restype = [ctypes.c_int], None
                    getter.argtypes, getter.restype = [], ctypes.c_int
                    return setter, getter
    return None


def blas_threads() -> int | None:
    """The current OpenBLAS thread count, or None where it cannot be read."""
    functions = _openblas()
    return functions[1]() if functions else None


@contextlib.contextmanager
def limit_blas_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` OpenBLAS threads (None: leave as is), then restore."""
    functions = _openblas() if threads is not None else None
    if functions is None or threads is None:
        yield
        return
    set_threads, get_threads = functions
    before = get_threads()
    set_threads(max(1, threads))
    try:
        yield
    finally:
        set_threads(before)
