"""The dynamic batcher with a fake runner: merging, splitting, bounds, timeouts, failures, drain."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

import numpy as np
import pytest

from service.batching.batcher import Batcher
from service.errors import InferenceFailed, InvalidInput, Overloaded, QueueTimeout, ShuttingDown
from service.metrics.families import Metrics
from service.settings import BatchingSettings


class FakeRunner:
    """Doubles ``x``; records every batch; can hold runs until released and fail on a marker."""

    def __init__(self, *, hold: bool = False, poison: float | None = None) -> None:
        self.batches: list[np.ndarray] = []
        self.entered = threading.Condition()
        self.released = threading.Event()
        if not hold:
            self.released.set()
        self.poison = poison

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = feeds["x"]
        with self.entered:
            self.batches.append(x.copy())
            self.entered.notify_all()
        assert self.released.wait(10)
        if self.poison is not None and np.any(x == self.poison):
            raise RuntimeError(f"poison row {self.poison}")
        return {"y": x * 2}

    @property
    def rows_computed(self) -> np.ndarray:
        return np.concatenate(self.batches) if self.batches else np.empty(0)

    async def wait_entered(self, runs: int = 1) -> None:
        """Wait until ``runs`` batches have reached the runner."""

        def wait() -> bool:
            with self.entered:
                return self.entered.wait_for(lambda: len(self.batches) >= runs, 10)

        assert await asyncio.to_thread(wait)


def make(runner: FakeRunner, metrics: Metrics | None = None, **overrides: Any) -> Batcher:
    settings = BatchingSettings(**overrides)
    return Batcher(runner, settings, model="m", version="1", metrics=metrics)


def x(*values: float) -> dict[str, np.ndarray]:
    return {"x": np.array(values, dtype=np.float64)}


async def settle() -> None:
    """Let every ready callback run (submits reach the queue, replies reach their waiters)."""
    for _ in range(10):
        await asyncio.sleep(0)


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


def test_concurrent_requests_share_a_batch() -> None:
    async def main() -> None:
        runner = FakeRunner(hold=True)
        batcher = make(runner)
        first = asyncio.create_task(batcher.submit(x(0)))
        await runner.wait_entered()
        rest = [asyncio.create_task(batcher.submit(x(i, 100 + i))) for i in range(1, 11)]
        await settle()
        assert batcher.queued_rows == 20
        runner.released.set()
        assert (await first)["y"].tolist() == [0]
        for i, task in enumerate(rest, start=1):
            assert (await task)["y"].tolist() == [2 * i, 2 * (100 + i)]
        assert len(runner.batches) == 2  # 11 requests, 2 runs
        assert len(runner.batches[1]) == 20
        assert batcher.queued_rows == 0
        await batcher.drain(1)

    run(main())


def test_large_request_is_split_and_reassembled_in_order() -> None:
    async def main() -> None:
        runner = FakeRunner(hold=True)
        batcher = make(runner, max_batch_rows=16)
        small_before = asyncio.create_task(batcher.submit(x(-1, -2, -3)))
        await runner.wait_entered()
        big = asyncio.create_task(batcher.submit({"x": np.arange(100, dtype=np.float64)}))
        small_after = asyncio.create_task(batcher.submit(x(-4)))
        await settle()
        runner.released.set()
        assert (await big)["y"].tolist() == (np.arange(100) * 2).tolist()
        assert (await small_before)["y"].tolist() == [-2, -4, -6]
        assert (await small_after)["y"].tolist() == [-8]
        assert all(len(batch) <= 16 for batch in runner.batches)
        assert sorted(runner.rows_computed.tolist()) == sorted([*range(100), -1, -2, -3, -4])
        await batcher.drain(1)

    run(main())


def test_full_queue_refuses_at_once_without_losing_or_duplicating_replies() -> None:
    async def main() -> None:
        runner = FakeRunner(hold=True)
        batcher = make(runner, queue_capacity_rows=10)
        in_flight = asyncio.create_task(batcher.submit(x(*range(5))))
        await runner.wait_entered()
        queued = [asyncio.create_task(batcher.submit(x(10 + i, 20 + i))) for i in range(5)]
        await settle()
        assert batcher.queued_rows == 10
        with pytest.raises(Overloaded) as refused:
            await batcher.submit(x(99))
        assert refused.value.headers() == {"Retry-After": "1"}
        runner.released.set()
        assert (await in_flight)["y"].tolist() == [0, 2, 4, 6, 8]
        for i, task in enumerate(queued):
            assert (await task)["y"].tolist() == [2 * (10 + i), 2 * (20 + i)]
        computed = runner.rows_computed.tolist()
        assert sorted(computed) == sorted([*range(5), *range(10, 15), *range(20, 25)])
        assert 99 not in computed
        await batcher.drain(1)

    run(main())


def test_request_larger_than_capacity_is_taken_when_the_queue_is_empty() -> None:
    async def main() -> None:
        batcher = make(FakeRunner(), queue_capacity_rows=4, max_batch_rows=3)
        out = await batcher.submit({"x": np.arange(10, dtype=np.float64)})
        assert out["y"].tolist() == (np.arange(10) * 2).tolist()
        await batcher.drain(1)

    run(main())


def test_request_past_its_timeout_is_refused_and_never_computed() -> None:
    async def main() -> None:
        runner = FakeRunner(hold=True)
        batcher = make(runner, request_timeout_s=0.05)
        in_flight = asyncio.create_task(batcher.submit(x(1)))
        await runner.wait_entered()
        # The runner is still busy when the timeout passes: the waiter is answered anyway.
        with pytest.raises(QueueTimeout):
            await batcher.submit(x(7, 8))
        assert not in_flight.done()
        assert batcher.queued_rows == 0
        runner.released.set()
        assert (await in_flight)["y"].tolist() == [2]
        fresh = await batcher.submit(x(3))
        assert fresh["y"].tolist() == [6]
        assert 7 not in runner.rows_computed.tolist()
        assert batcher.stats.fail_count == 1
        await batcher.drain(1)

    run(main())


def test_failing_request_fails_alone() -> None:
    async def main() -> None:
        runner = FakeRunner(hold=True, poison=-1)
        batcher = make(runner)
        first = asyncio.create_task(batcher.submit(x(0)))
        await runner.wait_entered()
        values = [(i, 50 + i) for i in range(1, 9)]
        values[5] = (6, -1)
        tasks = [asyncio.create_task(batcher.submit(x(*v))) for v in values]
        await settle()
        runner.released.set()
        assert (await first)["y"].tolist() == [0]
        for v, task in zip(values, tasks, strict=True):
            if -1 in v:
                with pytest.raises(InferenceFailed, match="poison row"):
                    await task
            else:
                assert (await task)["y"].tolist() == [2 * v[0], 2 * v[1]]
        # The merged batch failed, then halves were retried until the bad request was alone.
        assert len(runner.batches) > 2
        assert len(runner.batches[1]) == 16
        assert batcher.stats.fail_count == 1
        assert batcher.stats.success_count == 8
        await batcher.drain(1)

    run(main())


def test_wrong_number_of_output_rows_fails_the_batch() -> None:
    async def main() -> None:
        def runner(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {"y": feeds["x"][:1]}

        batcher = Batcher(runner, BatchingSettings())
        with pytest.raises(InferenceFailed, match="rows"):
            await batcher.submit(x(1, 2, 3))
        await batcher.drain(1)

    run(main())


def test_idle_runner_starts_at_once_despite_a_long_queue_delay() -> None:
    async def main() -> None:
        runner = FakeRunner()
        batcher = make(runner, max_queue_delay_us=10**9)
        out = await asyncio.wait_for(batcher.submit(x(4)), 30)
        assert out["y"].tolist() == [8]
        assert len(runner.batches) == 1
        await batcher.drain(1)

    run(main())


def test_second_runner_waits_for_a_full_batch_or_an_idle_runner() -> None:
    async def main() -> None:
        runner = FakeRunner(hold=True)
        batcher = make(runner, max_queue_delay_us=10**9, concurrent_runs=2, max_batch_rows=4)
        first = asyncio.create_task(batcher.submit(x(1)))
        await runner.wait_entered()
        second = asyncio.create_task(batcher.submit(x(2)))
        await settle()
        assert len(runner.batches) == 1  # the free runner waits: the batch is not full
        third = asyncio.create_task(batcher.submit(x(3, 4, 5)))
        await runner.wait_entered(2)  # 4 rows queued: a full batch starts on the free runner
        assert runner.batches[1].tolist() == [2, 3, 4, 5]
        runner.released.set()
        assert (await first)["y"].tolist() == [2]
        assert (await second)["y"].tolist() == [4]
        assert (await third)["y"].tolist() == [6, 8, 10]
        await batcher.drain(1)

    run(main())


def test_cancelled_waiter_does_not_break_the_batch() -> None:
    async def main() -> None:
        runner = FakeRunner(hold=True)
        batcher = make(runner)
        in_flight = asyncio.create_task(batcher.submit(x(1)))
        await runner.wait_entered()
        queued = [asyncio.create_task(batcher.submit(x(10 + i))) for i in range(3)]
        await settle()
        queued[1].cancel()  # its client went away while it was queued
        in_flight.cancel()  # and this one while its batch was running
        await settle()
        assert batcher.queued_rows == 2
        runner.released.set()
        assert (await queued[0])["y"].tolist() == [20]
        assert (await queued[2])["y"].tolist() == [24]
        for task in (in_flight, queued[1]):
            with pytest.raises(asyncio.CancelledError):
                await task
        assert 11 not in runner.rows_computed.tolist()
        assert batcher.queued_rows == 0
        assert (await batcher.submit(x(5)))["y"].tolist() == [10]
        await batcher.drain(1)

    run(main())


def test_drain_finishes_queued_work_and_refuses_new() -> None:
    async def main() -> None:
        runner = FakeRunner(hold=True)
        batcher = make(runner)
        in_flight = asyncio.create_task(batcher.submit(x(1)))
        await runner.wait_entered()
        queued = [asyncio.create_task(batcher.submit(x(10 + i))) for i in range(3)]
        await settle()
        drain = asyncio.create_task(batcher.drain(30))
        await settle()
        with pytest.raises(ShuttingDown):
            await batcher.submit(x(9))
        assert not drain.done()
        runner.released.set()
        await drain
        assert (await in_flight)["y"].tolist() == [2]
        assert [(await t)["y"].tolist() for t in queued] == [[20], [22], [24]]

    run(main())


def test_drain_past_its_grace_fails_what_is_left() -> None:
    async def main() -> None:
        runner = FakeRunner(hold=True)
        batcher = make(runner)
        in_flight = asyncio.create_task(batcher.submit(x(1)))
        await runner.wait_entered()
        queued = asyncio.create_task(batcher.submit(x(2)))
        await settle()
        await batcher.drain(0.05)
        runner.released.set()
        for task in (in_flight, queued):
            with pytest.raises(ShuttingDown):
                await task

    run(main())


def test_invalid_requests_are_refused_before_queueing() -> None:
    async def main() -> None:
        batcher = make(FakeRunner())
        with pytest.raises(InvalidInput):
            await batcher.submit({"x": np.array([])})
        with pytest.raises(InvalidInput):
            await batcher.submit({"x": np.array([1.0]), "z": np.array([1.0, 2.0])})
        with pytest.raises(InvalidInput):
            await batcher.submit({})
        assert batcher.queued_rows == 0
        await batcher.drain(1)

    run(main())


def test_stats_and_metrics_count_runs_rows_and_requests() -> None:
    async def main() -> None:
        metrics = Metrics()
        runner = FakeRunner(hold=True)
        batcher = make(runner, metrics)
        first = asyncio.create_task(batcher.submit(x(1, 2)))
        await runner.wait_entered()
        rest = [asyncio.create_task(batcher.submit(x(i))) for i in range(3)]
        await settle()
        value = metrics.registry.get_sample_value
        labels = {"model": "m", "version": "1"}
        assert value("recserve_queue_rows", labels) == 3
        capacity = BatchingSettings().queue_capacity_rows
        assert value("recserve_queue_capacity_rows", labels) == capacity
        runner.released.set()
        await asyncio.gather(first, *rest)
        assert value("recserve_queue_rows", labels) == 0
        assert value("recserve_batch_rows_count", labels) == 2
        assert value("recserve_batch_rows_sum", labels) == 5
        assert value("recserve_batch_requests_sum", labels) == 4
        assert value("recserve_queue_wait_seconds_count", labels) == 4
        assert value("recserve_compute_duration_seconds_count", labels) == 2
        triton = batcher.stats.to_triton()
        assert triton["inference_count"] == 5
        assert triton["execution_count"] == 2
        assert triton["inference_stats"]["success"]["count"] == 4
        assert triton["inference_stats"]["compute_infer"]["count"] == 4
        assert triton["last_inference"] > 0
        await batcher.drain(1)

    run(main())
