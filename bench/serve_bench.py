"""Serving load benchmark: recserve against a plain FastAPI + ONNX Runtime baseline, with wrk.

Publishes a MovieLens-1M-sized NCF-MLP (6,040 users, 3,706 items, embedding 32, tower
64-256-128-64, random weights) into a fresh repository (or uses ``--repository``), starts
``recserve serve`` and ``bench/baseline_server.py`` (uvicorn, as many workers) side by side on
free 127.0.0.1 ports, and drives each with wrk (``bench/wrk/post_bodies.lua``, rotating among
pre-generated bodies with varied users) in every scenario at every concurrency; the two servers
take turns run by run, so that load from elsewhere falls on both alike. Each measured run follows
a warm-up run. Prints requests/s, rows/s, latency percentiles, errors (non-2xx and socket
errors) and the server's CPU use (its whole process tree, from /proc), each recserve figure as a
ratio to the baseline's, then the targets and whether each is met.

    .venv/bin/python bench/serve_bench.py [--quick] [--duration 10] [--concurrency 1,16,64]
        [--workers N] [--only recserve|baseline] [--check]

Settings of recserve not given as flags here come from ``RECSERVE_*`` environment variables,
as for ``recserve serve``. Exits 0 (it is a report); with ``--check``, 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from recserve.cli import build_parser  # noqa: E402
from service.cli import settings_from_args  # noqa: E402
from service.settings import Settings  # noqa: E402
from tests.factories import latest_ids, publish_mlp_version, random_params  # noqa: E402
from tests.server_process import (  # noqa: E402
    ServerError,
    ServerProcess,
    cpu_seconds,
    launch,
    process_tree,
)

BENCH = Path(__file__).resolve().parent
LUA_SCRIPT = BENCH / "wrk" / "post_bodies.lua"
MODEL_NAME = "ml1m-mlp"
N_USERS, N_ITEMS, ML1M_MAX_ITEM_ID = 6_040, 3_706, 3_952
EMBEDDING_DIM, TOWER = 32, (64, 256, 128, 64)
RANKING_ROWS = 100
RECOMMEND_K = 10
BASELINE, RECSERVE = "baseline", "recserve"
READY_TIMEOUT_S = 180.0


# ----------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class Model:
    """A served version: where it lies and its raw ids (id at index i is embedding row i+1)."""

    name: str
    version_dir: Path
    user_ids: list[str]
    item_ids: list[str]


def publish_bench_model(repository: Path, seed: int) -> Model:
    """Publish an ML-1M-sized NCF-MLP with random weights; ids as in ML-1M (users 1..6040)."""
    rng = np.random.default_rng(seed)
    params = random_params(N_USERS + 1, N_ITEMS + 1, dim=EMBEDDING_DIM, tower=TOWER, seed=seed)
    user_ids = [str(u) for u in range(1, N_USERS + 1)]
    item_numbers = np.sort(rng.choice(np.arange(1, ML1M_MAX_ITEM_ID + 1), N_ITEMS, replace=False))
    item_ids = [str(i) for i in item_numbers]
    published = publish_mlp_version(
        repository,
        MODEL_NAME,
        params,
        user_ids,
        item_ids,
        hyperparameters={"embedding_dim": EMBEDDING_DIM, "tower": list(TOWER)},
        dataset={"name": "random weights, MovieLens-1M sized", "size": 0},
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    return Model(MODEL_NAME, published.path, user_ids, item_ids)


def existing_model(repository: Path, name: str) -> Model:
    """The highest version of ``name`` in an existing repository."""
    try:
        version_dir, user_ids, item_ids = latest_ids(repository, name)
    except LookupError as exc:
        raise SystemExit(str(exc)) from None
    return Model(name, version_dir, user_ids, item_ids)


# ----------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str  # "{m}" is replaced by the model name
    rows: int  # rows (user-item pairs) scored per request
    make_body: Callable[[Model, np.random.Generator], dict[str, Any]]


def _v2_rows(model: Model, rng: np.random.Generator, n: int) -> dict[str, Any]:
    user = int(rng.integers(1, len(model.user_ids) + 1))
    items = (rng.choice(len(model.item_ids), n, replace=False) + 1).tolist()
    tensors = {"user": [user] * n, "item": items}
    return {
        "inputs": [
            {"name": name, "shape": [n], "datatype": "INT64", "data": data}
            for name, data in tensors.items()
        ]
    }


def _score_body(model: Model, rng: np.random.Generator) -> dict[str, Any]:
    items = rng.choice(len(model.item_ids), RANKING_ROWS, replace=False)
    return {
        "user_id": model.user_ids[int(rng.integers(len(model.user_ids)))],
        "item_ids": [model.item_ids[i] for i in items],
    }


def _recommend_body(model: Model, rng: np.random.Generator) -> dict[str, Any]:
    return {"user_id": model.user_ids[int(rng.integers(len(model.user_ids)))], "k": RECOMMEND_K}


def _recommend_candidates_body(model: Model, rng: np.random.Generator) -> dict[str, Any]:
    body = _score_body(model, rng)
    return {"user_id": body["user_id"], "k": RECOMMEND_K, "candidates": body["item_ids"]}


def scenarios(model: Model) -> list[Scenario]:
    infer = "/v2/models/{m}/infer"
    return [
        Scenario("single-row", infer, 1, lambda m, rng: _v2_rows(m, rng, 1)),
        Scenario("infer-100", infer, RANKING_ROWS, lambda m, rng: _v2_rows(m, rng, RANKING_ROWS)),
        Scenario("score-100", "/v1/models/{m}/score", RANKING_ROWS, _score_body),
        Scenario("recommend", "/v1/models/{m}/recommend", len(model.item_ids), _recommend_body),
        Scenario(
            "recommend-100", "/v1/models/{m}/recommend", RANKING_ROWS, _recommend_candidates_body
        ),
    ]


def write_bodies(scenario: Scenario, model: Model, n: int, seed: int, out: Path) -> Path:
    """``n`` request bodies for ``scenario``, one JSON document per line."""
    rng = np.random.default_rng(seed)
    path = out / f"{scenario.name}.jsonl"
    lines = (json.dumps(scenario.make_body(model, rng), separators=(",", ":")) for _ in range(n))
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def answer_of(scenario: Scenario, response: dict[str, Any]) -> list[Any]:
    """The part of a response two servers must agree on: scores, or the recommended ids."""
    if scenario.name.startswith("recommend"):
        return [item["item_id"] for item in response["items"]]
    if "scores" in response:
        return list(response["scores"])
    return list(response["outputs"][0]["data"])


# ----------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def recserve_argv(args: argparse.Namespace, repository: Path, port: int) -> list[str]:
    """``recserve serve`` arguments; batching flags only where given here (else env/defaults)."""
    argv = [
        "serve",
        f"--model-repository={repository}",
        "--host=127.0.0.1",
        f"--port={port}",
        f"--workers={args.workers}",
        "--log-level=warning",
        "--shutdown-grace-s=5",
    ]
    for flag in ("max_batch_rows", "max_queue_delay_us", "ort_intra_op_threads"):
        value = getattr(args, flag)
        if value is not None:
            argv.append(f"--{flag.replace('_', '-')}={value}")
    return argv


def niced(argv: list[str], nice: int) -> list[str]:
    """``argv`` run at scheduling priority ``nice`` (unchanged when 0)."""
    return ["nice", "-n", str(nice), *argv] if nice else argv


def start_process(
    name: str, argv: list[str], env: dict[str, str], out: Path, port: int
) -> ServerProcess:
    """A server in a process group of its own, so that stopping it stops its workers too."""
    return launch(argv, out / f"{name}.log", env=env, port=port, name=name, group=True)


def start_recserve(argv: list[str], out: Path, port: int, nice: int) -> ServerProcess:
    executable = Path(sys.executable).parent / "recserve"
    command = str(executable) if executable.exists() else shutil.which("recserve") or "recserve"
    return start_process(RECSERVE, niced([command, *argv], nice), dict(os.environ), out, port)


def start_baseline(
    model: Model, workers: int, ort_threads: int, out: Path, port: int, nice: int
) -> ServerProcess:
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(BENCH),
        "--factory",
        "baseline_server:create_app",
        "--host=127.0.0.1",
        f"--port={port}",
        f"--workers={workers}",
        "--log-level=warning",
        "--no-access-log",
    ]
    env = {
        **os.environ,
        "BASELINE_VERSION_DIR": str(model.version_dir),
        "BASELINE_ORT_THREADS": str(ort_threads),
    }
    return start_process(BASELINE, niced(argv, nice), env, out, port)


def stop(server: ServerProcess, grace_s: float = 15.0) -> None:
    """SIGTERM to the server's process group, then SIGKILL if it has not exited in time."""
    try:
        server.stop(grace_s)
    except ServerError:
        print(f"{server.name} did not stop in {grace_s:.0f} s; killing it")


