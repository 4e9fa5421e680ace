"""A real Prometheus scrapes a real server: the target is up, ``histogram_quantile`` over
``recserve_request_duration_seconds`` agrees with the latencies the client measured, and the
dashboard's traffic queries, over the recording rules, count client requests and nothing of
Prometheus' own scrapes or the health probes.

Agreement is judged at the histogram's resolution: the client's quantile must lie within the
bucket that holds Prometheus' estimate. So that the test does not depend on how fast this machine
computes, each request's latency is set by the client: it sends the request headers, waits, then
sends the body, and the server's clock runs from the headers. Most requests wait 30 ms, a few
300 ms, which puts the median and the 99th percentile well inside the 25-50 ms and 250-500 ms
buckets. Prometheus (Debian package ``prometheus``; ``make system-deps``) must be installed: the
test fails without it.
"""

from __future__ import annotations

import http.client
import itertools
import math
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import yaml

from service.metrics.families import LATENCY_BUCKETS
from tests.factories import publish_random_version
from tests.server_process import ServerProcess, start_server
from tests.test_observability_config import (
    RECORDING,
    dashboard,
    traffic_queries,
    with_everything_selected,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

JOB = "recserve"
FAST_DELAY_S = 0.030
SLOW_DELAY_S = 0.300
CONNECTIONS = 4
REQUESTS_PER_CONNECTION = 25
SLOW_EVERY = 20  # 5 of 100 requests are slow: the 99th percentile falls among them
SCORE = orjson.dumps({"user_id": "u1", "item_ids": ["i1", "i2", "i3"]})


def prometheus_binary() -> str:
    found = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(found).is_file():
        pytest.fail("prometheus is not installed: `make system-deps` installs it")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Prometheus:
    url: str
    log_path: Path

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5)
        body = response.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The value of a query that yields at most one sample."""
        result = self.query(expr)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, expr: str, expected: float, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while (value := self.value(expr)) != expected:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{expr} = {value}, expected {expected}\n{self.log_path.read_text()}"
                )
            time.sleep(0.2)


@contextmanager
def running_prometheus(
    tmp_path: Path, target: str, rule_files: tuple[Path, ...] = ()
) -> Iterator[Prometheus]:
    """Prometheus on a free loopback port, scraping ``target`` and evaluating ``rule_files``
    every second."""
    binary = prometheus_binary()
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [target]}]}],
    }
    config_path = tmp_path / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = tmp_path / "prometheus.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"prometheus did not start:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield Prometheus(url, log_path)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def timed_requests(server: ServerProcess, delays: list[float]) -> list[float]:
    """Send score requests on one keep-alive connection, each body ``delay`` after its headers;
    the latency of each as the client saw it, from first byte sent to last byte received."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    latencies = []
    try:
        for delay in delays:
            started = time.perf_counter()
            connection.putrequest("POST", "/v1/models/recs/score")
            connection.putheader("Content-Type", "application/json")
            connection.putheader("Content-Length", str(len(SCORE)))
            connection.endheaders()
            time.sleep(delay)
            connection.send(SCORE)
            response = connection.getresponse()
            body = response.read()
            latencies.append(time.perf_counter() - started)
            assert response.status == 200, body
    finally:
        connection.close()
    return latencies


def client_latencies(server: ServerProcess) -> list[float]:
    delays = [
        SLOW_DELAY_S if (i + 1) % SLOW_EVERY == 0 else FAST_DELAY_S
        for i in range(CONNECTIONS * REQUESTS_PER_CONNECTION)
    ]
    shares = [delays[i::CONNECTIONS] for i in range(CONNECTIONS)]
    results: list[list[float]] = [[] for _ in shares]
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            results[index] = timed_requests(server, shares[index])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    latencies = [latency for share in results for latency in share]
    assert len(latencies) == len(delays)
    return latencies


