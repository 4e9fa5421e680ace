"""The Prometheus side of one version's batcher: it implements the batcher's observer interface
(:class:`service.batching.observer.BatchObserver`, structurally: this room imports no other).

The children are looked up once per version, never per request.
"""

from __future__ import annotations

from service.errors import ServingError
from service.metrics.families import Metrics


class BatchMetrics:
    """Queue depth and capacity, queue waits, batch sizes and compute time of one version."""

    __slots__ = (
        "_batch_requests",
        "_batch_rows",
        "_capacity",
        "_compute",
        "_queue_rows",
        "_queue_wait",
    )

    def __init__(self, metrics: Metrics, model: str, version: str) -> None:
        labels = (model, version)
        self._queue_wait = metrics.queue_wait.labels(*labels)
        self._compute = metrics.compute_duration.labels(*labels)
        self._batch_rows = metrics.batch_rows.labels(*labels)
        self._batch_requests = metrics.batch_requests.labels(*labels)
        # Moved by the rows this batcher adds and takes (inc/dec), so that a version reloaded in
        # place, whose old and new batchers share the child, shows their sum.
        self._queue_rows = metrics.queue_rows.labels(*labels)
        self._capacity = metrics.queue_capacity_rows.labels(*labels)

    def opened(self, capacity_rows: int) -> None:
        self._capacity.set(capacity_rows)

    def queued(self, rows: int) -> None:
        self._queue_rows.inc(rows)

    def ran(
        self, rows: int, requests: int, input_s: float, compute_s: float, output_s: float
    ) -> None:
        self._compute.observe(compute_s)
        self._batch_rows.observe(rows)
        self._batch_requests.observe(requests)

    def waited(self, seconds: float) -> None:
        self._queue_wait.observe(seconds)

    def dequeued(self, rows: int) -> None:
        self._queue_rows.dec(rows)

    # Answers are counted per endpoint and status by the HTTP edge (recserve_requests).

    def rejected(self, rows: int) -> None:
        pass

    def succeeded(self, seconds: float) -> None:
        pass

    def failed(self, seconds: float, error: ServingError) -> None:
        pass
