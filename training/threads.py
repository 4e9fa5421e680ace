"""Thread count of the BLAS NumPy uses, set at run time through ``threadpoolctl``.

The models' matrices are small (a batch of 1024 rows by at most a few hundred columns), so extra
BLAS threads gain little, and on a machine whose cores are busy with other work they wait on each
other and slow training by an order of magnitude. Training therefore runs with one thread unless
told otherwise.

``threadpoolctl`` finds the BLAS libraries loaded in the process (OpenBLAS under any of its
symbol prefixes, MKL, BLIS, FlexiBLAS) on Linux, macOS and Windows, where the ctypes lookup it
replaces knew only OpenBLAS on Linux. Entering the limit costs about 0.25 ms, once per training
run. Where no BLAS is found the limit is a no-op.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy  # noqa: F401  (loads the BLAS the limits apply to)
from threadpoolctl import ThreadpoolController, threadpool_limits

_BLAS = "blas"


def blas_threads() -> int | None:
    """The most threads any loaded BLAS uses now, or None where no BLAS is found."""
    counts = [int(i["num_threads"]) for i in ThreadpoolController().select(user_api=_BLAS).info()]
    return max(counts) if counts else None


@contextlib.contextmanager
def limit_blas_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` BLAS threads (None: leave as is), then restore."""
    if threads is None:
        yield
        return
    with threadpool_limits(limits=max(1, threads), user_api=_BLAS):
        yield
