"""Prometheus metric families of the server, in a registry per app (design.md §6).

Base units, ``recserve_`` prefix, labels ``model`` and ``version`` (``endpoint`` and ``code`` where
they apply). No label ever carries a raw id, a path or another unbounded value.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# 100 µs to 10 s, roughly x2.5 per step: fine enough for a p99 within one bucket's width.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
)  # fmt: skip
ROW_BUCKETS = tuple(float(2**i) for i in range(0, 17))  # 1 .. 65,536 rows
REQUEST_COUNT_BUCKETS = tuple(float(2**i) for i in range(0, 11))  # 1 .. 1,024 requests
LOAD_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

MODEL_LABELS = ("model", "version")


class Metrics:
    """All metric families; one instance per app, registered in its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "recserve_requests",
            "Requests answered, by endpoint and HTTP status code.",
            ("model", "version", "endpoint", "code"),
            registry=r,
        )
        self.request_duration = Histogram(
            "recserve_request_duration_seconds",
            "End-to-end request duration, from body received to response ready.",
            ("model", "version", "endpoint"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "recserve_queue_wait_seconds",
            "Time a request's rows waited in the batch queue before their batch started.",
            MODEL_LABELS,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.compute_duration = Histogram(
            "recserve_compute_duration_seconds",
            "Duration of one ONNX Runtime run over a batch.",
            MODEL_LABELS,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_rows = Histogram(
            "recserve_batch_rows",
            "Rows per ONNX Runtime run.",
            MODEL_LABELS,
            buckets=ROW_BUCKETS,
            registry=r,
        )
        self.batch_requests = Histogram(
            "recserve_batch_requests",
            "Requests (or request slices) per ONNX Runtime run.",
            MODEL_LABELS,
            buckets=REQUEST_COUNT_BUCKETS,
            registry=r,
        )
        self.queue_rows = Gauge(
            "recserve_queue_rows", "Rows waiting in the batch queue.", MODEL_LABELS, registry=r
        )
        self.queue_capacity_rows = Gauge(
            "recserve_queue_capacity_rows",
            "Rows the batch queue holds before requests are refused.",
            MODEL_LABELS,
            registry=r,
        )
        self.inflight = Gauge(
            "recserve_inflight_requests",
            "Requests being processed.",
            ("endpoint",),
            registry=r,
        )
        self.model_loaded = Gauge(
            "recserve_model_loaded",
            "1 while the model version is loaded and serving, else 0.",
            MODEL_LABELS,
            registry=r,
        )
        self.model_load_duration = Histogram(
            "recserve_model_load_duration_seconds",
            "Time to load and warm up a model version.",
            ("model",),
            buckets=LOAD_BUCKETS,
            registry=r,
        )
        self.model_load_failures = Counter(
            "recserve_model_load_failures",
            "Model versions that failed to load.",
            ("model",),
            registry=r,
        )
        self.unknown_ids = Counter(
            "recserve_unknown_ids",
            "Ids not in the version's vocabulary, served from the unknown-id row.",
            ("model", "version", "kind"),
            registry=r,
        )
