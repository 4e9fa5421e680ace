"""process_* metrics of a process tree, over a made-up /proc and over this machine's."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from service.metrics.process import ProcessTreeCollector, ProcStat

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = resource.getpagesize()
BOOT = 1_700_000_000


def stat_line(pid: int, ppid: int, utime: int, stime: int, cutime: int, cstime: int,
              start: int, vsize: int, rss: int) -> str:  # fmt: skip
    # Fields 1..24 of /proc/<pid>/stat; the command name holds a space and a parenthesis.
    fields = [str(pid), "(py thon) x)", "S", str(ppid)] + ["0"] * 9
    fields += [str(utime), str(stime), str(cutime), str(cstime)] + ["0"] * 4
    fields += [str(start), str(vsize), str(rss)]
    return " ".join(fields) + " 0 0 0\n"


def make_proc(root: Path, processes: Mapping[int, tuple[int, ...]], fds: dict[int, int],
              children_files: bool = True) -> None:  # fmt: skip
    """``processes``: pid -> (ppid, utime, stime, cutime, cstime, start, vsize, rss)."""
    (root / "stat").write_text(f"cpu 1 2 3\nbtime {BOOT}\n")
    for pid, (ppid, *rest) in processes.items():
        directory = root / str(pid)
        (directory / "task" / str(pid)).mkdir(parents=True)
        (directory / "stat").write_text(stat_line(pid, ppid, *rest))
        (directory / "fd").mkdir()
        for fd in range(fds.get(pid, 0)):
            (directory / "fd" / str(fd)).touch()
        (directory / "limits").write_text(
            "Limit                     Soft Limit           Hard Limit           Units\n"
            "Max open files            4096                 8192                 files\n"
        )
        if children_files:
            kids = [str(p) for p, (parent, *_) in processes.items() if parent == pid]
            (directory / "task" / str(pid) / "children").write_text(" ".join(kids))


TREE: dict[int, tuple[int, ...]] = {
    100: (1, 50, 10, 300, 40, 1000, 5_000, 10),  # the supervisor; it reaped a worker
    201: (100, 700, 100, 0, 0, 1100, 70_000, 200),
    202: (100, 600, 90, 5, 5, 1200, 60_000, 150),
    300: (1, 9999, 9999, 0, 0, 1, 1, 1),  # not in the tree
}


def collected(collector: ProcessTreeCollector) -> dict[str, float]:
    return {s.name: s.value for family in collector.collect() for s in family.samples}


@pytest.mark.parametrize("children_files", [True, False], ids=["children-files", "scan"])
def test_tree_sums_its_processes(tmp_path: Path, children_files: bool) -> None:
    make_proc(tmp_path, TREE, {100: 5, 201: 20, 202: 30}, children_files)
    collector = ProcessTreeCollector(100, proc=tmp_path)
    assert collector.children() == [201, 202]
    values = collected(collector)
    cpu_ticks = (50 + 10 + 300 + 40) + (700 + 100) + (600 + 90 + 5 + 5)
    assert values == {
        "process_cpu_seconds_total": pytest.approx(cpu_ticks / TICKS),
        "process_resident_memory_bytes": (10 + 200 + 150) * PAGE,
        "process_virtual_memory_bytes": 5_000 + 70_000 + 60_000,
        "process_start_time_seconds": pytest.approx(BOOT + 1000 / TICKS),
        "process_open_fds": 55,
        "process_max_fds": 4096,
    }


def test_a_child_gone_between_listing_and_reading_is_skipped(tmp_path: Path) -> None:
    make_proc(tmp_path, TREE, {})
    (tmp_path / "100" / "task" / "100" / "children").write_text("201 202 999")
    values = collected(ProcessTreeCollector(100, proc=tmp_path))
    assert values["process_resident_memory_bytes"] == (10 + 200 + 150) * PAGE


def test_nothing_without_the_root(tmp_path: Path) -> None:
    make_proc(tmp_path, TREE, {})
    assert list(ProcessTreeCollector(12345, proc=tmp_path).collect()) == []


def test_stat_parsing_survives_odd_command_names() -> None:
    stat = ProcStat.parse(stat_line(7, 1, 11, 12, 13, 14, 15, 16, 17).encode())
    assert stat == ProcStat(1, 11, 12, 13, 14, 15, 16, 17)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_real_tree_finds_children_and_keeps_the_cpu_of_reaped_ones() -> None:
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    child = subprocess.Popen([sys.executable, "-c", burn])
    try:
        assert child.pid in ProcessTreeCollector(os.getpid()).children()
    finally:
        child.wait(60)
    times = os.times()
    values = collected(ProcessTreeCollector(os.getpid()))
    assert values["process_cpu_seconds_total"] >= times.children_user + times.children_system
    assert times.children_user + times.children_system >= 0.25


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_real_tree_agrees_with_psutil() -> None:
    """The same figures from an independent reader of /proc, over this process and a child."""
    psutil = pytest.importorskip("psutil")
    idle = "import sys; print('started', flush=True); sys.stdin.read()"
    child = subprocess.Popen([sys.executable, "-c", idle], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"started\n"  # its start-up files are closed by now
        values = collected(ProcessTreeCollector(os.getpid()))
        me = psutil.Process()
        tree = [me, *me.children(recursive=True)]  # the child, and any the test run left running
        assert child.pid in {p.pid for p in tree}
        cpu = sum(sum(p.cpu_times()[:4]) for p in tree)  # user, system and reaped children
        rss = sum(p.memory_info().rss for p in tree)
        assert values["process_cpu_seconds_total"] == pytest.approx(cpu, abs=0.05)
        assert values["process_resident_memory_bytes"] == pytest.approx(rss, rel=0.05)
        assert values["process_virtual_memory_bytes"] == pytest.approx(
            sum(p.memory_info().vms for p in tree), rel=0.05
        )
        assert values["process_open_fds"] == sum(p.num_fds() for p in tree)
        assert values["process_start_time_seconds"] == pytest.approx(
            tree[0].create_time(), abs=0.02
        )
        assert values["process_max_fds"] == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    finally:
        child.communicate(timeout=60)  # closes its stdin, so it exits, and our pipe ends
