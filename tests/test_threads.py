"""Run-time limit of the BLAS threads NumPy uses."""

from __future__ import annotations

import pytest

from training.threads import blas_threads, limit_blas_threads


@pytest.fixture
def before() -> int:
    threads = blas_threads()
    if threads is None:
        pytest.skip("no BLAS found in this process")
    return threads


def test_limit_sets_and_restores_the_thread_count(before: int) -> None:
    with limit_blas_threads(1):
        assert blas_threads() == 1
    assert blas_threads() == before
    with limit_blas_threads(None):
        assert blas_threads() == before


def test_a_limit_below_one_means_one_and_nested_limits_unwind(before: int) -> None:
    with limit_blas_threads(0):
        assert blas_threads() == 1
        with limit_blas_threads(2):
            assert blas_threads() == 2
        assert blas_threads() == 1
    assert blas_threads() == before


def test_the_wheel_bundled_blas_is_found() -> None:
    # NumPy's wheels ship OpenBLAS; the ctypes lookup this replaced also found it on Linux.
    assert blas_threads() is not None
