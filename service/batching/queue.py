"""The queue of one model version's batcher: requests in arrival order, counted in rows.

The unit is the row: a batch may take a slice of a request (``taken`` rows so far), so a request
stays at the head until its last row is taken. A request dropped from the middle (timed out, its
caller gone) is not searched for: its rows leave the count at once and the deque discards it when
it reaches the head.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping

import numpy as np

from service.batching.policy import BatchPolicy

Tensors = dict[str, np.ndarray]


class Request:
    """One submitted request: its inputs, its waiter and how far its rows have got."""

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


Part = tuple[Request, int, int]
"""A slice of one request in a batch: (request, start row, stop row)."""


class RequestQueue:
    """Requests waiting for a batch, oldest first; ``rows`` counts the rows not yet taken."""

    __slots__ = ("_requests", "rows")

    def __init__(self) -> None:
        self._requests: deque[Request] = deque()
        self.rows = 0

    def push(self, request: Request) -> None:
        self._requests.append(request)
        self.rows += request.n

    def head(self) -> Request | None:
        """The oldest request with rows still queued (finished ones are discarded on the way)."""
        requests = self._requests
        while requests:
            request = requests[0]
            if request.taken < request.n:
                return request
            requests.popleft()
        return None

    def take(self, policy: BatchPolicy) -> list[Part]:
        """Take the next batch's rows from the head, as many as ``policy`` gives it."""
        requests = self._requests
        parts: list[Part] = []
        batched = 0
        while requests:
            request = requests[0]
            start = request.taken
            left = request.n - start
            if left == 0:
                requests.popleft()
                continue
            take = policy.take(left, batched)
            if take <= 0:
                break
            parts.append((request, start, start + take))
            request.taken = start + take
            batched += take
            if take < left:
                break  # the rest of this request heads the next batch
            requests.popleft()
        self.rows -= batched
        return parts

    def drop(self, request: Request) -> int:
        """Take a request's remaining rows out of the queue; returns how many there were."""
        left = request.n - request.taken
        if left:
            self.rows -= left
            request.taken = request.n
        return left

    def overdue(self, now: float) -> tuple[list[Request], float | None]:
        """The wholly queued requests past their deadline, and the next deadline to come.

        All requests of a version share one timeout, so deadlines follow queue order: the
        overdue ones are at the head. A request with rows already in a batch is never overdue.
        """
        overdue: list[Request] = []
        for request in self._requests:
            if request.deadline > now:
                return overdue, request.deadline
            if request.taken == 0:
                overdue.append(request)
        return overdue, None

    def pending(self) -> list[Request]:
        """Every request still held, dropped ones included (for shutdown)."""
        return list(self._requests)

    def clear(self) -> None:
        self._requests.clear()
