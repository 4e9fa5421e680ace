"""Server settings: defaults chosen from the machine."""

from __future__ import annotations

import os

import pytest

from service import settings as settings_module
from service.settings import BatchingSettings, Settings, auto_intra_op_threads, available_cores


@pytest.mark.parametrize(
    ("cores", "workers", "threads"),
    [(1, 1, 1), (2, 1, 1), (2, 2, 1), (4, 1, 3), (4, 2, 1), (16, 4, 3), (16, 1, 15), (3, 8, 1)],
)
def test_auto_threads_leave_each_worker_a_core_for_its_event_loop(
    cores: int, workers: int, threads: int
) -> None:
    assert auto_intra_op_threads(workers, cores) == threads


def test_zero_threads_resolve_to_the_auto_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings_module, "available_cores", lambda: 8)
    assert Settings().ort_intra_op_threads == 7
    assert Settings(workers=2).ort_intra_op_threads == 3
    assert Settings(workers=2, ort_intra_op_threads=5).ort_intra_op_threads == 5
    monkeypatch.setenv("RECSERVE_ORT_INTRA_OP_THREADS", "2")
    assert Settings().ort_intra_op_threads == 2


def test_available_cores_is_within_the_affinity_mask() -> None:
    assert 1 <= available_cores() <= len(os.sched_getaffinity(0))


def test_the_queue_holds_64_concurrent_whole_catalog_requests() -> None:
    # 64 requests over a 3,706-item catalog (MovieLens-1M) fit without a 503.
    assert BatchingSettings().queue_capacity_rows >= 64 * 3706
