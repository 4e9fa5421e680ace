"""Per-version counters in the shape of Triton's statistics extension (``GET .../stats``).

Counted on the event loop by the batcher; durations in nanoseconds. As in Triton, each request
of a batch is charged the batch's whole compute time.
"""

from __future__ import annotations

from typing import Any


class VersionStats:
    """Cumulative counters of one served model version."""

    __slots__ = (
        "compute_infer_count",
        "compute_infer_ns",
        "compute_input_count",
        "compute_input_ns",
        "compute_output_count",
        "compute_output_ns",
        "execution_count",
        "fail_count",
        "fail_ns",
        "inference_count",
        "last_inference_ms",
        "name",
        "queue_count",
        "queue_ns",
        "success_count",
        "success_ns",
        "version",
    )

    def __init__(self, name: str, version: str) -> None:
        self.name = name
        self.version = version
        self.inference_count = 0  # rows computed
        self.execution_count = 0  # ONNX Runtime runs
        self.last_inference_ms = 0  # wall clock, ms since the epoch
        self.success_count = 0
        self.success_ns = 0
        self.fail_count = 0
        self.fail_ns = 0
        self.queue_count = 0
        self.queue_ns = 0
        self.compute_input_count = 0
        self.compute_input_ns = 0
        self.compute_infer_count = 0
        self.compute_infer_ns = 0
        self.compute_output_count = 0
        self.compute_output_ns = 0

    def to_triton(self) -> dict[str, Any]:
        """One entry of Triton's ``model_stats`` list."""

        def pair(count: int, ns: int) -> dict[str, int]:
            return {"count": count, "ns": ns}

        return {
            "name": self.name,
            "version": self.version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": pair(self.success_count, self.success_ns),
                "fail": pair(self.fail_count, self.fail_ns),
                "queue": pair(self.queue_count, self.queue_ns),
                "compute_input": pair(self.compute_input_count, self.compute_input_ns),
                "compute_infer": pair(self.compute_infer_count, self.compute_infer_ns),
                "compute_output": pair(self.compute_output_count, self.compute_output_ns),
                "cache_hit": pair(0, 0),
                "cache_miss": pair(0, 0),
            },
            "batch_stats": [],
        }
