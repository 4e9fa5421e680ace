"""Server settings: defaults chosen from the machine (workers, ONNX Runtime threads, cores)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from service import cli as service_cli
from service import settings as settings_module
from service.cores import cgroup_cpu_quota, usable_cores
from service.runtime import provider as runtime_provider
from service.settings import BatchingSettings, Settings, auto_intra_op_threads


@pytest.fixture
def eight_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings_module, "usable_cores", lambda: 8)


def gpu_present(monkeypatch: pytest.MonkeyPatch, present: bool) -> None:
    """What the driver probe of the runtime finds, without asking a driver."""
    found = (present, "1 GPU(s) found, using GPU 0" if present else "no GPU here")
    monkeypatch.setattr(runtime_provider, "_probe_cached", lambda _: found)


@pytest.mark.parametrize(
    ("cores", "workers", "threads"),
    [(1, 1, 1), (2, 1, 1), (2, 2, 1), (4, 1, 3), (4, 2, 1), (16, 4, 3), (16, 1, 15), (3, 8, 1)],
)
def test_auto_threads_leave_each_worker_a_core_for_its_event_loop(
    cores: int, workers: int, threads: int
) -> None:
    assert auto_intra_op_threads(workers, cores) == threads


@pytest.mark.usefixtures("eight_cores")
def test_zero_threads_resolve_to_the_auto_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(workers=1).ort_intra_op_threads == 7
    assert Settings(workers=2).ort_intra_op_threads == 3
    assert Settings(workers=2, ort_intra_op_threads=5).ort_intra_op_threads == 5
    monkeypatch.setenv("RECSERVE_ORT_INTRA_OP_THREADS", "2")
    assert Settings().ort_intra_op_threads == 2


@pytest.mark.usefixtures("eight_cores")
def test_on_the_cpu_a_worker_per_usable_core_each_with_one_onnx_thread() -> None:
    settings = Settings(provider="cpu")
    assert (settings.workers, settings.ort_intra_op_threads) == (8, 1)
    assert settings.workers_reason == "8 workers: 8 usable cores, CPU provider"


@pytest.mark.usefixtures("eight_cores")
def test_auto_without_a_gpu_is_the_cpu_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu_present(monkeypatch, False)
    settings = Settings()
    assert (settings.workers, settings.ort_intra_op_threads) == (8, 1)
    assert settings.workers_reason == "8 workers: 8 usable cores, CPU provider"


@pytest.mark.usefixtures("eight_cores")
@pytest.mark.parametrize(
    ("provider", "why"),
    [("cuda", "CUDA provider"), ("auto", "CUDA provider (auto: a GPU is present)")],
)
def test_on_cuda_one_worker_keeps_the_cores_for_its_threads(
    monkeypatch: pytest.MonkeyPatch, provider: settings_module.Provider, why: str
) -> None:
    gpu_present(monkeypatch, True)
    settings = Settings(provider=provider)
    assert (settings.workers, settings.ort_intra_op_threads) == (1, 7)
    assert settings.workers_reason == f"1 worker: {why}"


@pytest.mark.usefixtures("eight_cores")
def test_explicit_workers_win_over_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu_present(monkeypatch, True)
    assert Settings(provider="cpu", workers=3).workers == 3
    monkeypatch.setenv("RECSERVE_WORKERS", "5")
    settings = Settings(provider="cuda")
    assert (settings.workers, settings.ort_intra_op_threads) == (5, 1)
    assert settings.workers_reason == "5 workers: set by --workers or RECSERVE_WORKERS"


def test_a_worker_rebuilding_its_settings_keeps_the_chosen_count(
    monkeypatch: pytest.MonkeyPatch, eight_cores: None
) -> None:
    from service.server import settings_to_env

    chosen = Settings(provider="cpu")
    monkeypatch.setattr(settings_module, "usable_cores", lambda: 64)  # must not be asked again
    for name, value in settings_to_env(chosen).items():
        monkeypatch.setenv(name, value)
    rebuilt = Settings()
    assert (rebuilt.workers, rebuilt.ort_intra_op_threads) == (8, 1)


def test_help_shows_the_default_this_machine_gets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings_module, "usable_cores", lambda: 6)
    parser = argparse.ArgumentParser(prog="serve")
    service_cli.add_serve_arguments(parser)
    text = " ".join(parser.format_help().split())
    assert "default: 0, which is 6 here with the CPU provider" in text
    assert "1 with CUDA" in text


def test_usable_cores_is_within_the_affinity_mask() -> None:
    assert 1 <= usable_cores() <= len(os.sched_getaffinity(0))


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize(
    ("cpu_max", "cores"), [("150000 100000\n", 2), ("100000 100000\n", 1), ("max 100000\n", None)]
)
def test_a_cgroup_v2_quota_caps_the_cores(tmp_path: Path, cpu_max: str, cores: int | None) -> None:
    write(tmp_path / "proc" / "cgroup", "0::/\n")
    write(tmp_path / "cgroup" / "cpu.max", cpu_max)
    mask = len(os.sched_getaffinity(0))
    expected = mask if cores is None else min(mask, cores)
    assert usable_cores(tmp_path / "proc", tmp_path / "cgroup") == expected


def test_the_tightest_quota_on_the_way_up_applies(tmp_path: Path) -> None:
    # A pod limited to 1.5 CPUs; its container's own cgroup has no limit.
    write(tmp_path / "proc" / "cgroup", "0::/kubepods/pod1/ctr\n")
    write(tmp_path / "cgroup" / "kubepods" / "cpu.max", "max 100000\n")
    write(tmp_path / "cgroup" / "kubepods" / "pod1" / "cpu.max", "150000 100000\n")
    write(tmp_path / "cgroup" / "kubepods" / "pod1" / "ctr" / "cpu.max", "max 100000\n")
    assert cgroup_cpu_quota(tmp_path / "proc" / "cgroup", tmp_path / "cgroup") == 1.5


def test_a_cgroup_v1_quota_counts_too(tmp_path: Path) -> None:
    write(tmp_path / "proc" / "cgroup", "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n")
    # Mounted as the container sees it: its own cgroup at the root of the controller's mount.
    write(tmp_path / "cgroup" / "cpu,cpuacct" / "cpu.cfs_quota_us", "250000\n")
    write(tmp_path / "cgroup" / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_quota(tmp_path / "proc" / "cgroup", tmp_path / "cgroup") == 2.5
    write(tmp_path / "cgroup" / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1\n")
    assert cgroup_cpu_quota(tmp_path / "proc" / "cgroup", tmp_path / "cgroup") is None


def test_no_cgroup_files_mean_no_quota(tmp_path: Path) -> None:
    assert cgroup_cpu_quota(tmp_path / "missing", tmp_path) is None
    write(tmp_path / "proc" / "cgroup", "garbage\n0::/\n")
    write(tmp_path / "cgroup" / "cpu.max", "not numbers\n")
    assert cgroup_cpu_quota(tmp_path / "proc" / "cgroup", tmp_path / "cgroup") is None


def test_the_queue_holds_64_concurrent_whole_catalog_requests() -> None:
    # 64 requests over a 3,706-item catalog (MovieLens-1M) fit without a 503.
    assert BatchingSettings().queue_capacity_rows >= 64 * 3706
