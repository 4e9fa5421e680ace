"""The metric families: names, types, labels and buckets; cached children; lifecycle helpers."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from service.metrics.families import INFERENCE_ENDPOINTS, LATENCY_BUCKETS, Metrics
from service.metrics.multiprocess import ENV

# The contract the dashboards, rules and autoscaler rely on: name -> (type, labels).
FAMILIES = {
    "recserve_requests": ("counter", ("model", "version", "endpoint", "code")),
    "recserve_request_duration_seconds": ("histogram", ("model", "version", "endpoint")),
    "recserve_queue_wait_seconds": ("histogram", ("model", "version")),
    "recserve_compute_duration_seconds": ("histogram", ("model", "version")),
    "recserve_batch_rows": ("histogram", ("model", "version")),
    "recserve_batch_requests": ("histogram", ("model", "version")),
    "recserve_queue_rows": ("gauge", ("model", "version")),
    "recserve_queue_capacity_rows": ("gauge", ("model", "version")),
    "recserve_inflight_requests": ("gauge", ("endpoint",)),
    "recserve_model_loaded": ("gauge", ("model", "version")),
    "recserve_model_load_duration_seconds": ("histogram", ("model",)),
    "recserve_model_load_failures": ("counter", ("model",)),
    "recserve_unknown_ids": ("counter", ("model", "version", "kind")),
    "recserve_retrieval_index_build_seconds": ("gauge", ("model", "version")),
    "recserve_retrieval_index_bytes": ("gauge", ("model", "version")),
}


def families(metrics: Metrics) -> dict[str, MetricWrapperBase]:
    return {
        family._name: family  # no public accessor
        for family in vars(metrics).values()
        if isinstance(family, MetricWrapperBase)
    }


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_families_names_types_and_labels() -> None:
    found = {
        name: (family._type, tuple(family._labelnames))
        for name, family in families(Metrics()).items()
    }
    assert found == FAMILIES


def test_latency_histograms_span_100_microseconds_to_10_seconds() -> None:
    assert (LATENCY_BUCKETS[0], LATENCY_BUCKETS[-1]) == (0.0001, 10.0)
    assert list(LATENCY_BUCKETS) == sorted(LATENCY_BUCKETS)
    assert all(b / a <= 2.5 for a, b in itertools.pairwise(LATENCY_BUCKETS))
    for name in (
        "recserve_request_duration_seconds",
        "recserve_queue_wait_seconds",
        "recserve_compute_duration_seconds",
    ):
        family = families(Metrics())[name]
        assert isinstance(family, Histogram)
        assert tuple(family._upper_bounds[:-1]) == LATENCY_BUCKETS  # last is +Inf


def test_gauges_say_how_workers_combine() -> None:
    modes = {
        name: family._multiprocess_mode
        for name, family in families(Metrics()).items()
        if isinstance(family, Gauge)
    }
    assert modes == {
        "recserve_queue_rows": "livesum",
        "recserve_queue_capacity_rows": "livesum",
        "recserve_inflight_requests": "livesum",
        "recserve_model_loaded": "livemax",
        "recserve_retrieval_index_build_seconds": "livemax",
        "recserve_retrieval_index_bytes": "livesum",
    }


def test_each_instance_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.observe_request("m", "1", "score", 200, 0.01)
    assert sample(first, "recserve_requests_total", model="m", version="1", endpoint="score",
                  code="200") == 1  # fmt: skip
    assert sample(second, "recserve_requests_total", model="m", version="1", endpoint="score",
                  code="200") is None  # fmt: skip


def test_inflight_gauges_exist_at_zero_before_any_request() -> None:
    metrics = Metrics()
    for endpoint in INFERENCE_ENDPOINTS:
        assert sample(metrics, "recserve_inflight_requests", endpoint=endpoint) == 0
    text = metrics.exposition().decode()
    assert 'recserve_inflight_requests{endpoint="score"} 0.0' in text


def test_exposition_includes_process_metrics() -> None:
    names = {
        family.name for family in text_string_to_metric_families(Metrics().exposition().decode())
    }
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "python_info"} <= names


def test_observe_request_counts_every_request_and_times_inference_only() -> None:
    metrics = Metrics()
    metrics.observe_request("m", "1", "score", 200, 0.003)
    metrics.observe_request("m", "1", "score", 200, 0.004)
    metrics.observe_request("m", "1", "score", 400, 0.001)
    metrics.observe_request("m", "1", "model_ready", 200, 0.001)
    metrics.observe_request("", "", "score", 503, 0.001)  # refused before a model was found
    counts = {
        (labels["endpoint"], labels["code"]): value
        for labels, value in _samples(metrics, "recserve_requests_total")
    }
    assert counts == {("score", "200"): 2, ("score", "400"): 1, ("model_ready", "200"): 1,
                      ("score", "503"): 1}  # fmt: skip
    timed = dict(
        ((labels["model"], labels["endpoint"]), value)
        for labels, value in _samples(metrics, "recserve_request_duration_seconds_count")
    )
    assert timed == {("m", "score"): 3}
    total = sample(metrics, "recserve_request_duration_seconds_sum", model="m", version="1",
                   endpoint="score")  # fmt: skip
    assert total == pytest.approx(0.008)


def _samples(metrics: Metrics, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (s.labels, s.value)
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name == name
    ]


def test_observe_request_looks_labels_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = Metrics()
    calls: list[tuple[Any, ...]] = []
    for family in (metrics.requests, metrics.request_duration):
        original = family.labels

        def counting(*values: Any, _original: Any = original) -> Any:
            calls.append(values)
            return _original(*values)

        monkeypatch.setattr(family, "labels", counting)
    for _ in range(3):
        metrics.observe_request("m", "1", "infer", 200, 0.01)
    assert len(calls) == 2  # one counter child, one histogram child
    metrics.observe_request("m", "1", "infer", 503, 0.01)
    assert len(calls) == 3


def test_model_discovered_starts_load_counters_at_zero() -> None:
    metrics = Metrics()
    assert sample(metrics, "recserve_model_load_failures_total", model="m") is None
    metrics.model_discovered("m")
    assert sample(metrics, "recserve_model_load_failures_total", model="m") == 0
    assert sample(metrics, "recserve_model_load_duration_seconds_count", model="m") == 0


def test_version_unloaded_zeroes_loaded_and_drops_queue_gauges() -> None:
    metrics = Metrics()
    metrics.model_loaded.labels("m", "1").set(1)
    metrics.queue_rows.labels("m", "1").set(5)
    metrics.queue_capacity_rows.labels("m", "1").set(100)
    metrics.queue_capacity_rows.labels("m", "2").set(100)
    metrics.observe_request("m", "1", "score", 200, 0.01)
    metrics.version_unloaded("m", "1")
    assert sample(metrics, "recserve_model_loaded", model="m", version="1") == 0
    assert sample(metrics, "recserve_queue_rows", model="m", version="1") is None
    assert sample(metrics, "recserve_queue_capacity_rows", model="m", version="1") is None
    assert sample(metrics, "recserve_queue_capacity_rows", model="m", version="2") == 100
    # Counters keep their totals; the cached children are rebuilt on the next request.
    metrics.observe_request("m", "1", "score", 200, 0.01)
    assert sample(metrics, "recserve_requests_total", model="m", version="1", endpoint="score",
                  code="200") == 2  # fmt: skip


def test_version_unloaded_keeps_zeroed_gauges_when_workers_share_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(ENV, str(tmp_path))  # values stay in memory: the client was imported first
    metrics = Metrics()
    assert metrics.shared
    metrics.queue_capacity_rows.labels("m", "1").set(100)
    metrics.version_unloaded("m", "1")  # no warning (warnings are errors here)
    assert sample(metrics, "recserve_queue_capacity_rows", model="m", version="1") == 0


def test_collectors_can_be_added_and_removed() -> None:
    class One(Collector):
        def collect(self) -> list[Metric]:
            return [GaugeMetricFamily("extra_gauge", "An extra gauge.", value=7)]

    metrics = Metrics()
    collector = One()
    metrics.add_collector(collector)
    assert "extra_gauge 7.0" in metrics.exposition().decode()
    metrics.remove_collector(collector)
    assert "extra_gauge" not in metrics.exposition().decode()