@contextlib.contextmanager
def running(starters: Sequence[Callable[[], ServerProcess]]) -> Iterator[list[ServerProcess]]:
    servers: list[ServerProcess] = []
    try:
        for start in starters:
            servers.append(start())
        for server in servers:
            server.wait_ready(READY_TIMEOUT_S)
        yield servers
    finally:
        for server in servers:
            stop(server)


def settle(server: ServerProcess, idle_percent: float = 10.0, timeout_s: float = 15.0) -> None:
    """Wait until the server has finished what a previous run left queued."""
    pids = process_tree(server.process.pid)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        before = cpu_seconds(pids)
        time.sleep(0.25)
        if (cpu_seconds(pids) - before) / 0.25 * 100 < idle_percent:
            return


# ----------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Measurement:
    server: str
    scenario: str
    concurrency: int
    rows_per_request: int
    duration_s: float
    requests: int
    non2xx: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    cpu_percent: float
    first_error: str

    @property
    def requests_per_s(self) -> float:
        """Successful (2xx) requests per second."""
        return (self.requests - self.non2xx) / self.duration_s

    @property
    def rows_per_s(self) -> float:
        return self.requests_per_s * self.rows_per_request

    @property
    def errors(self) -> int:
        return self.non2xx + self.socket_errors

    @property
    def requests_per_core_s(self) -> float:
        return self.requests_per_s / max(self.cpu_percent / 100, 1e-9)


