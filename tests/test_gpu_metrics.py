"""GPU metrics through NVML, with a stand-in ``pynvml`` (this machine may have no GPU)."""

from __future__ import annotations

import logging
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.metrics.families import Metrics
from service.metrics.gpu import GpuCollector, nvml_device, open_gpu_collector
from service.runtime.provider import CPU, CUDA
from service.settings import Settings
from tests.app_harness import FakeReconciler

GIB = 1024**3


class NVMLError(Exception):
    pass


@dataclass
class Memory:
    used: int
    total: int


@dataclass
class Utilization:
    gpu: int
    memory: int


class FakeNvml(types.ModuleType):
    """The part of ``pynvml`` the collector uses, over devices by index and UUID."""

    NVMLError = NVMLError

    def __init__(self, devices: int = 4, fail_init: bool = False) -> None:
        super().__init__("pynvml")
        self.devices = devices
        self.fail_init = fail_init
        self.fail_queries = False
        self.calls: list[str] = []

    def nvmlInit(self) -> None:
        self.calls.append("init")
        if self.fail_init:
            raise NVMLError("Driver Not Loaded")

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        if index >= self.devices:
            raise NVMLError("Invalid Argument")
        return f"index-{index}"

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> str:
        return f"uuid-{uuid}"

    def nvmlDeviceGetMemoryInfo(self, handle: str) -> Memory:
        if self.fail_queries:
            raise NVMLError("GPU is lost")
        return Memory(used=3 * GIB + len(handle), total=80 * GIB)

    def nvmlDeviceGetUtilizationRates(self, handle: str) -> Utilization:
        return Utilization(gpu=37, memory=12)


@pytest.fixture
def nvml(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeNvml]:
    fake = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    yield fake


def values(collector: GpuCollector) -> dict[tuple[str, str], float]:
    return {
        (sample.name, sample.labels["gpu"]): sample.value
        for family in collector.collect()
        for sample in family.samples
    }


def test_collector_reports_memory_and_utilization_of_the_device(nvml: FakeNvml) -> None:
    collector = open_gpu_collector(1)
    assert collector is not None
    handle_length = len("index-1")
    assert values(collector) == {
        ("recserve_gpu_memory_used_bytes", "1"): 3 * GIB + handle_length,
        ("recserve_gpu_memory_total_bytes", "1"): 80 * GIB,
        ("recserve_gpu_utilization_ratio", "1"): 0.37,
    }
    collector.close()
    assert nvml.calls == ["init", "shutdown"]


def test_cuda_visible_devices_maps_the_id_to_nvml(
    nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaaa,GPU-bbbb")
    collector = open_gpu_collector(1)
    assert collector is not None
    used = values(collector)[("recserve_gpu_memory_used_bytes", "1")]
    assert used == 3 * GIB + len("uuid-GPU-bbbb")


@pytest.mark.parametrize(
    ("device", "visible", "expected"),
    [
        (0, None, 0),
        (2, None, 2),
        (1, "3,2", 2),
        (0, " 5 ", 5),
        (0, "GPU-1b2c", "GPU-1b2c"),
        (1, "0", None),  # not visible
        (0, "MIG-4f6e", None),
        (0, "", None),
    ],
)
def test_nvml_device(device: int, visible: str | None, expected: int | str | None) -> None:
    assert nvml_device(device, visible) == expected


def test_without_nvidia_ml_py_there_is_no_collector(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="service.metrics.gpu")
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import raises ImportError
    assert open_gpu_collector(0) is None
    assert "gpu-metrics" in caplog.text


def test_without_a_driver_there_is_no_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(fail_init=True))
    assert open_gpu_collector(0) is None


def test_without_the_device_there_is_no_collector(nvml: FakeNvml) -> None:
    assert open_gpu_collector(7) is None
    assert nvml.calls == ["init", "shutdown"]


def test_a_failing_device_yields_no_samples_and_recovers(nvml: FakeNvml) -> None:
    collector = open_gpu_collector(0)
    assert collector is not None
    nvml.fail_queries = True
    assert values(collector) == {}
    nvml.fail_queries = False
    assert len(values(collector)) == 3


class CudaReconciler(FakeReconciler):
    provider = CUDA


class CpuReconciler(FakeReconciler):
    provider = CPU


async def scrape(reconciler: Any) -> str:
    app = create_app(Settings(poll_interval_s=0), metrics=Metrics(), reconciler_factory=reconciler)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        return (await client.get("/metrics")).text


@pytest.mark.anyio
async def test_served_on_the_cuda_provider(nvml: FakeNvml) -> None:
    text = await scrape(CudaReconciler)
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {"recserve_gpu_memory_used_bytes", "recserve_gpu_utilization_ratio"} <= names
    assert 'recserve_gpu_utilization_ratio{gpu="0"} 0.37' in text
    assert nvml.calls == ["init", "shutdown"]  # shut down with the app


@pytest.mark.anyio
async def test_absent_on_the_cpu_provider(nvml: FakeNvml) -> None:
    text = await scrape(CpuReconciler)
    assert "recserve_gpu" not in text
    assert nvml.calls == []
