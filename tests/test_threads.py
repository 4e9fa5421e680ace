"""Run-time limit of NumPy's OpenBLAS threads."""

from __future__ import annotations

import pytest

from training.threads import blas_threads, limit_blas_threads


def test_limit_sets_and_restores_the_thread_count() -> None:
    before = blas_threads()
    if before is None:
        pytest.skip("NumPy's BLAS is not an OpenBLAS this process can reach")
    with limit_blas_threads(1):
        assert blas_threads() == 1
    assert blas_threads() == before
    with limit_blas_threads(None):
        assert blas_threads() == before