def median_run(runs: Sequence[Measurement]) -> Measurement:
    """The run with the median throughput (the lower middle one of an even number)."""
    return sorted(runs, key=lambda m: m.requests_per_s)[(len(runs) - 1) // 2]


def print_progress(m: Measurement) -> None:
    print(
        f"  {m.scenario:<11} c={m.concurrency:<3} {m.server:<8} {m.requests_per_s:9.1f} req/s  "
        f"p50 {m.p50_ms:7.2f} ms  p99 {m.p99_ms:7.2f} ms  errors {m.errors}  "
        f"cpu {m.cpu_percent:.0f}%",
        flush=True,
    )
    if m.errors and m.first_error:
        print(f"    first error: {m.first_error}")


def post_json(url: str, body: str, timeout_s: float = 30.0) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, body.encode(), {"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")[:300]


def run_wrk(
    url: str, bodies: Path, connections: int, duration_s: int, args: argparse.Namespace
) -> dict[str, Any]:
    threads = max(1, min(args.wrk_threads, connections))
    command = niced(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{duration_s}s",
            f"--timeout={args.timeout}s",
            "-s",
            str(LUA_SCRIPT),
            url,
            "--",
            str(bodies),
        ],
        args.nice,
    )
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=duration_s + args.timeout + 60,
    )
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
            return result
    raise RuntimeError(f"wrk gave no result (exit {done.returncode}): {done.stderr.strip()}")


