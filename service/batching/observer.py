"""What a batcher reports, as one interface: the Prometheus metrics and Triton's statistics
(``service.metrics``) both implement it, structurally, so that this room imports neither and the
batcher calls its observers, never a metric family or a counter.

Every method runs on the event loop, on the request path: an observer does arithmetic, never I/O.
Durations are in seconds, from ``time.monotonic``.
"""

from __future__ import annotations

from typing import Protocol

from service.errors import ServingError


class BatchObserver(Protocol):
    """The events of one model version's batcher, in the order a request meets them.

    An observer implements every method; those it has no use for do nothing."""

    def opened(self, capacity_rows: int) -> None:
        """The batcher exists; its queue holds at most ``capacity_rows`` rows."""

    def queued(self, rows: int) -> None:
        """A request's ``rows`` joined the queue, deeper by them until they are dequeued."""

    def rejected(self, rows: int) -> None:
        """A request of ``rows`` was refused at once: the queue was full. It is neither queued
        nor dequeued."""

    def waited(self, seconds: float) -> None:
        """A request's first rows entered a batch ``seconds`` after it was queued.

        Reported once per request, even when its rows are split over several batches.
        """

    def dequeued(self, rows: int) -> None:
        """``rows`` left the queue: taken by a batch, or dropped (timed out, cancelled, shut
        down). Over a batcher's life the rows dequeued add up to the rows queued."""

    def ran(
        self, rows: int, requests: int, input_s: float, compute_s: float, output_s: float
    ) -> None:
        """A batch of ``rows`` from ``requests`` requests (or slices of them) was computed:
        ``input_s`` gathering its feeds, ``compute_s`` in the runtime, ``output_s`` replying."""

    def succeeded(self, seconds: float) -> None:
        """A request was answered ``seconds`` after it was queued."""

    def failed(self, seconds: float, error: ServingError) -> None:
        """A queued request was answered with ``error`` ``seconds`` after it was queued: timed out
        in the queue (:class:`~service.errors.QueueTimeout`), failed in the runtime, or shut
        down. A request whose caller went away is neither answered nor reported."""
