"""Metrics across worker processes: values from every worker in one scrape, and a worker restart
that keeps the counters' totals and forgets the dead worker's gauges."""

from __future__ import annotations

import multiprocessing
import os
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.metrics.families import Metrics
from service.metrics.multiprocess import ENV, create_shared_dir, remove_shared_dir, worker_exited
from service.settings import BatchingSettings
from tests.factories import publish_random_version
from tests.server_process import ServerProcess, start_server

SCORE = {"user_id": "u1", "item_ids": ["i1", "i2"]}
CAPACITY = BatchingSettings().queue_capacity_rows


def value(text: str, name: str, **labels: str) -> float | None:
    """The sample ``name`` whose labels include ``labels``; None if absent (at most one)."""
    found = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    ]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


def _worker(requests: int, queued_rows: int) -> None:
    """A worker process's share of the metrics (runs with the shared directory set)."""
    metrics = Metrics()
    for _ in range(requests):
        metrics.observe_request("m", "1", "score", 200, 0.01)
    metrics.queue_rows.labels("m", "1").set(queued_rows)
    metrics.model_loaded.labels("m", "1").set(1)
    metrics.inflight_by_endpoint["score"].inc()


def test_values_of_all_workers_are_combined(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, str(tmp_path))
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_worker, args=(3, 5)),
        context.Process(target=_worker, args=(4, 7)),
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    metrics = Metrics.for_process()
    text = metrics.exposition().decode()
    labels = {"model": "m", "version": "1"}
    assert value(text, "recserve_requests_total", endpoint="score", code="200", **labels) == 7
    assert value(text, "recserve_request_duration_seconds_count", endpoint="score", **labels) == 7
    assert value(text, "recserve_queue_rows", **labels) == 12
    assert value(text, "recserve_model_loaded", **labels) == 1
    assert value(text, "recserve_inflight_requests", endpoint="score") == 2
    assert workers[0].pid is not None
    worker_exited(tmp_path, workers[0].pid)
    text = metrics.exposition().decode()
    assert value(text, "recserve_requests_total", endpoint="score", code="200", **labels) == 7
    assert value(text, "recserve_queue_rows", **labels) == 7
    assert value(text, "recserve_inflight_requests", endpoint="score") == 1


def test_shared_dir_is_fresh_named_in_the_environment_and_removed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv(ENV, raising=False)
    directory = create_shared_dir()
    try:
        assert os.environ[ENV] == str(directory)
        assert directory.parent == tmp_path and list(directory.iterdir()) == []
    finally:
        remove_shared_dir(directory)
    assert ENV not in os.environ
    assert not directory.exists()


# -- a real server with two workers --------------------------------------------------------------


def _log_lines(server: ServerProcess) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in server.log().splitlines() if line.startswith("{")]


def _wait_for_log(server: ServerProcess, text: str, count: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while server.log().count(text) < count:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)


def _score_until_both_workers_answered(server: ServerProcess) -> Counter[object]:
    """Score requests on fresh connections until the request log shows two workers."""
    for sent in range(1, 301):
        response = httpx.post(f"{server.url}/v1/models/recs/score", json=SCORE)
        assert response.status_code == 200, response.text
        if sent >= 4:
            pids = Counter(
                line["pid"] for line in _log_lines(server) if line["endpoint"] == "score"
            )
            if len(pids) == 2:
                return pids
    raise AssertionError(f"one worker answered every request:\n{server.log()}")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_two_workers_are_scraped_as_one_across_a_restart(tmp_path: Path) -> None:
    publish_random_version(tmp_path / "repo", "recs")
    server = start_server(
        tmp_path / "repo",
        tmp_path / "server.log",
        "--workers", "2", "--poll-interval-s", "0", "--request-log",
        env={"TMPDIR": str(tmp_path)},
    )  # fmt: skip
    labels = {"model": "recs", "version": "1"}
    try:
        _wait_for_log(server, "Application startup complete", 2)
        (shared,) = tmp_path.glob("recserve-metrics-*")
        per_worker = _score_until_both_workers_answered(server)
        total = sum(per_worker.values())
        assert all(0 < count < total for count in per_worker.values())

        for _ in range(4):  # whichever worker answers, the scrape holds both workers' counts
            text = httpx.get(f"{server.url}/metrics").text
            assert value(text, "recserve_requests_total", endpoint="score", code="200") == total
            count = value(text, "recserve_request_duration_seconds_count", endpoint="score")
            assert count == total
            assert value(text, "recserve_queue_capacity_rows", **labels) == 2 * CAPACITY
            assert value(text, "process_cpu_seconds_total") is not None

        victim = int(next(iter(per_worker)))  # type: ignore[call-overload]
        os.kill(victim, signal.SIGKILL)
        _wait_for_log(server, f"worker {victim} exited", 1)
        _wait_for_log(server, "Application startup complete", 3)

        text = httpx.get(f"{server.url}/metrics").text
        assert value(text, "recserve_requests_total", endpoint="score", code="200") == total
        assert value(text, "recserve_queue_capacity_rows", **labels) == 2 * CAPACITY
        assert value(text, "recserve_model_loaded", **labels) == 1
        assert value(text, "recserve_inflight_requests", endpoint="score") == 0
        assert (shared / f"counter_{victim}.db").exists()
        assert not list(shared.glob(f"gauge_*_{victim}.db"))
    finally:
        status = server.stop(60)
    assert status == 0, server.log()
    assert not shared.exists()