def measure(
    server: ServerProcess,
    scenario: Scenario,
    url: str,
    bodies: Path,
    concurrency: int,
    args: argparse.Namespace,
) -> Measurement:
    settle(server)
    run_wrk(url, bodies, concurrency, args.warmup, args)
    settle(server)
    pids = process_tree(server.process.pid)
    cpu_before, started = cpu_seconds(pids), time.monotonic()
    result = run_wrk(url, bodies, concurrency, args.duration, args)
    cpu_used, wall = cpu_seconds(pids) - cpu_before, time.monotonic() - started
    latency = result["latency_us"]
    return Measurement(
        server=server.name,
        scenario=scenario.name,
        concurrency=concurrency,
        rows_per_request=scenario.rows,
        duration_s=result["duration_us"] / 1e6,
        requests=result["requests"],
        non2xx=result["non2xx"],
        socket_errors=sum(result["socket_errors"].values()),
        p50_ms=latency["p50"] / 1e3,
        p90_ms=latency["p90"] / 1e3,
        p99_ms=latency["p99"] / 1e3,
        cpu_percent=100 * cpu_used / wall,
        first_error=result["first_error"],
    )


def probe(
    servers: Sequence[ServerProcess], scenario: Scenario, model: Model, bodies: Path
) -> dict[str, str]:
    """Check one request per server before loading it; returns why a server cannot run it."""
    body = bodies.read_text().splitlines()[0]
    path = scenario.path.format(m=model.name)
    problems: dict[str, str] = {}
    answers: dict[str, list[Any]] = {}
    for server in servers:
        status, reply = post_json(server.url + path, body)
        if status == 404:
            problems[server.name] = f"no {path} (404)"
        elif status != 200:
            problems[server.name] = f"{path} answered {status}: {reply}"
        else:
            answers[server.name] = answer_of(scenario, reply)
    if len(answers) == 2:
        ours, theirs = answers[RECSERVE], answers[BASELINE]
        if scenario.name.startswith("recommend"):
            agree = ours == theirs
        else:
            agree = len(ours) == len(theirs) and bool(np.allclose(ours, theirs, atol=1e-5))
        if not agree:
            print(f"  note: {scenario.name}: recserve and baseline answers differ")
    return problems


# ----------------------------------------------------------------------------- reporting


def machine_report(settings: Settings | None, args: argparse.Namespace) -> list[str]:
    cpu_model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
    wrk_version = wrk_version.splitlines()[0].split(" Copyright")[0] if wrk_version else "wrk"
    versions = ", ".join(
        f"{package} {importlib_metadata.version(package)}"
        for package in ("onnxruntime-gpu", "numpy", "fastapi", "uvicorn", "pydantic")
        if _installed(package)
    )
    lines = [
        f"machine: {cpu_model}; {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable); "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"python {platform.python_version()}; {versions}; {wrk_version}",
        f"model: NCF-MLP, {N_USERS} users, {N_ITEMS} items, embedding {EMBEDDING_DIM}, "
        f"tower {'-'.join(map(str, TOWER))}",
        f"runs: {args.warmup} s warm-up + {args.duration} s measured, {args.rounds} per server, "
        f"scenario and concurrency (median reported); wrk threads {args.wrk_threads}; "
        f"concurrency {','.join(map(str, args.concurrency))}; niceness {args.nice}",
    ]
    if settings is not None:
        b = settings.batching
        threads = settings.ort_intra_op_threads
        lines.append(
            f"recserve: workers {settings.workers}, max_batch_rows {b.max_batch_rows}, "
            f"max_queue_delay_us {b.max_queue_delay_us}, concurrent_runs {b.concurrent_runs}, "
            f"queue_capacity_rows {b.queue_capacity_rows}, ORT intra-op threads "
            f"{threads or '0 (ONNX Runtime chooses)'}, provider {settings.provider}"
        )
        lines.append(
            f"baseline: uvicorn, {settings.workers} worker(s), sync endpoints (threadpool), "
            f"one ONNX Runtime run per request, ORT intra-op threads "
            f"{threads or '0 (ONNX Runtime chooses)'}"
        )
    return lines


def _installed(package: str) -> bool:
    try:
        importlib_metadata.version(package)
    except importlib_metadata.PackageNotFoundError:
        return False
    return True


def ratio(ours: float, theirs: float) -> float:
    return ours / theirs if theirs > 0 else float("nan")


