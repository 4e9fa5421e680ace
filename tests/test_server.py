"""Running under uvicorn: graceful SIGTERM under load, worker processes, settings handover."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from pydantic import SecretStr

from service.cores import usable_cores
from service.server import settings_to_env, uvicorn_config
from service.settings import BatchingSettings, Settings
from tests.factories import publish_random_version, reference_scores
from tests.reliability_tools import binary_scores, infer_body
from tests.server_process import start_server

N_USERS, N_ITEMS = 50, 40


@dataclass
class Outcome:
    finished: float
    status: int | None  # None: the request failed at the transport level
    error: str = ""
    correct: bool = False
    retry_after: str | None = None


@pytest.mark.slow
def test_sigterm_under_load_loses_no_accepted_request(tmp_path: Path) -> None:
    """Readiness turns false at once; requests already accepted complete; exit status 0."""
    _, params = publish_random_version(tmp_path / "repo", "recs", n_users=N_USERS, n_items=N_ITEMS)
    server = start_server(
        tmp_path / "repo",
        tmp_path / "server.log",
        "--poll-interval-s",
        "0",
        "--max-request-bytes",
        str(64 * 1024 * 1024),
        "--shutdown-grace-s",
        "60",
        "--request-timeout-s",
        "60",
        "--max-batch-rows",
        "65536",
        "--queue-capacity-rows",
        "100000000",
    )
    rows, n_clients = 400_000, 6  # enough queued work to outlast the signal by a good margin
    rng = np.random.default_rng(0)
    requests = []
    for _ in range(n_clients):
        users = rng.integers(0, N_USERS + 1, rows).astype(np.int64)
        items = rng.integers(0, N_ITEMS + 1, rows).astype(np.int64)
        requests.append((*infer_body(users, items), reference_scores(params, users, items)))

    stop = threading.Event()
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    url = f"{server.url}/v2/models/recs/infer"

    def client(body: bytes, headers: dict[str, str], expected: np.ndarray) -> None:
        with httpx.Client(timeout=120) as http:
            while not stop.is_set():
                try:
                    response = http.post(url, content=body, headers=headers)
                except httpx.ConnectError as exc:  # never accepted: the server stopped listening
                    outcome = Outcome(time.monotonic(), None, f"connect: {exc}")
                    stop_after = True
                except httpx.TransportError as exc:  # accepted, then dropped: what must not happen
                    outcome = Outcome(time.monotonic(), None, repr(exc))
                    stop_after = True
                else:
                    correct = response.status_code == 200 and np.allclose(
                        binary_scores(response.content, response.headers),
                        expected,
                        rtol=1e-5,
                        atol=1e-6,
                    )
                    outcome = Outcome(
                        time.monotonic(),
                        response.status_code,
                        "" if response.status_code == 200 else response.text,
                        correct,
                        response.headers.get("retry-after"),
                    )
                    stop_after = response.status_code != 200
                with lock:
                    outcomes.append(outcome)
                if stop_after:
                    return

    threads = [threading.Thread(target=client, args=request) for request in requests]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # under load: every client has been served once
            with lock:
                if len(outcomes) >= n_clients:
                    break
            time.sleep(0.01)
        server.process.send_signal(signal.SIGTERM)
        stop.set()  # clients finish the request they have in flight and send no more

        not_ready_at = None
        with httpx.Client(timeout=10) as probe:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if probe.get(f"{server.url}/v2/health/ready").status_code == 503:
                    not_ready_at = time.monotonic()
                    break
            refused = probe.post(url, content=requests[0][0], headers=requests[0][1])
        for thread in threads:
            thread.join(120)
        status = server.process.wait(120)
    finally:
        stop.set()
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()

    assert status == 0, server.log()
    assert not_ready_at is not None, "readiness did not turn false after SIGTERM"
    assert refused.status_code == 503
    assert refused.headers["retry-after"]
    lost = [o for o in outcomes if o.status is None and not o.error.startswith("connect")]
    assert lost == []
    assert all(o.correct or (o.status == 503 and o.retry_after) for o in outcomes if o.status)
    finished_while_draining = [o for o in outcomes if o.correct and o.finished > not_ready_at]
    assert finished_while_draining, "no accepted request was still in flight at SIGTERM"
    assert "Cancel" not in server.log()


@pytest.mark.slow
def test_requests_sent_while_workers_start_wait_instead_of_being_refused(tmp_path: Path) -> None:
    publish_random_version(tmp_path / "repo", "recs", n_users=N_USERS, n_items=N_ITEMS)
    server = start_server(tmp_path / "repo", tmp_path / "server.log", "--workers", "2")
    try:
        # The supervisor names its port before any worker has started: the request is sent now.
        assert "Application startup complete" not in server.log()
        response = httpx.get(f"{server.url}/v2/health/live", timeout=60)
        assert response.status_code == 200, response.text
        deadline = time.monotonic() + 60  # both workers up before the stop, as in production
        while server.log().count("Application startup complete") < 2:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)
    finally:
        status = server.stop(60)
    assert status == 0, server.log()


@pytest.mark.slow
def test_workers_serve_and_stop_with_status_0(tmp_path: Path) -> None:
    _, params = publish_random_version(tmp_path / "repo", "recs", n_users=N_USERS, n_items=N_ITEMS)
    server = start_server(
        tmp_path / "repo", tmp_path / "server.log", "--workers", "2", "--poll-interval-s", "0"
    )
    try:
        users = np.arange(N_USERS + 1, dtype=np.int64)
        items = (users * 7) % (N_ITEMS + 1)
        body, headers = infer_body(users, items)
        deadline = time.monotonic() + 60
        while server.log().count("Application startup complete") < 2:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)
        assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
        for _ in range(6):  # fresh connections, spread over the workers by the kernel
            response = httpx.post(
                f"{server.url}/v2/models/recs/infer", content=body, headers=headers
            )
            assert response.status_code == 200, response.text
            np.testing.assert_allclose(
                binary_scores(response.content, response.headers),
                reference_scores(params, users, items),
                rtol=1e-5,
                atol=1e-6,
            )
    finally:
        status = server.stop(60)
    assert status == 0, server.log()
    assert server.log().count("Finished server process") == 2


def test_by_default_a_cpu_server_runs_a_worker_per_usable_core(tmp_path: Path) -> None:
    publish_random_version(tmp_path / "repo", "recs")
    cores = usable_cores()
    server = start_server(
        tmp_path / "repo",
        tmp_path / "server.log",
        "--provider=cpu",
        "--poll-interval-s=0",
        env={"RECSERVE_WORKERS": "0"},  # what an unset --workers means, past the tests' pin to 1
    )
    try:
        plural = "s" * (cores > 1)
        assert f"{cores} worker{plural}: {cores} usable core{plural}, CPU provider" in server.log()
        deadline = time.monotonic() + 60
        while server.log().count("Application startup complete") < cores:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)
    finally:
        assert server.stop(60) == 0, server.log()
    assert server.log().count("Finished server process") == cores


def test_idle_server_stops_with_status_0_and_frees_the_port(tmp_path: Path) -> None:
    publish_random_version(tmp_path / "repo", "recs")
    server = start_server(tmp_path / "repo", tmp_path / "server.log", "--poll-interval-s", "0")
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
    assert server.stop() == 0, server.log()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/v2/health/live")


def test_settings_survive_the_trip_through_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings(
        host="0.0.0.0",
        port=9001,
        workers=3,
        model_repository=Path("/srv/models"),
        poll_interval_s=0.5,
        batching=BatchingSettings(max_batch_rows=512, request_timeout_s=2.5),
        provider="cpu",
        admin_token=SecretStr("tok"),
        max_request_bytes=2048,
        shutdown_grace_s=7,
        log_level="debug",
        request_log=True,
    )
    env = settings_to_env(settings)
    assert env["RECSERVE_ADMIN_TOKEN"] == "tok"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    rebuilt = Settings()
    assert rebuilt.model_dump() == settings.model_dump()
    assert rebuilt.admin_token is not None
    assert rebuilt.admin_token.get_secret_value() == "tok"


def test_unset_token_is_not_written_to_the_environment() -> None:
    assert "RECSERVE_ADMIN_TOKEN" not in settings_to_env(Settings())


def test_uvicorn_uses_uvloop_and_httptools_when_installed() -> None:
    pytest.importorskip("uvloop")
    pytest.importorskip("httptools")
    from uvicorn.protocols.http.h11_impl import H11Protocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    settings = Settings(port=1234, shutdown_grace_s=2.5, max_header_count=7)
    config = uvicorn_config(settings, "service.app:app_from_env")
    assert config.loop == "uvloop"
    # The server's own protocol (service.http.protocol) over httptools, with its limits.
    assert isinstance(config.http, type) and issubclass(config.http, HttpToolsProtocol)
    assert config.http.limits.max_header_count == 7  # type: ignore[attr-defined]
    h11 = uvicorn_config(settings.model_copy(update={"http_parser": "h11"}), "x:y").http
    assert isinstance(h11, type) and issubclass(h11, H11Protocol)
    assert config.port == 1234
    assert config.timeout_graceful_shutdown == 3
    assert not config.access_log


def _worker_pids(server_pid: int) -> list[int]:
    """The supervisor's workers (not multiprocessing's resource tracker)."""
    return [
        child.pid
        for child in psutil.Process(server_pid).children()
        if "resource_tracker" not in " ".join(child.cmdline())
    ]


def _open_connections(url: str, n: int) -> list[socket.socket]:
    """``n`` keep-alive connections, each answered once (so each has been accepted)."""
    host, port = url.removeprefix("http://").split(":")
    opened = [socket.create_connection((host, int(port)), timeout=60) for _ in range(n)]
    for sock in opened:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: test\r\n\r\n")
    for sock in opened:
        assert sock.recv(4096).startswith(b"HTTP/1.1 200"), "a connection was not served"
    return opened


def test_connections_opened_at_once_are_spread_over_the_workers(tmp_path: Path) -> None:
    """Each worker listens on its own socket (SO_REUSEPORT): 16 connections opened together land
    on both workers, not all on whichever woke first; a worker killed is restarted on its socket
    and the connections made meanwhile wait for it rather than fail."""
    publish_random_version(tmp_path / "repo", "recs", n_users=N_USERS, n_items=N_ITEMS)
    server = start_server(tmp_path / "repo", tmp_path / "server.log", "--workers", "2")
    port = int(server.url.rsplit(":", 1)[1])
    opened: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 60
        while server.log().count("Application startup complete") < 2:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)
        opened = _open_connections(server.url, 16)
        held = {
            pid: sum(
                1
                for c in psutil.Process(pid).net_connections(kind="tcp")
                if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
            )
            for pid in _worker_pids(server.process.pid)
        }
        assert sorted(held.values())[0] >= 2 and sum(held.values()) == 16, held
        for sock in opened:
            sock.close()
        victim = _worker_pids(server.process.pid)[0]
        os.kill(victim, signal.SIGKILL)
        opened = _open_connections(server.url, 16)  # some wait on the dead worker's socket
        assert server.log().count("restarting") == 1, server.log()
    finally:
        for sock in opened:
            sock.close()
        status = server.stop(60)
    assert status == 0, server.log()
