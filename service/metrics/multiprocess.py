"""Metrics across worker processes: prometheus-client's multiprocess mode, set up by the supervisor.

``recserve serve --workers N`` creates a fresh directory, names it in ``PROMETHEUS_MULTIPROC_DIR``
before it starts the workers (prometheus-client reads the variable when it is first imported), and
removes it when it stops. Each worker writes its values to files there; whichever worker answers
``GET /metrics`` reads them all:

- counters and histograms are summed over every worker that ever ran, so totals survive a worker
  restart;
- gauges combine over live workers only (``livesum``: queue rows, capacity, in-flight requests;
  ``livemax``: loaded state): the supervisor calls :func:`worker_exited` for each worker that exits,
  which drops that worker's gauge files;
- ``process_*`` describe the supervisor and its workers together
  (:class:`service.metrics.process.ProcessTreeCollector`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from prometheus_client import CollectorRegistry, PlatformCollector
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from service.metrics.process import ProcessTreeCollector

ENV = "PROMETHEUS_MULTIPROC_DIR"


def shared_dir() -> Path | None:
    """The directory workers share their metrics through, or None in a single process."""
    value = os.environ.get(ENV)
    return Path(value) if value else None


def create_shared_dir() -> Path:
    """A fresh, empty directory for this server's workers, named in the environment."""
    directory = Path(tempfile.mkdtemp(prefix="recserve-metrics-"))
    os.environ[ENV] = str(directory)
    return directory


def remove_shared_dir(directory: Path) -> None:
    """Remove the directory and its name from the environment (after the workers stopped)."""
    if os.environ.get(ENV) == str(directory):
        del os.environ[ENV]
    shutil.rmtree(directory, ignore_errors=True)


def worker_exited(directory: Path, pid: int) -> None:
    """Forget an exited worker's gauges; its counters and histograms stay in the totals."""
    mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]


def scrape_registry(directory: Path, supervisor_pid: int | None) -> CollectorRegistry:
    """What a worker serves: every worker's values, and the process tree under the supervisor
    (no ``process_*`` metrics when the supervisor is unknown)."""
    registry = CollectorRegistry(auto_describe=True)
    MultiProcessCollector(registry, str(directory))  # type: ignore[no-untyped-call]
    PlatformCollector(registry=registry)
    if supervisor_pid is not None:
        registry.register(ProcessTreeCollector(supervisor_pid))
    return registry