def results_table(results: Sequence[Measurement]) -> list[str]:
    header = (
        f"{'scenario':<11} {'conc':>4} {'server':<8} {'req/s':>9} {'rows/s':>11} "
        f"{'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'errors':>7} {'cpu %':>6} {'req/core-s':>10}"
    )
    lines = [header, "-" * len(header)]
    for m in results:
        lines.append(
            f"{m.scenario:<11} {m.concurrency:>4} {m.server:<8} {m.requests_per_s:>9.1f} "
            f"{m.rows_per_s:>11.0f} {m.p50_ms:>8.2f} {m.p90_ms:>8.2f} {m.p99_ms:>8.2f} "
            f"{m.errors:>7} {m.cpu_percent:>6.0f} {m.requests_per_core_s:>10.0f}"
        )
    return lines


def ratios_table(pairs: Sequence[tuple[Measurement, Measurement]]) -> list[str]:
    header = (
        f"{'scenario':<11} {'conc':>4} {'req/s':>7} {'rows/s':>7} {'p50':>7} {'p90':>7} "
        f"{'p99':>7} {'cpu %':>7} {'req/core-s':>10} {'errors r/b':>11}"
    )
    lines = [
        "recserve / baseline (req/s and rows/s: higher is better; latency: lower is better)",
        header,
        "-" * len(header),
    ]
    for ours, theirs in pairs:
        lines.append(
            f"{ours.scenario:<11} {ours.concurrency:>4} "
            f"{ratio(ours.requests_per_s, theirs.requests_per_s):>6.2f}x "
            f"{ratio(ours.rows_per_s, theirs.rows_per_s):>6.2f}x "
            f"{ratio(ours.p50_ms, theirs.p50_ms):>6.2f}x "
            f"{ratio(ours.p90_ms, theirs.p90_ms):>6.2f}x "
            f"{ratio(ours.p99_ms, theirs.p99_ms):>6.2f}x "
            f"{ratio(ours.cpu_percent, theirs.cpu_percent):>6.2f}x "
            f"{ratio(ours.requests_per_core_s, theirs.requests_per_core_s):>9.2f}x "
            f"{f'{ours.errors}/{theirs.errors}':>11}"
        )
    return lines


@dataclass(frozen=True)
class Target:
    description: str
    met: bool | None  # None: not measured in this run
    detail: str


def evaluate_targets(
    results: Sequence[Measurement], concurrency: Sequence[int], catalog_rows: int
) -> list[Target]:
    found = {(m.server, m.scenario, m.concurrency): m for m in results}
    targets: list[Target] = []

    def throughput(scenario: str, factor: float) -> None:
        description = (
            f"{scenario} at concurrency 64: req/s >= {factor:g}x baseline, p99 <= baseline"
        )
        ours, theirs = found.get((RECSERVE, scenario, 64)), found.get((BASELINE, scenario, 64))
        if ours is None or theirs is None:
            targets.append(Target(description, None, "not measured"))
            return
        speedup = ratio(ours.requests_per_s, theirs.requests_per_s)
        met = speedup >= factor and ours.p99_ms <= theirs.p99_ms
        detail = f"{speedup:.2f}x; p99 {ours.p99_ms:.2f} ms vs {theirs.p99_ms:.2f} ms"
        targets.append(Target(description, met, detail))

    throughput("infer-100", 2.0)
    throughput("score-100", 2.0)
    throughput("single-row", 2.5)
    for scenario in ("single-row", "infer-100", "score-100", "recommend"):
        description = f"{scenario} at concurrency 1: p50 <= 1.2x baseline"
        ours, theirs = found.get((RECSERVE, scenario, 1)), found.get((BASELINE, scenario, 1))
        if ours is None or theirs is None:
            targets.append(Target(description, None, "not measured"))
            continue
        slowdown = ratio(ours.p50_ms, theirs.p50_ms)
        detail = f"{slowdown:.2f}x ({ours.p50_ms:.2f} ms vs {theirs.p50_ms:.2f} ms)"
        targets.append(Target(description, slowdown <= 1.2, detail))
    top = max(concurrency)
    description = f"recommend (whole catalog, {catalog_rows} rows) at concurrency {top}: "
    description += ">= 300,000 rows/s"
    ours = found.get((RECSERVE, "recommend", top))
    if ours is None:
        targets.append(Target(description, None, "not measured"))
    else:
        targets.append(Target(description, ours.rows_per_s >= 300_000, f"{ours.rows_per_s:,.0f}"))
    served = [m for m in results if m.server == RECSERVE]
    errors = sum(m.errors for m in served)
    if served:
        targets.append(Target("no recserve errors", errors == 0, f"{errors} errors"))
    return targets


