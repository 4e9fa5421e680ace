"""The dynamic batcher with a fake runner: merging, splitting, bounds, timeouts, failures, drain,
and what it tells its observers."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterable
from typing import Any

import numpy as np
import pytest

from service.batching.batcher import Batcher
from service.batching.observer import BatchObserver
from service.errors import InferenceFailed, InvalidInput, Overloaded, QueueTimeout, ShuttingDown
from service.metrics.batch import BatchMetrics
from service.metrics.families import Metrics
from service.metrics.stats import VersionStats
from service.settings import BatchingSettings

pytestmark = pytest.mark.anyio

Tensors = dict[str, np.ndarray]


class FakeRunner:
    """Doubles ``x``; records every batch; can hold runs until released and fail on a marker."""

    def __init__(self, *, hold: bool = False, poison: float | None = None) -> None:
        self.batches: list[np.ndarray] = []
        self.entered = threading.Condition()
        self.released = threading.Event()
        if not hold:
            self.released.set()
        self.poison = poison

    def __call__(self, feeds: Tensors) -> Tensors:
        x = feeds["x"]
        with self.entered:
            self.batches.append(x.copy())
            self.entered.notify_all()
        assert self.released.wait(10)
        if self.poison is not None and np.any(x == self.poison):
            raise RuntimeError(f"poison row {self.poison}")
        return {"y": x * 2}

    @property
    def rows_computed(self) -> list[float]:
        return np.concatenate(self.batches).tolist() if self.batches else []

    async def wait_entered(self, runs: int = 1) -> None:
        """Wait until ``runs`` batches have reached the runner."""

        def wait() -> bool:
            with self.entered:
                return self.entered.wait_for(lambda: len(self.batches) >= runs, 10)

        assert await asyncio.to_thread(wait)


class Recorder:
    """An observer that records every event it is told, with its arguments."""

    def __init__(self) -> None:
        self.events: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, event: str) -> Any:
        return lambda *args: self.events.append((event, args))

    def counts(self) -> list[tuple[str, tuple[Any, ...]]]:
        """The events with their sizes but not their durations (which vary); a failure's error
        by its type."""
        summary = []
        for event, args in self.events:
            if event == "failed":
                args = (type(args[1]).__name__,)
            summary.append((event, tuple(a for a in args if not isinstance(a, float))))
        return summary


def make(runner: Any, *observers: BatchObserver, **overrides: Any) -> Batcher:
    return Batcher(runner, BatchingSettings(**overrides), observers=observers, name="m-1")


@contextlib.asynccontextmanager
async def serving(
    runner: Any, *observers: BatchObserver, **overrides: Any
) -> AsyncIterator[Batcher]:
    """A batcher for the block, drained after it."""
    batcher = make(runner, *observers, **overrides)
    try:
        yield batcher
    finally:
        await batcher.drain(1)


def x(*values: float) -> Tensors:
    return {"x": np.array(values, dtype=np.float64)}


def outputs(task: asyncio.Task[Tensors]) -> list[float]:
    return task.result()["y"].tolist()


async def settle() -> None:
    """Let every ready callback run (submits reach the queue, replies reach their waiters)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def occupy(batcher: Batcher, runner: FakeRunner, *values: float) -> asyncio.Task[Tensors]:
    """Submit a request and wait until its batch holds the runner."""
    task = asyncio.create_task(batcher.submit(x(*values)))
    await runner.wait_entered(len(runner.batches) + 1)
    return task


async def submit_all(batcher: Batcher, requests: Iterable[Tensors]) -> list[asyncio.Task[Tensors]]:
    """Submit requests concurrently and let them reach the queue."""
    tasks = [asyncio.create_task(batcher.submit(request)) for request in requests]
    await settle()
    return tasks


