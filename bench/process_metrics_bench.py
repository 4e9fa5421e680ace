"""What one scrape of the process metrics costs: our /proc reader against psutil, same run.

The process metrics (service/metrics/process.py) describe a worker's whole process tree: CPU time,
resident and virtual memory, open files. This times one collect of them over this process and two
live children, ours and the same figures read with psutil, in interleaved rounds, and prints the
medians and psutil / ours. It is why the server keeps its own reader.

    .venv/bin/python bench/process_metrics_bench.py [--rounds 300]

psutil comes with the ``test`` extra. Exits 0: it is a report.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.metrics.process import ProcessTreeCollector


def with_psutil(root_pid: int) -> float:
    """The same figures as the collector's, through psutil (children found as psutil finds them)."""
    root = psutil.Process(root_pid)
    total = root.create_time()
    for process in (root, *root.children(recursive=True)):
        try:
            with process.oneshot():
                times, memory = process.cpu_times(), process.memory_info()
                total += sum(times[:4]) + memory.rss + memory.vms + process.num_fds()
        except psutil.NoSuchProcess:
            continue
    return total


def median_us(times: list[float]) -> float:
    return statistics.median(times) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300, help="collects of each, interleaved")
    args = parser.parse_args(argv)

    sleep = [sys.executable, "-c", "import time; time.sleep(600)"]
    children = [subprocess.Popen(sleep) for _ in range(2)]
    try:
        time.sleep(0.5)
        pid = os.getpid()
        collector = ProcessTreeCollector(pid)
        readers: dict[str, Callable[[], object]] = {
            "ours": lambda: list(collector.collect()),
            "psutil": lambda: with_psutil(pid),
        }
        runs: dict[str, list[float]] = {name: [] for name in readers}
        for _ in range(args.rounds):
            for name, read in readers.items():
                started = time.perf_counter()
                read()
                runs[name].append(time.perf_counter() - started)
    finally:
        for child in children:
            child.kill()
            child.wait()
    print(
        f"one collect over 3 processes ({len(psutil.pids())} on this machine), "
        f"{args.rounds} interleaved rounds, medians:"
    )
    for name, times in runs.items():
        print(f"  {name:<7} {median_us(times):8.1f} us")
    print(f"  psutil / ours: {median_us(runs['psutil']) / median_us(runs['ours']):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
