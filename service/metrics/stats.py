"""Per-version counters in the shape of Triton's statistics extension (``GET .../stats``).

A :class:`VersionStats` observes its version's batcher (it implements
:class:`service.batching.observer.BatchObserver` structurally) and counts on the event loop;
durations in nanoseconds. As in Triton, each request of a batch is charged the batch's whole
compute time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from service.errors import ServingError

# Triton's (count, ns) pairs, each kept as the fields <key>_count and <key>_ns.
_DURATIONS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")


@dataclass(slots=True)
class VersionStats:
    """Cumulative counters of one served model version."""

    name: str
    version: str
    inference_count: int = 0  # rows computed
    execution_count: int = 0  # ONNX Runtime runs
    last_inference_ms: int = 0  # wall clock, ms since the epoch
    success_count: int = 0
    success_ns: int = 0
    fail_count: int = 0  # refused with a full queue, timed out, failed or shut down
    fail_ns: int = 0
    queue_count: int = 0
    queue_ns: int = 0
    compute_input_count: int = 0
    compute_input_ns: int = 0
    compute_infer_count: int = 0
    compute_infer_ns: int = 0
    compute_output_count: int = 0
    compute_output_ns: int = 0

    # -- observing the batcher ---------------------------------------------------------------------

    def rejected(self, rows: int) -> None:
        self.fail_count += 1  # refused at once: no time spent

    def waited(self, seconds: float) -> None:
        self.queue_count += 1
        self.queue_ns += int(seconds * 1e9)

    def ran(
        self, rows: int, requests: int, input_s: float, compute_s: float, output_s: float
    ) -> None:
        self.execution_count += 1
        self.inference_count += rows
        self.last_inference_ms = int(time.time() * 1000)
        self.compute_input_count += requests
        self.compute_input_ns += int(input_s * 1e9) * requests
        self.compute_infer_count += requests
        self.compute_infer_ns += int(compute_s * 1e9) * requests
        self.compute_output_count += requests
        self.compute_output_ns += int(output_s * 1e9) * requests

    def succeeded(self, seconds: float) -> None:
        self.success_count += 1
        self.success_ns += int(seconds * 1e9)

    def failed(self, seconds: float, error: ServingError) -> None:
        self.fail_count += 1
        self.fail_ns += int(seconds * 1e9)

    # The queue's depth and capacity are the metrics' concern.

    def opened(self, capacity_rows: int) -> None:
        pass

    def queued(self, rows: int) -> None:
        pass

    def dequeued(self, rows: int) -> None:
        pass

    # -- exposition --------------------------------------------------------------------------------

    def to_triton(self) -> dict[str, Any]:
        """One entry of Triton's ``model_stats`` list."""
        durations = {
            key: {"count": getattr(self, f"{key}_count"), "ns": getattr(self, f"{key}_ns")}
            for key in _DURATIONS
        }
        return {
            "name": self.name,
            "version": self.version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                **durations,
                "cache_hit": {"count": 0, "ns": 0},
                "cache_miss": {"count": 0, "ns": 0},
            },
            "batch_stats": [],
        }