def targets_report(targets: Sequence[Target]) -> list[str]:
    lines = ["targets:"]
    for target in targets:
        mark = {True: "met   ", False: "MISSED", None: "n/a   "}[target.met]
        lines.append(f"  [{mark}] {target.description}: {target.detail}")
    return lines


# ----------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--duration", type=int, help="measured seconds per run (default 10)")
    parser.add_argument("--warmup", type=int, help="warm-up seconds before each run (default 2)")
    parser.add_argument("--quick", action="store_true", help="3 s runs after 1 s warm-ups")
    parser.add_argument(
        "--concurrency",
        type=lambda text: [int(c) for c in text.split(",")],
        default=[1, 16, 64],
        help="connections per run, comma-separated (default 1,16,64)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="runs per server and case; the median is reported"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="server worker processes (both); 0: as recserve serve chooses (default)",
    )
    parser.add_argument("--max-batch-rows", type=int, help="recserve batching setting")
    parser.add_argument("--max-queue-delay-us", type=int, help="recserve batching setting")
    parser.add_argument("--ort-intra-op-threads", type=int, help="ONNX Runtime threads (both)")
    parser.add_argument(
        "--only", choices=(RECSERVE, BASELINE), help="run one server (no ratios or targets)"
    )
    parser.add_argument(
        "--scenarios",
        type=lambda text: text.split(","),
        default=["single-row", "infer-100", "score-100", "recommend", "recommend-100"],
        help="comma-separated subset of single-row,infer-100,score-100,recommend,recommend-100",
    )
    parser.add_argument(
        "--repository", type=Path, help="serve this repository's model instead of publishing one"
    )
    parser.add_argument("--model", default=MODEL_NAME, help="model name with --repository")
    parser.add_argument("--out", type=Path, default=BENCH / "out" / "serve_bench", help="work dir")
    parser.add_argument("--bodies", type=int, default=512, help="distinct bodies per scenario")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--timeout", type=int, default=10, help="wrk socket timeout, seconds")
    nice = "run servers and wrk at this niceness (e.g. -10 on a shared machine; needs root)"
    parser.add_argument("--nice", type=int, default=0, help=nice)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--features",
        action="store_true",
        help="the feature model against the id-only one of the same size (bench/feature_bench.py)",
    )
    args = parser.parse_args(argv)
    args.duration = args.duration or (3 if args.quick else 10)
    args.warmup = args.warmup or (1 if args.quick else 2)
    return args


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop the servers


