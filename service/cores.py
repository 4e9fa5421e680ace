"""The CPU cores this process may use: its affinity mask, capped by its cgroup's CPU quota.

A container limited to 2 CPUs on a 64-core node sees 64 cores in ``os.cpu_count()`` and usually
in its affinity mask too; only the quota of its cgroup says 2. Worker processes and ONNX Runtime
threads sized from the 64 would be throttled by the kernel and wait on each other, so the server
sizes them from what this module finds.

The quota is read for the cgroup named in ``/proc/self/cgroup`` and each of its ancestors (a limit
on a parent applies to its children), in cgroup v2 (``cpu.max``) and v1 (``cpu.cfs_quota_us``).
Inside a container the cgroup's own directory is usually mounted as the root, which the walk up
reaches as well. A quota of 1.5 CPUs counts as 2 cores: the half core is still usable.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path

PROC_SELF = Path("/proc/self")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def usable_cores(proc_self: Path = PROC_SELF, cgroup_root: Path = CGROUP_ROOT) -> int:
    """Cores this process may use: the affinity mask, capped by the cgroup CPU quota; >= 1."""
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:  # not Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota(proc_self / "cgroup", cgroup_root)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def cgroup_cpu_quota(cgroup_file: Path, cgroup_root: Path) -> float | None:
    """The tightest CPU quota, in CPUs, on this process's cgroup and its ancestors; None: none."""
    try:
        lines = cgroup_file.read_text().splitlines()
    except OSError:
        return None
    quotas: list[float] = []
    for line in lines:
        fields = line.split(":", 2)  # hierarchy-id:controllers:path
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if controllers == "":  # cgroup v2: one hierarchy, mounted at the root
            quotas += _quotas(cgroup_root, path, _v2_quota)
        elif "cpu" in controllers.split(","):  # cgroup v1: the cpu controller's own mount
            for mount in (cgroup_root / controllers, cgroup_root / "cpu"):
                if mount.is_dir():
                    quotas += _quotas(mount, path, _v1_quota)
                    break
    return min(quotas) if quotas else None


def _quotas(mount: Path, path: str, read: Callable[[Path], float | None]) -> Iterator[float]:
    """The quotas found in the cgroup directory ``path`` under ``mount`` and its ancestors."""
    directory = mount / path.strip("/")
    for candidate in (directory, *directory.parents):
        if candidate != mount and mount not in candidate.parents:
            break
        quota = read(candidate)
        if quota is not None:
            yield quota


def _v2_quota(directory: Path) -> float | None:
    """``cpu.max`` holds "<quota> <period>" in microseconds, or "max <period>" for none."""
    try:
        quota, period = (directory / "cpu.max").read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        return None


def _v1_quota(directory: Path) -> float | None:
    """``cpu.cfs_quota_us`` is -1 for none; ``cpu.cfs_period_us`` beside it."""
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError, ZeroDivisionError):
        return None