async def finish(runner: FakeRunner, *tasks: asyncio.Task[Tensors]) -> None:
    """Release the runner and wait for the tasks, whatever their outcome."""
    runner.released.set()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_concurrent_requests_share_a_batch() -> None:
    runner = FakeRunner(hold=True)
    async with serving(runner) as batcher:
        first = await occupy(batcher, runner, 0)
        rest = await submit_all(batcher, (x(i, 100 + i) for i in range(1, 11)))
        assert batcher.queued_rows == 20
        await finish(runner, first, *rest)
        assert outputs(first) == [0]
        assert [outputs(task) for task in rest] == [[2 * i, 2 * (100 + i)] for i in range(1, 11)]
        assert [len(batch) for batch in runner.batches] == [1, 20]  # 11 requests, 2 runs
        assert batcher.queued_rows == 0


async def test_large_request_is_split_and_reassembled_in_order() -> None:
    runner = FakeRunner(hold=True)
    async with serving(runner, max_batch_rows=16) as batcher:
        small_before = await occupy(batcher, runner, -1, -2, -3)
        big, small_after = await submit_all(
            batcher, [{"x": np.arange(100, dtype=np.float64)}, x(-4)]
        )
        await finish(runner, small_before, big, small_after)
        assert outputs(big) == (np.arange(100) * 2).tolist()
        assert outputs(small_before) == [-2, -4, -6]
        assert outputs(small_after) == [-8]
        assert all(len(batch) <= 16 for batch in runner.batches)
        assert sorted(runner.rows_computed) == sorted([*range(100), -1, -2, -3, -4])


async def test_full_queue_refuses_at_once_without_losing_or_duplicating_replies() -> None:
    runner = FakeRunner(hold=True)
    async with serving(runner, queue_capacity_rows=10) as batcher:
        in_flight = await occupy(batcher, runner, *range(5))
        queued = await submit_all(batcher, (x(10 + i, 20 + i) for i in range(5)))
        assert batcher.queued_rows == 10
        with pytest.raises(Overloaded) as refused:
            await batcher.submit(x(99))
        assert refused.value.headers() == {"Retry-After": "1"}
        await finish(runner, in_flight, *queued)
        assert outputs(in_flight) == [0, 2, 4, 6, 8]
        assert [outputs(task) for task in queued] == [
            [2 * (10 + i), 2 * (20 + i)] for i in range(5)
        ]
        assert sorted(runner.rows_computed) == sorted([*range(5), *range(10, 15), *range(20, 25)])


async def test_request_larger_than_capacity_is_taken_when_the_queue_is_empty() -> None:
    async with serving(FakeRunner(), queue_capacity_rows=4, max_batch_rows=3) as batcher:
        out = await batcher.submit({"x": np.arange(10, dtype=np.float64)})
        assert out["y"].tolist() == (np.arange(10) * 2).tolist()


async def test_request_past_its_timeout_is_refused_and_never_computed() -> None:
    runner = FakeRunner(hold=True)
    stats = VersionStats("m", "1")
    async with serving(runner, stats, request_timeout_s=0.05) as batcher:
        in_flight = await occupy(batcher, runner, 1)
        # The runner is still busy when the timeout passes: the waiter is answered anyway.
        with pytest.raises(QueueTimeout):
            await batcher.submit(x(7, 8))
        assert not in_flight.done()
        assert batcher.queued_rows == 0
        await finish(runner, in_flight)
        assert outputs(in_flight) == [2]
        assert (await batcher.submit(x(3)))["y"].tolist() == [6]
        assert 7 not in runner.rows_computed
        assert stats.fail_count == 1


