"""Dynamic batching of one model version (design.md §5).

``submit`` queues a request's rows and awaits a future; runners (one task per concurrent run)
take batches from the head of the queue and run each with one ``run_in_executor`` call:

    collect -> concatenate -> run -> check one output row per input row -> split -> reply

When a batch starts and how many rows it takes is the :class:`BatchPolicy`'s decision; the queue
(:mod:`service.batching.queue`) keeps the requests and their row counts. The queue is bounded in
rows; a request still wholly queued at its timeout is answered :class:`QueueTimeout` and never
computed. A batch that fails in the runtime is retried in halves until the failing requests are
isolated, so no request fails because of another. What happens is told to the observers
(:class:`BatchObserver`): the metrics and the statistics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor

import numpy as np

from service.batching.observer import BatchObserver
from service.batching.policy import BatchPolicy
from service.batching.queue import Part, Request, RequestQueue, Tensors
from service.batching.tensors import concatenate, reassemble, row_count
from service.errors import InferenceFailed, Overloaded, QueueTimeout, ServingError, ShuttingDown
from service.settings import BatchingSettings

log = logging.getLogger(__name__)

Runner = Callable[[Tensors], Tensors]
"""Runs one batch (called in a worker thread); returns outputs with one row per input row."""


class _OutputRowsMismatch(Exception):
    pass


class Batcher:
    """The request queue and runners of one model version.

    ``observers`` are told every event (the version's metrics and statistics); ``name`` names the
    runner threads; ``policy`` defaults to the dynamic batching of ``settings``.
    """

    def __init__(
        self,
        runner: Runner,
        settings: BatchingSettings,
        *,
        observers: Sequence[BatchObserver] = (),
        name: str = "",
        policy: BatchPolicy | None = None,
        executor: Executor | None = None,
    ) -> None:
        self._runner = runner
        self._policy = policy if policy is not None else BatchPolicy.from_settings(settings)
        self._capacity = settings.queue_capacity_rows
        self._timeout_s = settings.request_timeout_s
        self._n_workers = settings.concurrent_runs
        self._observers = tuple(observers)
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(
            max_workers=self._n_workers, thread_name_prefix=f"run-{name}"
        )
        for observer in self._observers:
            observer.opened(self._capacity)

        self._queue = RequestQueue()
        self._running = 0
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._timer: asyncio.TimerHandle | None = None

    @property
    def queued_rows(self) -> int:
        """Rows waiting for a batch (not yet handed to a runner)."""
        return self._queue.rows

    @property
    def closing(self) -> bool:
        return self._closing

    # -- the request path ----------------------------------------------------------------------

    async def submit(self, inputs: Mapping[str, np.ndarray]) -> Tensors:
        """Queue a request's rows and return its outputs, in row order."""
        if self._closing:
            raise ShuttingDown("the model version is shutting down")
        n = row_count(inputs)
        queued = self._queue.rows
        if queued and queued + n > self._capacity:
            for observer in self._observers:
                observer.rejected(n)
            raise Overloaded(
                f"queue full ({queued} rows queued, capacity {self._capacity}); retry later"
            )
        loop = self._loop
        if loop is None:
            loop = self._start()
        now = time.monotonic()
        request = Request(inputs, n, loop.create_future(), now, now + self._timeout_s)
        self._queue.push(request)
        for observer in self._observers:
            observer.queued(n)
        if self._policy.wakes(queued, queued + n):
            self._wake()
        if self._timer is None:
            self._timer = loop.call_later(self._timeout_s, self._expire_overdue)
        try:
            return await request.future
        except asyncio.CancelledError:
            self._drop(request)  # the caller is gone: its queued rows are never computed
            raise

    # -- the batch loop: collect, run, split, reply ----------------------------------------------

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

    async def _next_batch(self) -> list[Part] | None:
        """Wait until the policy starts a batch and take its rows; None once closed and empty."""
        while True:
            head = self._queue.head()
            if head is not None:
                wait_s = self._policy.wait_s(
                    queued_rows=self._queue.rows,
                    oldest_enqueued=head.enqueued,
                    now=time.monotonic(),
                    busy_runners=self._running,
                    closing=self._closing,
                )
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

    def _collect(self) -> list[Part]:
        """Answer the requests past their timeout, then take a batch from the head of the queue."""
        now = time.monotonic()
        self._expire_due(now)
        parts = self._queue.take(self._policy)
        rows = 0
        for request, start, stop in parts:
            rows += stop - start
            if start == 0:
                for observer in self._observers:
                    observer.waited(now - request.enqueued)
        if rows:
            for observer in self._observers:
                observer.dequeued(rows)
        return parts

    async def _execute(self, parts: list[Part]) -> None:
        """Run one batch and reply; on a runtime error, retry in halves to isolate the culprit."""
        live = [part for part in parts if not part[0].future.done()]
        if not live:
            return
        loop = self._loop
        assert loop is not None
        t0 = time.monotonic()
        try:
            feeds = concatenate(live)
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
        for observer in self._observers:
            observer.ran(rows, len(live), t1 - t0, t2 - t1, t3 - t2)

    def _reply(self, parts: list[Part], outputs: Tensors) -> None:
        """Hand each request its slice of the outputs (views; a split request is reassembled)."""
        now = time.monotonic()
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
                piece = reassemble(request.pieces)
                request.pieces = []
            request.future.set_result(piece)
            for observer in self._observers:
                observer.succeeded(now - request.enqueued)

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

    def _drop(self, request: Request) -> None:
        rows = self._queue.drop(request)
        if rows:
            for observer in self._observers:
                observer.dequeued(rows)

    def _fail(self, request: Request, error: ServingError) -> None:
        self._drop(request)
        if request.future.done():
            return
        request.future.set_exception(error)
        seconds = time.monotonic() - request.enqueued
        for observer in self._observers:
            observer.failed(seconds, error)
        if isinstance(error, InferenceFailed):
            log.warning("request of %d rows failed: %s", request.n, error.message)

    def _fail_parts(self, parts: list[Part], error: ServingError) -> None:
        for request, _, _ in parts:
            self._fail(request, error)

    def _fail_pending(self) -> None:
        for request in self._queue.pending():
            self._fail(request, ShuttingDown("shut down before the request was computed"))

    def _expire_due(self, now: float) -> float | None:
        """Answer every wholly queued request past its deadline; returns the next deadline."""
        overdue, following = self._queue.overdue(now)
        for request in overdue:
            self._fail(
                request,
                QueueTimeout(f"request waited in the queue longer than {self._timeout_s:g} s"),
            )
        self._queue.head()  # discard the answered requests at the head
        return following

    def _expire_overdue(self) -> None:
        """Timer: expire what is due, then re-arm for the oldest pending deadline (one timer
        serves the whole queue, as deadlines follow queue order)."""
        self._timer = None
        now = time.monotonic()
        following = self._expire_due(now)
        if following is not None and self._loop is not None:
            self._timer = self._loop.call_later(following - now, self._expire_overdue)

    # -- shutdown ----------------------------------------------------------------------------------

    def abort(self) -> None:
        """Refuse new requests and answer every queued or computing one 503 at once."""
        self._closing = True
        self._fail_pending()
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
                self._fail_pending()
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._fail_pending()  # only dropped ones can be left; settle any stragglers
        self._queue.clear()
        if self._own_executor:
            self._executor.shutdown(wait=False)