def run_features(args: argparse.Namespace) -> int:
    """``--features``: the feature model and the id-only one of the same size
    (``bench/feature_bench.py`` publishes them), served by one recserve, every /v1 scenario
    measured on each in turns."""
    from feature_bench import FEATURES, IDS, comparison, publish_pair

    out: Path = args.out / "features"
    out.mkdir(parents=True, exist_ok=True)
    repository = out / "repository"
    shutil.rmtree(repository, ignore_errors=True)
    user_ids, item_ids = publish_pair(repository, args.seed)
    port = free_port()
    serve_argv = recserve_argv(args, repository, port)
    models = {name: Model(name, repository / name / "1", user_ids, item_ids)
              for name in (IDS, FEATURES)}  # fmt: skip
    chosen = [s for s in scenarios(models[IDS]) if s.path.startswith("/v1")]
    results: list[Measurement] = []
    with running([lambda: start_recserve(serve_argv, out, port, args.nice)]) as servers:
        (server,) = servers
        for index, scenario in enumerate(chosen):
            bodies = write_bodies(scenario, models[IDS], args.bodies, args.seed + index, out)
            for concurrency in args.concurrency:
                rounds: dict[str, list[Measurement]] = {IDS: [], FEATURES: []}
                for round_index in range(args.rounds):
                    order = (IDS, FEATURES) if round_index % 2 == 0 else (FEATURES, IDS)
                    for name in order:
                        url = server.url + scenario.path.format(m=name)
                        m = measure(server, scenario, url, bodies, concurrency, args)
                        rounds[name].append(replace(m, server=name))
                        print_progress(rounds[name][-1])
                results.extend(median_run(runs) for runs in rounds.values())
    print()
    for line in comparison(results):
        print(line)
    missed = [line for line in comparison(results) if line.endswith("MISSED")]
    return 1 if args.check and missed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.features:
        return run_features(args)
    if args.repository is None:
        repository = out / "repository"
        shutil.rmtree(repository, ignore_errors=True)
        model = publish_bench_model(repository, args.seed)
    else:
        repository = args.repository.resolve()
        model = existing_model(repository, args.model)

    ports = {RECSERVE: free_port(), BASELINE: free_port()}
    serve_argv = recserve_argv(args, repository, ports[RECSERVE])
    settings = settings_from_args(build_parser(serve_argv).parse_args(serve_argv))
    for line in machine_report(settings, args):
        print(line)
    print(f"work dir: {out}")

    known = scenarios(model)
    unknown = set(args.scenarios) - {s.name for s in known}
    if unknown:
        raise SystemExit(f"unknown scenarios {sorted(unknown)}; known: {[s.name for s in known]}")
    chosen = [s for s in known if s.name in args.scenarios]
    bodies = {
        s.name: write_bodies(s, model, args.bodies, args.seed + i, out)
        for i, s in enumerate(chosen)
    }
    starters: list[Callable[[], ServerProcess]] = []
    if args.only in (None, BASELINE):
        starters.append(
            lambda: start_baseline(
                model,
                settings.workers,
                settings.ort_intra_op_threads,
                out,
                ports[BASELINE],
                args.nice,
            )
        )
    if args.only in (None, RECSERVE):
        starters.append(lambda: start_recserve(serve_argv, out, ports[RECSERVE], args.nice))

    results: list[Measurement] = []
    with running(starters) as servers:
        for scenario in chosen:
            problems = probe(servers, scenario, model, bodies[scenario.name])
            if problems:
                for name, why in problems.items():
                    print(f"skipped {scenario.name}: {name} has {why}")
                continue
            for concurrency in args.concurrency:
                rounds: dict[str, list[Measurement]] = {s.name: [] for s in servers}
                for round_index in range(args.rounds):
                    # Alternate which server goes first, so neither always follows the other.
                    for server in servers if round_index % 2 == 0 else servers[::-1]:
                        url = server.url + scenario.path.format(m=model.name)
                        m = measure(server, scenario, url, bodies[scenario.name], concurrency, args)
                        rounds[server.name].append(m)
                        print_progress(m)
                results.extend(median_run(runs) for runs in rounds.values())

    print()
    for line in results_table(results):
        print(line)
    key = {(m.scenario, m.concurrency): m for m in results if m.server == BASELINE}
    pairs = [
        (m, key[(m.scenario, m.concurrency)])
        for m in results
        if m.server == RECSERVE and (m.scenario, m.concurrency) in key
    ]
    targets: list[Target] = []
    if args.only is None:
        print()
        for line in ratios_table(pairs):
            print(line)
        targets = evaluate_targets(results, args.concurrency, len(model.item_ids))
        print()
        for line in targets_report(targets):
            print(line)
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    report = {
        "results": [asdict(m) for m in results],
        "targets": [asdict(t) for t in targets],
    }
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    missed = [t for t in targets if t.met is not True]
    if args.check and (missed or args.only is not None):
        return 1
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        raise SystemExit(130) from None
