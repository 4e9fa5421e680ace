"""The batching policy on its own: when a batch starts and how many rows it takes, from plain
numbers, with no event loop; and the queue cutting batches by it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from service.batching.policy import BatchPolicy
from service.batching.queue import Request, RequestQueue
from service.settings import BatchingSettings

POLICY = BatchPolicy(max_rows=8, max_delay_s=0.002)


def wait_s(policy: BatchPolicy = POLICY, **given: Any) -> float:
    """The policy's wait for 3 rows queued, the oldest 0.5 ms ago, one runner busy; or ``given``."""
    state = dict(queued_rows=3, oldest_enqueued=10.0, now=10.0005, busy_runners=1, closing=False)
    return policy.wait_s(**{**state, **given})


def test_settings_give_rows_and_the_delay_in_seconds() -> None:
    policy = BatchPolicy.from_settings(BatchingSettings(max_batch_rows=64, max_queue_delay_us=250))
    assert policy == BatchPolicy(max_rows=64, max_delay_s=0.00025)


def test_a_batch_must_be_able_to_take_a_row() -> None:
    with pytest.raises(ValueError, match="max_rows"):
        BatchPolicy(max_rows=0)


def test_a_free_runner_beside_a_busy_one_waits_out_the_oldest_requests_delay() -> None:
    assert wait_s() == pytest.approx(0.0015)
    assert wait_s(now=10.002) == pytest.approx(0.0)
    assert wait_s(now=10.01) < 0  # overdue: start now


@pytest.mark.parametrize(
    "given",
    [
        {"busy_runners": 0},  # every runner idle: waiting would only add latency
        {"closing": True},  # draining: as fast as it goes
        {"queued_rows": 8},  # a full batch is queued
        {"queued_rows": 20},
    ],
    ids=["idle", "closing", "full", "over-full"],
)
def test_a_batch_starts_at_once(given: dict[str, Any]) -> None:
    assert wait_s(**given) <= 0


def test_no_delay_means_no_wait() -> None:
    assert wait_s(BatchPolicy(max_rows=8)) <= 0


@pytest.mark.parametrize(
    ("before", "after", "wakes"),
    [(0, 1, True), (0, 100, True), (3, 7, False), (3, 8, True), (7, 20, True)],
)
def test_an_arrival_wakes_the_runners_into_an_empty_queue_or_a_full_batch(
    before: int, after: int, wakes: bool
) -> None:
    assert POLICY.wakes(before, after) is wakes


@pytest.mark.parametrize(
    ("left", "batched", "taken"),
    [(3, 0, 3), (8, 0, 8), (20, 0, 8), (5, 5, 3), (3, 5, 3), (1, 8, 0), (4, 9, 0)],
)
def test_a_batch_takes_whole_requests_while_they_fit_then_a_slice(
    left: int, batched: int, taken: int
) -> None:
    assert POLICY.take(left, batched) == taken


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def queue_of(
    loop: asyncio.AbstractEventLoop, sizes: list[int], arrivals: list[float] | None = None
) -> tuple[RequestQueue, list[Request]]:
    """A queue of requests of ``sizes`` rows arriving at ``arrivals``, each with 1 s to wait."""
    times = arrivals or [0.0] * len(sizes)
    requests = [
        Request({"x": np.zeros(n)}, n, loop.create_future(), t, t + 1.0)
        for n, t in zip(sizes, times, strict=True)
    ]
    queue = RequestQueue()
    for request in requests:
        queue.push(request)
    return queue, requests


@pytest.mark.parametrize(
    ("sizes", "max_rows", "batches"),
    [
        ([3, 2, 6, 1], 8, [[(0, 0, 3), (1, 0, 2), (2, 0, 3)], [(2, 3, 6), (3, 0, 1)]]),
        ([20], 8, [[(0, 0, 8)], [(0, 8, 16)], [(0, 16, 20)]]),
        ([1, 1, 1], 2, [[(0, 0, 1), (1, 0, 1)], [(2, 0, 1)]]),
    ],
    ids=["split-at-the-edge", "one-large-request", "whole-requests"],
)
def test_the_queue_cuts_batches_in_order_splitting_a_request_that_does_not_fit(
    loop: asyncio.AbstractEventLoop,
    sizes: list[int],
    max_rows: int,
    batches: list[list[tuple[int, int, int]]],
) -> None:
    queue, requests = queue_of(loop, sizes)
    policy = BatchPolicy(max_rows)
    cut = []
    while queue.rows:
        parts = queue.take(policy)
        cut.append([(requests.index(r), start, stop) for r, start, stop in parts])
    assert cut == batches
    assert queue.head() is None


def test_dropped_rows_leave_the_count_and_are_never_cut(loop: asyncio.AbstractEventLoop) -> None:
    queue, (kept, dropped) = queue_of(loop, [2, 5])
    assert queue.drop(dropped) == 5
    assert queue.drop(dropped) == 0
    assert queue.rows == 2
    assert queue.take(BatchPolicy(8)) == [(kept, 0, 2)]
    assert queue.head() is None


def test_overdue_requests_are_the_wholly_queued_ones_past_their_deadline(
    loop: asyncio.AbstractEventLoop,
) -> None:
    queue, (_, late, fresh) = queue_of(loop, [4, 4, 4], arrivals=[0.0, 0.1, 5.0])
    queue.take(BatchPolicy(2))  # half of the first request is in a batch: it is never overdue
    assert queue.overdue(3.0) == ([late], 6.0)
    assert queue.overdue(0.5) == ([], 1.0)
    assert queue.overdue(9.0) == ([late, fresh], None)
