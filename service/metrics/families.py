"""Prometheus metric families of the server, in a registry per app (design.md §6).

Base units, ``recserve_`` prefix, labels ``model`` and ``version`` (``endpoint`` and ``code`` where
they apply). No label ever carries a raw id, a path or another unbounded value: ``model`` and
``version`` are set only for a version the registry found, ``endpoint`` is a route name.

The request path reaches its children through caches (:meth:`Metrics.observe_request`,
:attr:`Metrics.inflight_by_endpoint`), never through ``.labels()`` with strings per request.

With several worker processes (``recserve serve --workers N``) values live in files shared through
``PROMETHEUS_MULTIPROC_DIR`` and a scrape sums them; see :mod:`service.metrics.multiprocess`.
Gauges name how they combine across workers (``multiprocess_mode``); in a single process it is
ignored.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.registry import Collector

from service.metrics import multiprocess as multiprocess_metrics

# 100 µs to 10 s, roughly x2.5 per step: fine enough for a p99 within one bucket's width.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
)  # fmt: skip
ROW_BUCKETS = tuple(float(2**i) for i in range(0, 17))  # 1 .. 65,536 rows
REQUEST_COUNT_BUCKETS = tuple(float(2**i) for i in range(0, 11))  # 1 .. 1,024 requests
LOAD_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

MODEL_LABELS = ("model", "version")
# Endpoints that run inference: in-flight gauges exist for them from the start, and their
# end-to-end duration is observed in recserve_request_duration_seconds. The app passes the names
# its endpoint table marks as inference (service.endpoints); this default serves a Metrics built
# on its own (tests, tools), and a test holds it equal to the table's.
INFERENCE_ENDPOINTS = ("infer", "recommend", "score")


class _EndpointChildren:
    """The children one (model, version, endpoint) uses per request."""

    __slots__ = ("by_code", "duration", "labels")

    def __init__(self, labels: tuple[str, str, str], duration: Histogram | None) -> None:
        self.labels = labels
        self.duration = duration
        self.by_code: dict[int, Counter] = {}


class Metrics:
    """All metric families; one instance per app, registered in its own registry.

    ``scrape_registry`` is what ``GET /metrics`` serves: the families' own registry plus the
    process collectors, or, with several workers, a registry that reads every worker's values.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        scrape_registry: CollectorRegistry | None = None,
        inference_endpoints: Iterable[str] = INFERENCE_ENDPOINTS,
    ) -> None:
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
            "End-to-end duration of inference requests, from request headers received to "
            "response sent.",
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
            "recserve_queue_rows",
            "Rows waiting in the batch queue.",
            MODEL_LABELS,
            registry=r,
            multiprocess_mode="livesum",
        )
        self.queue_capacity_rows = Gauge(
            "recserve_queue_capacity_rows",
            "Rows the batch queue holds before requests are refused.",
            MODEL_LABELS,
            registry=r,
            multiprocess_mode="livesum",
        )
        self.inflight = Gauge(
            "recserve_inflight_requests",
            "Inference requests being processed.",
            ("endpoint",),
            registry=r,
            multiprocess_mode="livesum",
        )
        self.model_loaded = Gauge(
            "recserve_model_loaded",
            "1 while the model version is loaded and serving, else 0.",
            MODEL_LABELS,
            registry=r,
            multiprocess_mode="livemax",
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
        self.retrieval_index_build = Gauge(
            "recserve_retrieval_index_build_seconds",
            "Time to build the version's retrieval index (two-stage recommend), during its load.",
            MODEL_LABELS,
            registry=r,
            multiprocess_mode="livemax",
        )
        self.retrieval_index_memory = Gauge(
            "recserve_retrieval_index_bytes",
            "Memory the version's retrieval index holds beyond its item vectors.",
            MODEL_LABELS,
            registry=r,
            multiprocess_mode="livesum",
        )
        self.unknown_ids = Counter(
            "recserve_unknown_ids",
            "Ids not in the version's vocabulary, served from the unknown-id row.",
            ("model", "version", "kind"),
            registry=r,
        )
        # Values in files shared by worker processes (prometheus-client decides on import).
        self.shared = multiprocess_metrics.shared_dir() is not None
        if scrape_registry is None:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            scrape_registry = r
        self.scrape_registry = scrape_registry
        # Present (at 0) before the first request, so that an autoscaler always reads a value.
        self.inflight_by_endpoint: dict[str, Gauge] = {
            endpoint: self.inflight.labels(endpoint) for endpoint in inference_endpoints
        }
        self._endpoints: dict[tuple[str, str, str], _EndpointChildren] = {}

    @classmethod
    def for_process(
        cls,
        supervisor_pid: int | None = None,
        *,
        inference_endpoints: Iterable[str] = INFERENCE_ENDPOINTS,
    ) -> Metrics:
        """The metrics of a server process: multiprocess collection when
        ``PROMETHEUS_MULTIPROC_DIR`` is set (a worker), else a registry of its own."""
        directory = multiprocess_metrics.shared_dir()
        if directory is None:
            return cls(inference_endpoints=inference_endpoints)
        return cls(
            scrape_registry=multiprocess_metrics.scrape_registry(directory, supervisor_pid),
            inference_endpoints=inference_endpoints,
        )

    # -- the request path --------------------------------------------------------------------------

    def observe_request(
        self, model: str, version: str, endpoint: str, code: int, seconds: float
    ) -> None:
        """Count one answered request; time it if it ran inference on a found model version."""
        children = self._endpoints.get((model, version, endpoint))
        if children is None:
            children = self._endpoint_children(model, version, endpoint)
        counter = children.by_code.get(code)
        if counter is None:
            counter = children.by_code[code] = self.requests.labels(*children.labels, str(code))
        counter.inc()
        if children.duration is not None:
            children.duration.observe(seconds)

    def _endpoint_children(self, model: str, version: str, endpoint: str) -> _EndpointChildren:
        labels = (model, version, endpoint)
        timed = bool(model) and endpoint in self.inflight_by_endpoint
        duration = self.request_duration.labels(*labels) if timed else None
        children = self._endpoints[labels] = _EndpointChildren(labels, duration)
        return children

    # -- model lifecycle ---------------------------------------------------------------------------

    def model_discovered(self, model: str) -> None:
        """Start a model's load counters at 0, so that the first failure is an increase."""
        self.model_load_failures.labels(model)
        self.model_load_duration.labels(model)

    def version_unloaded(self, model: str, version: str) -> None:
        """Mark a version unloaded and drop its queue gauges and cached children.

        With several workers a child cannot be removed from the shared files: the gauges stay at
        0 there (a zero capacity drops out of the saturation ratio).
        """
        labels = (model, version)
        self.model_loaded.labels(*labels).set(0)
        retrieval = (self.retrieval_index_build, self.retrieval_index_memory)
        for gauge in (self.queue_rows, self.queue_capacity_rows, *retrieval):
            gauge.labels(*labels).set(0)
            if not self.shared:
                gauge.remove(*labels)
        for key in [key for key in self._endpoints if key[:2] == labels]:
            del self._endpoints[key]

    # -- exposition --------------------------------------------------------------------------------

    def add_collector(self, collector: Collector) -> None:
        """Serve another collector's metrics (GPU) with these."""
        self.scrape_registry.register(collector)

    def remove_collector(self, collector: Collector) -> None:
        self.scrape_registry.unregister(collector)

    def exposition(self) -> bytes:
        """The text ``GET /metrics`` answers with."""
        return generate_latest(self.scrape_registry)
