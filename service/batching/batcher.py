"""Dynamic batching of one model version (design.md §5).

The unit is the row. ``submit`` appends a request to a deque and awaits a future; workers (one per
concurrent run) take rows from the head of the deque, cutting a request that does not fit into
slices, and run each batch with one ``run_in_executor`` call:

    collect -> concatenate -> run -> check one output row per input row -> split -> reply

An idle runner starts a batch at once; requests that arrive while a batch runs form the next one.
With ``concurrent_runs`` > 1, a free runner beside a busy one waits until the queue holds
``max_batch_rows`` or its oldest request has waited ``max_queue_delay_us``. The queue is bounded in
rows; a request still wholly queued at its timeout is answered :class:`QueueTimeout` and never
computed. A batch that fails in the runtime is retried in halves until the failing requests are
isolated, so no request fails because of another.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor

import numpy as np

from service.errors import (
    InferenceFailed,
    InvalidInput,
    Overloaded,
    QueueTimeout,
    ServingError,
    ShuttingDown,
)
from service.metrics.families import Metrics
from service.metrics.stats import VersionStats
from service.settings import BatchingSettings

log = logging.getLogger(__name__)

Tensors = dict[str, np.ndarray]
Runner = Callable[[Tensors], Tensors]
"""Runs one batch (called in a worker thread); returns outputs with one row per input row."""


class _Request:
    __slots__ = ("deadline", "done_rows", "enqueued", "future", "inputs", "n", "pieces", "taken")

    def __init__(
        self,
        inputs: Mapping[str, np.ndarray],
        n: int,
        future: asyncio.Future[Tensors],
        enqueued: float,
        deadline: float,
    ) -> None:
        self.inputs = inputs
        self.n = n
        self.taken = 0  # rows handed to batches (or dropped); n once nothing is left queued
        self.future = future
        self.enqueued = enqueued
        self.deadline = deadline
        self.done_rows = 0  # rows computed, for a request split over several batches
        self.pieces: list[tuple[int, Tensors]] = []


# A slice of one request in a batch: (request, start row, stop row).
_Part = tuple[_Request, int, int]


class _OutputRowsMismatch(Exception):
    pass


class Batcher:
    """The request queue and runners of one model version."""

    def __init__(
        self,
        runner: Runner,
        settings: BatchingSettings,
        *,
        model: str = "",
        version: str = "",
        metrics: Metrics | None = None,
        stats: VersionStats | None = None,
        executor: Executor | None = None,
    ) -> None:
        self._runner = runner
        self._max_rows = settings.max_batch_rows
        self._delay_s = settings.max_queue_delay_us / 1e6
        self._capacity = settings.queue_capacity_rows
        self._timeout_s = settings.request_timeout_s
        self._n_workers = settings.concurrent_runs
        self.stats = stats if stats is not None else VersionStats(model, version)
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(
            max_workers=self._n_workers, thread_name_prefix=f"run-{model}-{version}"
        )
        m = metrics if metrics is not None else Metrics()
        self._queue_wait = m.queue_wait.labels(model, version)
        self._compute = m.compute_duration.labels(model, version)
        self._batch_rows = m.batch_rows.labels(model, version)
        self._batch_requests = m.batch_requests.labels(model, version)
        # Changed by the rows this batcher adds and takes (inc/dec), so that a version reloaded in
        # place, whose old and new batchers share the child, shows their sum.
        self._queue_gauge = m.queue_rows.labels(model, version)
        m.queue_capacity_rows.labels(model, version).set(self._capacity)

        self._queue: deque[_Request] = deque()
        self._queued_rows = 0
        self._running = 0
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._timer: asyncio.TimerHandle | None = None

    @property
    def queued_rows(self) -> int:
        """Rows waiting for a batch (not yet handed to a runner)."""
        return self._queued_rows

    @property
    def closing(self) -> bool:
        return self._closing

    # -- the request path ----------------------------------------------------------------------

    async def submit(self, inputs: Mapping[str, np.ndarray]) -> Tensors:
        """Queue a request's rows and return its outputs, in row order."""
        if self._closing:
            raise ShuttingDown("the model version is shutting down")
        n = _row_count(inputs)
        queued = self._queued_rows
        if queued and queued + n > self._capacity:
            self.stats.fail_count += 1
            raise Overloaded(
                f"queue full ({queued} rows queued, capacity {self._capacity}); retry later"
            )
        loop = self._loop
        if loop is None:
            loop = self._start()
        now = time.monotonic()
        request = _Request(inputs, n, loop.create_future(), now, now + self._timeout_s)
        self._queue.append(request)
        self._queued_rows = queued + n
        self._queue_gauge.inc(n)
        if not queued or queued + n >= self._max_rows:
            self._wake()
        if self._timer is None:
            self._timer = loop.call_later(self._timeout_s, self._expire_overdue)
        try:
            return await request.future
        except asyncio.CancelledError:
            self._drop(request)  # the caller is gone: its queued rows are never computed
            raise

    # -- the batch loop ------------------------------------------------------------------------

    def _start(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._wakeup = asyncio.Event()
        self._workers = [
            loop.create_task(self._worker(), name=f"batcher-{i}") for i in range(self._n_workers)
        ]
        return loop

    async def _worker(self) -> None:
        while True:
            parts = await self._next_batch()
            if parts is None:
                return
            try:
                await self._execute(parts)
            except asyncio.CancelledError:
                self._fail_parts(parts, ShuttingDown("shut down before the batch finished"))
                raise
            except Exception as exc:  # a bug in this module: fail the batch, keep serving
                log.exception("batch failed unexpectedly")
                self._fail_parts(parts, InferenceFailed(f"internal error: {exc}"))
            finally:
                self._running -= 1
                self._wake()

    async def _next_batch(self) -> list[_Part] | None:
        """Wait until a batch should start and take its rows; None once closed and empty."""
        while True:
            if self._queued_rows:
                wait_s = self._delay_left()
                if wait_s <= 0:
                    parts = self._collect()
                    if parts:
                        self._running += 1
                        return parts
                    continue
                await self._wait(wait_s)
            elif self._closing:
                return None
            else:
                await self._wait(None)

    def _delay_left(self) -> float:
        """Seconds a free runner should still wait for the batch to fill (<= 0: start now)."""
        if (
            self._running == 0
            or self._closing
            or self._delay_s <= 0
            or self._queued_rows >= self._max_rows
        ):
            return 0.0
        head = self._head()
        if head is None:
            return 0.0
        return head.enqueued + self._delay_s - time.monotonic()

    def _collect(self) -> list[_Part]:
        """Take up to ``max_batch_rows`` rows from the head of the queue."""
        now = time.monotonic()
        queue = self._queue
        room = self._max_rows
        parts: list[_Part] = []
        while queue and room:
            request = queue[0]
            start = request.taken
            left = request.n - start
            if left == 0:
                queue.popleft()
                continue
            if start == 0:
                if request.deadline <= now:
                    queue.popleft()
                    self._expire(request)
                    continue
                waited = now - request.enqueued
                self._queue_wait.observe(waited)
                self.stats.queue_count += 1
                self.stats.queue_ns += int(waited * 1e9)
            take = min(left, room)
            parts.append((request, start, start + take))
            request.taken = start + take
            self._queued_rows -= take
            room -= take
            if take == left:
                queue.popleft()
        if room < self._max_rows:
            self._queue_gauge.dec(self._max_rows - room)
        return parts

    async def _execute(self, parts: list[_Part]) -> None:
        """Run one batch and reply; on a runtime error, retry in halves to isolate the culprit."""
        live = [part for part in parts if not part[0].future.done()]
        if not live:
            return
        loop = self._loop
        assert loop is not None
        t0 = time.monotonic()
        try:
            feeds = _concatenate(live)
            t1 = time.monotonic()
            outputs = await loop.run_in_executor(self._executor, self._runner, feeds)
            t2 = time.monotonic()
            rows = sum(stop - start for _, start, stop in live)
            for name, value in outputs.items():
                if value.shape[:1] != (rows,):
                    raise _OutputRowsMismatch(
                        f"model returned {list(value.shape)} rows for output '{name}' "
                        f"from {rows} input rows"
                    )
        except _OutputRowsMismatch as exc:
            self._fail_parts(live, InferenceFailed(str(exc)))
            return
        except Exception as exc:
            if len(live) > 1:
                middle = len(live) // 2
                await self._execute(live[:middle])
                await self._execute(live[middle:])
            else:
                self._fail_parts(live, InferenceFailed(f"inference failed: {exc}"))
            return
        self._reply(live, outputs)
        t3 = time.monotonic()
        self._account(len(live), rows, t0, t1, t2, t3)

    def _reply(self, parts: list[_Part], outputs: Tensors) -> None:
        """Hand each request its slice of the outputs (views; a split request is reassembled)."""
        now = time.monotonic()
        stats = self.stats
        offset = 0
        for request, start, stop in parts:
            size = stop - start
            end = offset + size
            if request.future.done():  # cancelled while its batch ran
                offset = end
                continue
            piece = {name: value[offset:end] for name, value in outputs.items()}
            offset = end
            if size != request.n:
                request.pieces.append((start, piece))
                request.done_rows += size
                if request.done_rows < request.n:
                    continue
                piece = _reassemble(request.pieces)
                request.pieces = []
            request.future.set_result(piece)
            stats.success_count += 1
            stats.success_ns += int((now - request.enqueued) * 1e9)

    def _account(self, n_parts: int, rows: int, t0: float, t1: float, t2: float, t3: float) -> None:
        self._compute.observe(t2 - t1)
        self._batch_rows.observe(rows)
        self._batch_requests.observe(n_parts)
        stats = self.stats
        stats.execution_count += 1
        stats.inference_count += rows
        stats.last_inference_ms = int(time.time() * 1000)
        stats.compute_input_count += n_parts
        stats.compute_input_ns += int((t1 - t0) * 1e9) * n_parts
        stats.compute_infer_count += n_parts
        stats.compute_infer_ns += int((t2 - t1) * 1e9) * n_parts
        stats.compute_output_count += n_parts
        stats.compute_output_ns += int((t3 - t2) * 1e9) * n_parts

    # -- waiting, failing, expiring --------------------------------------------------------------

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    async def _wait(self, timeout_s: float | None) -> None:
        event = self._wakeup
        assert event is not None and self._loop is not None
        event.clear()
        if timeout_s is None:
            await event.wait()
            return
        handle = self._loop.call_later(timeout_s, event.set)
        try:
            await event.wait()
        finally:
            handle.cancel()

    def _head(self) -> _Request | None:
        """The oldest request with rows still queued (dropped ones are discarded on the way)."""
        queue = self._queue
        while queue:
            request = queue[0]
            if request.taken < request.n:
                return request
            queue.popleft()
        return None

    def _drop(self, request: _Request) -> None:
        """Take a request's remaining rows out of the count (the deque discards it when reached)."""
        left = request.n - request.taken
        if left:
            self._queued_rows -= left
            self._queue_gauge.dec(left)
            request.taken = request.n

    def _fail(self, request: _Request, error: ServingError) -> None:
        self._drop(request)
        if not request.future.done():
            request.future.set_exception(error)
            self.stats.fail_count += 1
            self.stats.fail_ns += int((time.monotonic() - request.enqueued) * 1e9)
            if isinstance(error, InferenceFailed):
                log.warning("request of %d rows failed: %s", request.n, error.message)

    def _fail_parts(self, parts: list[_Part], error: ServingError) -> None:
        for request, _, _ in parts:
            self._fail(request, error)

    def _expire(self, request: _Request) -> None:
        self._fail(
            request,
            QueueTimeout(f"request waited in the queue longer than {self._timeout_s:g} s"),
        )

    def _expire_overdue(self) -> None:
        """Timer: answer every wholly queued request past its deadline, then re-arm.

        All requests of a version share one timeout, so deadlines follow queue order and one
        timer, set for the oldest pending deadline, serves the whole queue.
        """
        self._timer = None
        now = time.monotonic()
        following: _Request | None = None
        for request in self._queue:
            if request.deadline > now:
                following = request
                break
            if request.taken == 0:
                self._expire(request)
        self._head()
        if following is not None and self._loop is not None:
            self._timer = self._loop.call_later(following.deadline - now, self._expire_overdue)

    # -- shutdown ----------------------------------------------------------------------------------

    def abort(self) -> None:
        """Refuse new requests and answer every queued or computing one 503 at once."""
        self._closing = True
        for request in list(self._queue):
            self._fail(request, ShuttingDown("shut down before the request was computed"))
        for task in self._workers:
            task.cancel()  # a runner answers the requests of its batch (see _worker)
        self._wake()

    async def drain(self, timeout_s: float) -> None:
        """Refuse new requests, finish queued ones within ``timeout_s``, fail what is left, stop."""
        self._closing = True
        self._wake()
        if self._workers:
            _, pending = await asyncio.wait(self._workers, timeout=timeout_s)
            if pending:
                for request in list(self._queue):
                    self._fail(request, ShuttingDown("shut down before the request was computed"))
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for request in list(self._queue):  # only dropped ones can be left; settle any stragglers
            self._fail(request, ShuttingDown("shut down before the request was computed"))
        self._queue.clear()
        if self._own_executor:
            self._executor.shutdown(wait=False)


def _row_count(inputs: Mapping[str, np.ndarray]) -> int:
    n = -1
    for value in inputs.values():
        rows = value.shape[0] if value.ndim else 0
        if n < 0:
            n = rows
        elif rows != n:
            n = 0
            break
    if n <= 0:
        raise InvalidInput(
            "inputs must have the same, non-zero number of rows; got "
            + (", ".join(f"'{k}': {list(v.shape)}" for k, v in inputs.items()) or "no inputs")
        )
    return n


def _concatenate(parts: list[_Part]) -> Tensors:
    if len(parts) == 1:
        request, start, stop = parts[0]
        if start == 0 and stop == request.n:
            return dict(request.inputs)
        return {name: value[start:stop] for name, value in request.inputs.items()}
    names = parts[0][0].inputs.keys()
    return {
        name: np.concatenate([request.inputs[name][start:stop] for request, start, stop in parts])
        for name in names
    }


def _reassemble(pieces: list[tuple[int, Tensors]]) -> Tensors:
    pieces.sort(key=lambda piece: piece[0])
    names = pieces[0][1].keys()
    return {name: np.concatenate([piece[name] for _, piece in pieces]) for name in names}