async def test_failing_request_fails_alone() -> None:
    runner = FakeRunner(hold=True, poison=-1)
    stats = VersionStats("m", "1")
    async with serving(runner, stats) as batcher:
        first = await occupy(batcher, runner, 0)
        values = [(i, 50 + i) for i in range(1, 9)]
        values[5] = (6, -1)
        tasks = await submit_all(batcher, (x(*v) for v in values))
        await finish(runner, first, *tasks)
        assert outputs(first) == [0]
        for v, task in zip(values, tasks, strict=True):
            if -1 in v:
                with pytest.raises(InferenceFailed, match="poison row"):
                    task.result()
            else:
                assert outputs(task) == [2 * v[0], 2 * v[1]]
        # The merged batch failed, then halves were retried until the bad request was alone.
        assert len(runner.batches) > 2
        assert len(runner.batches[1]) == 16
        assert (stats.fail_count, stats.success_count) == (1, 8)


async def test_wrong_number_of_output_rows_fails_the_batch() -> None:
    def runner(feeds: Tensors) -> Tensors:
        return {"y": feeds["x"][:1]}

    async with serving(runner) as batcher:
        with pytest.raises(InferenceFailed, match="rows"):
            await batcher.submit(x(1, 2, 3))


async def test_idle_runner_starts_at_once_despite_a_long_queue_delay() -> None:
    runner = FakeRunner()
    async with serving(runner, max_queue_delay_us=10**9) as batcher:
        out = await asyncio.wait_for(batcher.submit(x(4)), 30)
        assert out["y"].tolist() == [8]
        assert len(runner.batches) == 1


async def test_second_runner_waits_for_a_full_batch_or_an_idle_runner() -> None:
    runner = FakeRunner(hold=True)
    settings = {"max_queue_delay_us": 10**9, "concurrent_runs": 2, "max_batch_rows": 4}
    async with serving(runner, **settings) as batcher:
        first = await occupy(batcher, runner, 1)
        (second,) = await submit_all(batcher, [x(2)])
        assert len(runner.batches) == 1  # the free runner waits: the batch is not full
        third = await occupy(batcher, runner, 3, 4, 5)  # 4 rows queued: a full batch starts
        assert runner.batches[1].tolist() == [2, 3, 4, 5]
        await finish(runner, first, second, third)
        assert [outputs(t) for t in (first, second, third)] == [[2], [4], [6, 8, 10]]


async def test_cancelled_waiter_does_not_break_the_batch() -> None:
    runner = FakeRunner(hold=True)
    async with serving(runner) as batcher:
        in_flight = await occupy(batcher, runner, 1)
        queued = await submit_all(batcher, (x(10 + i) for i in range(3)))
        queued[1].cancel()  # its client went away while it was queued
        in_flight.cancel()  # and this one while its batch was running
        await settle()
        assert batcher.queued_rows == 2
        await finish(runner, *queued)
        assert [outputs(queued[0]), outputs(queued[2])] == [[20], [24]]
        assert in_flight.cancelled() and queued[1].cancelled()
        assert 11 not in runner.rows_computed
        assert batcher.queued_rows == 0
        assert (await batcher.submit(x(5)))["y"].tolist() == [10]


@pytest.mark.parametrize(
    ("grace_s", "finished"),
    [(30, True), (0.05, False)],
    ids=["queued-work-finishes", "past-the-grace-fails"],
)
async def test_drain_refuses_new_requests_and_settles_queued_ones(
    grace_s: float, finished: bool
) -> None:
    runner = FakeRunner(hold=True)
    batcher = make(runner)
    in_flight = await occupy(batcher, runner, 1)
    queued = await submit_all(batcher, (x(10 + i) for i in range(3)))
    drain = asyncio.create_task(batcher.drain(grace_s))
    await settle()
    with pytest.raises(ShuttingDown):
        await batcher.submit(x(9))
    if finished:
        assert not drain.done()  # it waits for the queued work
    else:
        await drain
    await finish(runner, drain, in_flight, *queued)
    for task, expected in zip([in_flight, *queued], [[2], [20], [22], [24]], strict=True):
        if finished:
            assert outputs(task) == expected
        else:
            assert isinstance(task.exception(), ShuttingDown)


