"""When a batch starts and how many rows it takes: the batching policy, apart from the queue.

The batcher asks and the policy answers from plain numbers (rows queued, runners busy, when the
oldest request arrived), so the batch boundaries are decided, and tested, without an event loop.
Another policy (a byte budget, no splitting) is another class with the same three methods.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.settings import BatchingSettings


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """Dynamic batching by rows (design.md §5).

    An idle runner starts a batch at once; requests that arrive while a batch runs form the next
    one. A free runner beside a busy one waits until ``max_rows`` rows are queued or the oldest
    request has waited ``max_delay_s``. A batch takes whole requests in queue order while they
    fit, then a slice of the first one that does not; the rest of that request heads the next.
    """

    max_rows: int
    max_delay_s: float = 0.0

    def __post_init__(self) -> None:
        if self.max_rows < 1:  # a batch that can take no row would never start
            raise ValueError(f"max_rows must be at least 1, got {self.max_rows}")

    @classmethod
    def from_settings(cls, settings: BatchingSettings) -> BatchPolicy:
        return cls(settings.max_batch_rows, settings.max_queue_delay_us / 1e6)

    def wakes(self, queued_before: int, queued_after: int) -> bool:
        """Whether an arriving request should wake the runners.

        Into an empty queue: an idle runner may start at once. Filling a batch: a free runner
        waiting for the delay may start now. Otherwise a waiting runner's timer already covers it.
        """
        return not queued_before or queued_after >= self.max_rows

    def wait_s(
        self,
        *,
        queued_rows: int,
        oldest_enqueued: float,
        now: float,
        busy_runners: int,
        closing: bool,
    ) -> float:
        """Seconds a free runner should still wait for the batch to fill (<= 0: start now).

        Nobody waits while every runner is idle (waiting would only add latency), while closing
        (the queue is drained as fast as it goes), or once a full batch is queued.
        """
        if busy_runners == 0 or closing or self.max_delay_s <= 0 or queued_rows >= self.max_rows:
            return 0.0
        return oldest_enqueued + self.max_delay_s - now

    def take(self, left: int, batched: int) -> int:
        """Rows a request with ``left`` rows queued gives a batch that already holds ``batched``.

        All of them while they fit, else what fills the batch (the request is split); 0 once
        the batch is full.
        """
        return max(0, min(left, self.max_rows - batched))
