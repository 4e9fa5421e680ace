"""GPU memory and utilisation through NVML, served with the other metrics while a GPU is in use.

Needs ``nvidia-ml-py`` (the ``gpu-metrics`` extra; import name ``pynvml``). Without it, without an
NVIDIA driver, or on the CPU provider there are no GPU metrics and no error. Values are read at
scrape time for the device the CUDA provider runs on, labelled ``gpu`` with its CUDA device id:

- ``recserve_gpu_memory_used_bytes``, ``recserve_gpu_memory_total_bytes``: device memory (all
  processes on the device, as ``nvidia-smi`` shows it);
- ``recserve_gpu_utilization_ratio``: fraction of the last sample period in which a kernel ran.

CUDA device ids follow ``CUDA_VISIBLE_DEVICES`` (indices or ``GPU-`` UUIDs); NVML numbers all
devices, so the id is mapped through it.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterable
from types import ModuleType
from typing import Any

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)


class GpuCollector(Collector):
    """Reads one device's memory and utilisation from NVML at each scrape."""

    def __init__(self, nvml: ModuleType, handle: Any, label: str) -> None:
        self._nvml = nvml
        self._handle = handle
        self._label = label
        self._failing = False

    def collect(self) -> Iterable[Metric]:
        nvml = self._nvml
        try:
            memory = nvml.nvmlDeviceGetMemoryInfo(self._handle)
            utilization = nvml.nvmlDeviceGetUtilizationRates(self._handle)
        except nvml.NVMLError as exc:
            if not self._failing:
                log.warning("GPU %s: NVML query failed (%s); GPU metrics absent", self._label, exc)
            self._failing = True
            return []
        if self._failing:
            log.info("GPU %s: NVML answers again", self._label)
            self._failing = False
        families = [
            ("recserve_gpu_memory_used_bytes", "GPU memory in use, in bytes.", memory.used),
            ("recserve_gpu_memory_total_bytes", "GPU memory, in bytes.", memory.total),
            (
                "recserve_gpu_utilization_ratio",
                "Fraction of the last sample period in which a GPU kernel ran.",
                utilization.gpu / 100.0,
            ),
        ]
        metrics: list[Metric] = []
        for name, documentation, value in families:
            family = GaugeMetricFamily(name, documentation, labels=("gpu",))
            family.add_metric((self._label,), float(value))
            metrics.append(family)
        return metrics

    def close(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError as exc:
            log.debug("nvmlShutdown failed: %s", exc)


def nvml_device(cuda_device_id: int, visible: str | None) -> int | str | None:
    """The NVML index (int) or UUID (str) of a CUDA device id under ``CUDA_VISIBLE_DEVICES``;
    None when the setting names it in a form NVML cannot look up (MIG instances)."""
    if visible is None:
        return cuda_device_id
    entries = [entry.strip() for entry in visible.split(",") if entry.strip()]
    if cuda_device_id >= len(entries):
        return None
    entry = entries[cuda_device_id]
    if entry.isdigit():
        return int(entry)
    if entry.startswith("GPU-"):
        return entry
    return None


def open_gpu_collector(cuda_device_id: int) -> GpuCollector | None:
    """A collector for the CUDA device, or None (logged) when NVML cannot be used."""
    try:
        nvml = importlib.import_module("pynvml")
    except ImportError:
        log.info("GPU metrics off: nvidia-ml-py is not installed (extra 'gpu-metrics')")
        return None
    device = nvml_device(cuda_device_id, os.environ.get("CUDA_VISIBLE_DEVICES"))
    if device is None:
        log.warning(
            "GPU metrics off: CUDA device %d under CUDA_VISIBLE_DEVICES=%s has no NVML handle",
            cuda_device_id,
            os.environ.get("CUDA_VISIBLE_DEVICES"),
        )
        return None
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        log.warning("GPU metrics off: NVML cannot start (%s)", exc)
        return None
    try:
        if isinstance(device, int):
            handle = nvml.nvmlDeviceGetHandleByIndex(device)
        else:
            handle = nvml.nvmlDeviceGetHandleByUUID(device)
    except nvml.NVMLError as exc:
        log.warning("GPU metrics off: NVML has no device %s (%s)", device, exc)
        nvml.nvmlShutdown()
        return None
    log.info("GPU metrics on for CUDA device %d (NVML device %s)", cuda_device_id, device)
    return GpuCollector(nvml, handle, str(cuda_device_id))