def bucket_around(estimate: float) -> tuple[float, float]:
    """The bounds of the histogram bucket that holds ``estimate``."""
    bounds = (0.0, *LATENCY_BUCKETS, math.inf)
    for lower, upper in itertools.pairwise(bounds):
        if lower <= estimate <= upper:
            return lower, upper
    raise AssertionError(f"estimate {estimate} outside every bucket")


@contextmanager
def scraped_server(
    tmp_path: Path, rule_files: tuple[Path, ...] = ()
) -> Iterator[tuple[ServerProcess, Prometheus]]:
    """A server holding model ``recs``, and a Prometheus that has scraped it; the server must
    stop cleanly."""
    publish_random_version(tmp_path / "repo", "recs")
    server = start_server(tmp_path / "repo", tmp_path / "server.log", "--poll-interval-s", "0")
    try:
        with running_prometheus(tmp_path, server.host_port, rule_files) as prometheus:
            prometheus.wait_for(f'up{{job="{JOB}"}}', 1.0)
            yield server, prometheus
    finally:
        status = server.stop()
    assert status == 0, server.log()


def test_prometheus_quantiles_agree_with_client_latencies(tmp_path: Path) -> None:
    with scraped_server(tmp_path) as (server, prometheus):
        latencies = client_latencies(server)
        selector = f'recserve_request_duration_seconds_bucket{{job="{JOB}", endpoint="score"}}'
        prometheus.wait_for(
            f'sum(recserve_request_duration_seconds_count{{job="{JOB}", endpoint="score"}})',
            float(len(latencies)),
        )
        for q in (0.5, 0.99):
            estimate = prometheus.value(f"histogram_quantile({q}, sum by (le) ({selector}))")
            assert estimate is not None
            lower, upper = bucket_around(estimate)
            measured = float(np.quantile(latencies, q))
            assert lower <= measured <= upper, (
                f"p{q * 100:g}: client measured {measured:.4f} s, Prometheus estimates "
                f"{estimate:.4f} s in bucket [{lower}, {upper}]"
            )
        assert prometheus.value(f'up{{job="{JOB}"}}') == 1.0


def probe(server: ServerProcess) -> None:
    for path in ("/v2/health/live", "/v2/health/ready"):
        httpx.get(f"{server.url}{path}", timeout=5)


def score(server: ServerProcess) -> None:
    response = httpx.post(f"{server.url}/v1/models/recs/score", content=SCORE, timeout=5)
    assert response.status_code == 200, response.text


def keep_calling(
    prometheus: Prometheus, until: str, call: Callable[[], None], timeout_s: float = 20.0
) -> None:
    """``call`` the server every 0.3 s, across scrapes (a counter that grows between two of
    them has a rate), until ``until`` is 1."""
    deadline = time.monotonic() + timeout_s
    while prometheus.value(until) != 1.0:
        assert time.monotonic() < deadline, f"{until}\n{prometheus.log_path.read_text()}"
        call()
        time.sleep(0.3)


def test_dashboard_traffic_counts_clients_not_scrapes_or_probes(tmp_path: Path) -> None:
    """Every dashboard query over the request counter (or a rule recorded from it), with every
    variable on All, shows nothing while only Prometheus and the probes have called; the overview's
    request rate then rises with the first client requests."""
    board = dashboard()
    traffic = traffic_queries(board)
    (requests_per_s,) = [
        with_everything_selected(target["expr"], board)
        for panel in board["panels"]
        if panel["title"] == "Requests / s"
        for target in panel["targets"]
    ]
    with scraped_server(tmp_path, (RECORDING,)) as (server, prometheus):
        recorded = "model_version_endpoint:recserve_requests:rate5m"
        probed = f'count({recorded}{{endpoint=~"metrics|health_.*"}} > 0) == bool 3'
        keep_calling(prometheus, probed, lambda: probe(server))
        shown = {expr: prometheus.query(expr) for expr in traffic}
        assert not any(shown.values()), {e: r for e, r in shown.items() if r}
        keep_calling(prometheus, f"({requests_per_s}) > bool 0", lambda: score(server))