@pytest.mark.parametrize(
    "inputs",
    [{"x": np.array([])}, {"x": np.array([1.0]), "z": np.array([1.0, 2.0])}, {}],
    ids=["no-rows", "unequal-rows", "no-inputs"],
)
async def test_invalid_requests_are_refused_before_queueing(inputs: Tensors) -> None:
    async with serving(FakeRunner()) as batcher:
        with pytest.raises(InvalidInput):
            await batcher.submit(inputs)
        assert batcher.queued_rows == 0


async def test_stats_and_metrics_count_runs_rows_and_requests() -> None:
    metrics = Metrics()
    stats = VersionStats("m", "1")
    runner = FakeRunner(hold=True)
    async with serving(runner, stats, BatchMetrics(metrics, "m", "1")) as batcher:
        first = await occupy(batcher, runner, 1, 2)
        rest = await submit_all(batcher, (x(i) for i in range(3)))
        value = metrics.registry.get_sample_value
        labels = {"model": "m", "version": "1"}
        assert value("recserve_queue_rows", labels) == 3
        capacity = BatchingSettings().queue_capacity_rows
        assert value("recserve_queue_capacity_rows", labels) == capacity
        await finish(runner, first, *rest)
        assert value("recserve_queue_rows", labels) == 0
        assert value("recserve_batch_rows_count", labels) == 2
        assert value("recserve_batch_rows_sum", labels) == 5
        assert value("recserve_batch_requests_sum", labels) == 4
        assert value("recserve_queue_wait_seconds_count", labels) == 4
        assert value("recserve_compute_duration_seconds_count", labels) == 2
        triton = stats.to_triton()
        assert triton["inference_count"] == 5
        assert triton["execution_count"] == 2
        assert triton["inference_stats"]["success"]["count"] == 4
        assert triton["inference_stats"]["compute_infer"]["count"] == 4
        assert triton["inference_stats"]["queue"]["count"] == 4
        assert triton["last_inference"] > 0


async def test_every_observer_is_told_every_event_in_order() -> None:
    runner = FakeRunner(hold=True)
    first, second = Recorder(), Recorder()
    async with serving(runner, first, second, queue_capacity_rows=3) as batcher:
        in_flight = await occupy(batcher, runner, 1)
        queued = await submit_all(batcher, [x(2, 3), x(4)])
        with pytest.raises(Overloaded):
            await batcher.submit(x(5))
        await finish(runner, in_flight, *queued)
    assert first.counts() == [
        ("opened", (3,)),
        ("queued", (1,)),
        ("waited", ()),
        ("dequeued", (1,)),
        ("queued", (2,)),
        ("queued", (1,)),
        ("rejected", (1,)),
        ("succeeded", ()),
        ("ran", (1, 1)),
        ("waited", ()),
        ("waited", ()),
        ("dequeued", (3,)),
        ("succeeded", ()),
        ("succeeded", ()),
        ("ran", (3, 2)),
    ]
    assert second.events == first.events  # the same calls, with the same durations


async def test_observers_are_told_of_timeouts_and_dropped_rows() -> None:
    runner = FakeRunner(hold=True)
    recorder = Recorder()
    async with serving(runner, recorder, request_timeout_s=0.05) as batcher:
        in_flight = await occupy(batcher, runner, 1)
        with pytest.raises(QueueTimeout):
            await batcher.submit(x(7, 8))
        (cancelled,) = await submit_all(batcher, [x(9)])
        cancelled.cancel()
        await finish(runner, in_flight, cancelled)
    events = recorder.counts()
    assert events[4:8] == [
        ("queued", (2,)),
        ("dequeued", (2,)),
        ("failed", ("QueueTimeout",)),
        ("queued", (1,)),
    ]
    assert ("dequeued", (1,)) in events[8:]  # the cancelled request left the queue, unanswered
    queued = sum(args[0] for event, args in events if event == "queued")
    assert queued == sum(args[0] for event, args in events if event == "dequeued") == 4
    assert [event for event, _ in events].count("failed") == 1
