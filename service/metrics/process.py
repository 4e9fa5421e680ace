"""``process_*`` metrics of a whole process tree: a supervisor and its worker processes as one.

With several workers any one of them answers a scrape, so per-process figures would jump between
workers from scrape to scrape. This collector reports the tree under the supervisor instead, with
the standard names and no extra labels: CPU time of the supervisor, of its live children and of
the children it has reaped (so the counter does not fall when a worker is restarted), memory and
file descriptors summed over the live processes, and the supervisor's start time and fd limit.
Linux ``/proc`` only; elsewhere it yields nothing.

It reads ``/proc`` itself rather than through psutil, because that is measurably cheaper per
scrape: over a supervisor with two children, medians of interleaved runs were 0.39 ms here,
1.9 ms with psutil (whose ``children()`` reads the stat file of every process on the host) and
0.49 ms with psutil per process beside the children list below. The tests check the figures
against psutil's.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

try:
    import resource

    _PAGE_SIZE = resource.getpagesize()
except ImportError:  # not Unix
    _PAGE_SIZE = 4096


@dataclass(frozen=True)
class ProcStat:
    """The fields of ``/proc/<pid>/stat`` the collector uses (times in clock ticks)."""

    ppid: int
    utime: int
    stime: int
    cutime: int  # reaped children, theirs included
    cstime: int
    start_ticks: int
    vsize: int
    rss_pages: int

    @classmethod
    def parse(cls, text: bytes) -> ProcStat:
        # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
        fields = text.rsplit(b")", 1)[1].split()
        return cls(*(int(fields[index]) for index in _STAT_INDICES))


# Where ProcStat's fields sit in /proc/<pid>/stat after the command name (proc(5), counted from
# 0), in the order the fields are declared.
_STAT_INDICES = (1, 11, 12, 13, 14, 19, 20, 21)


class ProcessTreeCollector(Collector):
    """Standard ``process_*`` metrics for ``root_pid`` and its children, summed."""

    def __init__(self, root_pid: int, proc: Path = Path("/proc")) -> None:
        self.root_pid = root_pid
        self._proc = proc
        self._ticks = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
        self._boot_time = self._read_boot_time()

    def _read_boot_time(self) -> float | None:
        try:
            with open(self._proc / "stat", "rb") as stat:
                for line in stat:
                    if line.startswith(b"btime "):
                        return float(line.split()[1])
        except OSError:
            pass
        return None

    def _stat(self, pid: int) -> ProcStat | None:
        try:
            return ProcStat.parse((self._proc / str(pid) / "stat").read_bytes())
        except (OSError, ValueError, IndexError):
            return None  # exited meanwhile

    def children(self) -> list[int]:
        """Pids of the root's children (from the kernel's per-thread lists, else a scan)."""
        found: set[int] = set()
        listed = False
        try:
            tasks = list((self._proc / str(self.root_pid) / "task").iterdir())
        except OSError:
            tasks = []
        for task in tasks:
            try:
                found.update(int(pid) for pid in (task / "children").read_text().split())
                listed = True
            except (OSError, ValueError):
                continue
        if listed:
            return sorted(found)
        try:
            entries = [entry.name for entry in self._proc.iterdir() if entry.name.isdigit()]
        except OSError:
            return []
        for name in entries:
            stat = self._stat(int(name))
            if stat is not None and stat.ppid == self.root_pid:
                found.add(int(name))
        return sorted(found)

    def _open_fds(self, pid: int) -> int:
        try:
            return len(os.listdir(self._proc / str(pid) / "fd"))
        except OSError:
            return 0

    def _max_fds(self) -> float | None:
        try:
            with open(self._proc / str(self.root_pid) / "limits", "rb") as limits:
                for line in limits:
                    if line.startswith(b"Max open files"):
                        return float(line.split()[3])
        except (OSError, ValueError, IndexError):
            pass
        return None

    def collect(self) -> Iterable[Metric]:
        root = self._stat(self.root_pid)
        if root is None or self._boot_time is None:
            return []
        pids = [self.root_pid]
        stats = [root]
        for pid in self.children():
            stat = self._stat(pid)
            if stat is not None:
                pids.append(pid)
                stats.append(stat)
        ticks = sum(s.utime + s.stime + s.cutime + s.cstime for s in stats)
        metrics: list[Metric] = [
            CounterMetricFamily(
                "process_cpu_seconds_total",
                "Total user and system CPU time of the server's processes, in seconds.",
                value=ticks / self._ticks,
            ),
            GaugeMetricFamily(
                "process_resident_memory_bytes",
                "Resident memory of the server's processes, summed, in bytes.",
                value=float(sum(s.rss_pages for s in stats) * _PAGE_SIZE),
            ),
            GaugeMetricFamily(
                "process_virtual_memory_bytes",
                "Virtual memory of the server's processes, summed, in bytes.",
                value=float(sum(s.vsize for s in stats)),
            ),
            GaugeMetricFamily(
                "process_start_time_seconds",
                "Start time of the server's supervisor process since the Unix epoch, in seconds.",
                value=self._boot_time + root.start_ticks / self._ticks,
            ),
            GaugeMetricFamily(
                "process_open_fds",
                "Open file descriptors of the server's processes, summed.",
                value=float(sum(self._open_fds(pid) for pid in pids)),
            ),
        ]
        max_fds = self._max_fds()
        if max_fds is not None:
            metrics.append(
                GaugeMetricFamily(
                    "process_max_fds",
                    "Maximum number of open file descriptors of the supervisor process.",
                    value=max_fds,
                )
            )
        return metrics
