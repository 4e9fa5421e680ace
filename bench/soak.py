"""Soak test: the server under steady load for a long time, watching errors, p99 and memory.

Publishes a MovieLens-1M-sized NCF-MLP (random weights) into ``bench/out/soak/repository`` (or
serves ``--repository DIR --model NAME``), starts ``recserve serve`` on a free 127.0.0.1 port,
measures its peak throughput with a short closed-loop run, then sends requests at a fixed rate
(open loop: on a schedule, whatever the answers do) of ``--rate`` requests/s, by default 70% of
that peak, for ``--duration`` seconds. The mix is that of a ranking page: 70% ``/v1 score`` of 100
candidates, 20% ``/v2 infer`` of 100 rows, 10% ``/v1 recommend`` over the whole catalog.

Every ``--interval`` seconds it prints the requests answered, the errors (any answer but 200,
requests with no answer, and requests not sent because ``--max-in-flight`` were outstanding), the
rate achieved, p50 and p99 latency (from the time each request was scheduled, so a stalled server
cannot hide its queueing), the server's resident memory and CPU use, and the machine's load
average (on a shared machine, stalls come with a high load); at the end, a summary with the growth
of resident memory from the end of the warm-up to the end.

    .venv/bin/python bench/soak.py [--duration 600] [--rate N] [--interval 30] [--warmup 30]

Exits 0 when there were no errors and memory grew less than 10%, else 1. Results also go to
``bench/out/soak/results.json`` and the server's log to ``bench/out/soak/recserve.log``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from training.export import INPUT_NAMES, OUTPUT_NAME, export_onnx  # noqa: E402
from training.publish import existing_versions, publish_version  # noqa: E402

OUT = ROOT / "bench" / "out" / "soak"
MODEL_NAME = "ml1m-mlp"
N_USERS, N_ITEMS, DIM, TOWER = 6_040, 3_706, 32, (64, 256, 128, 64)
CANDIDATES = 100
MIX = (("score", 0.7), ("infer", 0.2), ("recommend", 0.1))
MAX_IN_FLIGHT = 1024  # beyond this the client counts a scheduled request as an error, unsent
RSS_GROWTH_LIMIT = 0.10
_LISTENING = re.compile(rb"Uvicorn running on http://127\.0\.0\.1:(\d+)")


# ----------------------------------------------------------------------------- the model


def publish_model(repository: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    params: dict[str, np.ndarray] = {
        "user_emb": rng.normal(0, 0.5, (N_USERS + 1, DIM)),
        "item_emb": rng.normal(0, 0.5, (N_ITEMS + 1, DIM)),
    }
    width = 2 * DIM
    for layer, out in enumerate(TOWER):
        params[f"W{layer}"] = rng.normal(0, np.sqrt(2 / width), (width, out))
        params[f"b{layer}"] = rng.normal(0, 0.05, out)
        width = out
    params["w_out"] = rng.normal(0, np.sqrt(1 / width), (width, 1))
    params["b_out"] = np.zeros(1)
    params = {name: value.astype(np.float32) for name, value in params.items()}

    def write(staging: Path) -> None:
        export_onnx(params, "mlp", staging / "model.onnx")
        (staging / "users.txt").write_text("".join(f"{u}\n" for u in range(1, N_USERS + 1)))
        (staging / "items.txt").write_text("".join(f"{i}\n" for i in range(1, N_ITEMS + 1)))
        metadata = {
            "kind": "mlp",
            "hyperparameters": {"embedding_dim": DIM, "tower": list(TOWER)},
            "inputs": [{"name": n, "datatype": "INT64", "shape": [-1]} for n in INPUT_NAMES],
            "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1]}],
            "n_user_rows": N_USERS + 1,
            "n_item_rows": N_ITEMS + 1,
            "unknown_row": 0,
            "dataset": {"name": "random weights, MovieLens-1M sized", "size": 0},
            "model_sha256": hashlib.sha256((staging / "model.onnx").read_bytes()).hexdigest(),
        }
        (staging / "metadata.json").write_text(json.dumps(metadata))

    publish_version(repository, MODEL_NAME, write)


@dataclass(frozen=True)
class Workload:
    model: str
    user_ids: list[str]
    item_ids: list[str]

    @classmethod
    def of(cls, repository: Path, model: str) -> Workload:
        versions = existing_versions(repository / model)
        if not versions:
            raise SystemExit(f"no versions of model {model!r} under {repository}")
        version_dir = repository / model / str(versions[-1])
        return cls(
            model,
            (version_dir / "users.txt").read_text().split(),
            (version_dir / "items.txt").read_text().split(),
        )

    def bodies(self, n: int, seed: int) -> list[tuple[str, bytes]]:
        """``n`` requests (path, JSON body) in the mix's proportions, in random order."""
        rng = random.Random(seed)
        kinds = [kind for kind, share in MIX for _ in range(round(share * 100))]
        requests = []
        for _ in range(n):
            kind = rng.choice(kinds)
            user = rng.choice(self.user_ids)
            if kind == "score":
                items = rng.sample(self.item_ids, CANDIDATES)
                body: dict[str, Any] = {"user_id": user, "item_ids": items}
                path = f"/v1/models/{self.model}/score"
            elif kind == "recommend":
                body = {"user_id": user, "k": 10}
                path = f"/v1/models/{self.model}/recommend"
            else:
                row = rng.randrange(1, len(self.user_ids) + 1)
                items_rows = rng.sample(range(1, len(self.item_ids) + 1), CANDIDATES)
                body = {
                    "inputs": [
                        {"name": "user", "shape": [CANDIDATES], "datatype": "INT64",
                         "data": [row] * CANDIDATES},
                        {"name": "item", "shape": [CANDIDATES], "datatype": "INT64",
                         "data": items_rows},
                    ]
                }  # fmt: skip
                path = f"/v2/models/{self.model}/infer"
            requests.append((path, json.dumps(body, separators=(",", ":")).encode()))
        return requests


# ----------------------------------------------------------------------------- the server


@contextlib.contextmanager
def running_server(repository: Path, log_path: Path) -> Iterator[tuple[str, int, int]]:
    """``recserve serve`` on a free port: yields (host, port, pid); SIGTERM (then SIGKILL) after."""
    env = dict(os.environ)
    command = [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", "0"]
    command += ["--model-repository", str(repository)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 180
        while True:
            match = _LISTENING.search(log_path.read_bytes())
            if match:
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start; see {log_path}")
            time.sleep(0.1)
        yield "127.0.0.1", int(match.group(1)), process.pid
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------- the client


class Connection:
    """One keep-alive HTTP/1.1 connection; the client does as little work as it can.

    A connection left idle for longer than the server keeps it (uvicorn: 5 s) is not reused; one
    the server closed just as it was reused is reopened and the request sent again, once, as
    HTTP clients do (the server closed it before reading the request).
    """

    IDLE_S = 4.0

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last_used = 0.0

    async def post(self, path: str, body: bytes) -> int:
        if self.writer is not None and time.monotonic() - self.last_used > self.IDLE_S:
            self.close()
        reused = self.writer is not None
        try:
            return await self._post(path, body)
        except (ConnectionResetError, asyncio.IncompleteReadError) as exc:
            if not reused or (isinstance(exc, asyncio.IncompleteReadError) and exc.partial):
                raise
            self.close()
            return await self._post(path, body)

    async def _post(self, path: str, body: bytes) -> int:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        head_in = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head_in.split(b" ", 2)[1])
        length = 0
        close = False
        for line in head_in.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        await self.reader.readexactly(length)
        self.last_used = time.monotonic()
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class Window:
    """What was answered in one interval."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)

    def add(self, seconds: float, error: str | None) -> None:
        self.latencies.append(seconds)
        if error is not None:
            self.errors += 1
            self.error_kinds[error] = self.error_kinds.get(error, 0) + 1


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


class Load:
    """Sends requests from a pool of connections, on a schedule or as fast as answered."""

    def __init__(
        self, host: str, port: int, requests: list[tuple[str, bytes]], max_in_flight: int
    ) -> None:
        self.host, self.port = host, port
        self.requests = requests
        self.max_in_flight = max_in_flight
        self.next = 0
        self.idle: list[Connection] = []
        self.busy = 0  # requests in flight, each on its own connection
        self.window = Window()
        self.saturated = 0  # scheduled requests not sent: every connection was busy

    def _take(self) -> tuple[str, bytes]:
        request = self.requests[self.next % len(self.requests)]
        self.next += 1
        return request

    async def _send(self, scheduled: float) -> None:
        connection = self.idle.pop() if self.idle else Connection(self.host, self.port)
        path, body = self._take()
        error: str | None = None
        self.busy += 1
        try:
            status = await asyncio.wait_for(connection.post(path, body), 60)
            if status != 200:
                error = f"HTTP {status}"
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
            error = type(exc).__name__
            connection.close()
        finally:
            self.busy -= 1
        self.window.add(time.monotonic() - scheduled, error)
        self.idle.append(connection)

    async def closed_loop(self, connections: int, seconds: float, windows: int = 5) -> float:
        """Requests/s answered with ``connections`` requests always in flight: the median of
        ``windows`` equal parts of the run, so that a moment of a busy or idle machine does not
        set it."""
        started = time.monotonic()
        end = started + seconds
        width = seconds / windows
        done = [0] * windows

        async def worker() -> None:
            while time.monotonic() < end:
                await self._send(time.monotonic())
                window = int((time.monotonic() - started) / width)
                if window < windows:
                    done[window] += 1

        await asyncio.gather(*(worker() for _ in range(connections)))
        return float(np.median(done)) / width

    async def open_loop(
        self,
        rate: float,
        seconds: float,
        ticker: Callable[[], Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        """Send at ``rate`` per second for ``seconds``, running ``ticker()`` meanwhile."""
        tasks: set[asyncio.Task[None]] = set()
        started = time.monotonic()
        end = started + seconds
        i = 0
        ticking = asyncio.create_task(ticker()) if ticker is not None else None
        try:
            while True:
                scheduled = started + i / rate
                if scheduled >= end:
                    break
                delay = scheduled - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                i += 1
                if self.busy >= self.max_in_flight:
                    self.saturated += 1
                    self.window.add(time.monotonic() - scheduled, "client saturated")
                    continue
                task = asyncio.create_task(self._send(scheduled))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.wait(tasks)
        finally:
            if ticking is not None:
                ticking.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticking


# ----------------------------------------------------------------------------- the run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="soak seconds (600)")
    parser.add_argument("--rate", type=float, help="requests/s (default: 70%% of the peak)")
    parser.add_argument("--share", type=float, default=0.7, help="of the peak, without --rate")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds per report line")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds before measuring")
    parser.add_argument("--peak-seconds", type=float, default=30.0, help="peak measurement")
    parser.add_argument("--peak-connections", type=int, default=32)
    parser.add_argument("--max-in-flight", type=int, default=MAX_IN_FLIGHT)
    parser.add_argument("--repository", type=Path, help="serve this repository instead")
    parser.add_argument("--model", default=MODEL_NAME, help="model to load (with --repository)")
    args = parser.parse_args(argv)

    OUT.mkdir(parents=True, exist_ok=True)
    repository = args.repository
    if repository is None:
        repository = OUT / "repository"
        if not existing_versions(repository / MODEL_NAME):
            publish_model(repository)
    workload = Workload.of(repository, args.model)
    requests = workload.bodies(4096, seed=0)

    with running_server(repository, OUT / "recserve.log") as (host, port, pid):
        return asyncio.run(soak(args, host, port, pid, requests))


async def soak(
    args: argparse.Namespace, host: str, port: int, pid: int, requests: list[tuple[str, bytes]]
) -> int:
    load = Load(host, port, requests, args.max_in_flight)
    peak = await load.closed_loop(args.peak_connections, args.peak_seconds)
    peak_window, load.window = load.window, Window()
    rate = args.rate or args.share * peak
    print(
        f"peak: {peak:.0f} requests/s (median of 5 windows; {args.peak_connections} "
        f"connections, closed loop, "
        f"p99 {percentile(peak_window.latencies, 99) * 1e3:.1f} ms, "
        f"{peak_window.errors} errors); soak rate: {rate:.0f} requests/s for {args.duration:g} s "
        f"after {args.warmup:g} s of warm-up",
        flush=True,
    )

    await load.open_loop(rate, args.warmup)  # reaches a steady state first
    load.window = Window()
    rss_start = rss_mib(pid)
    print(f"RSS after warm-up: {rss_start:.1f} MiB", flush=True)
    print(
        f"{'t (s)':>6} {'requests':>9} {'errors':>7} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'RSS MiB':>8} {'CPU %':>6} {'load':>5}",
        flush=True,
    )
    intervals: list[dict[str, Any]] = []
    totals = Window()
    started = time.monotonic()
    cpu_at = [cpu_seconds(pid)]

    def report(final: bool = False) -> None:
        elapsed = time.monotonic() - started
        span = elapsed - (intervals[-1]["t"] if intervals else 0.0)
        window, load.window = load.window, Window()
        totals.latencies += window.latencies
        totals.errors += window.errors
        for kind, count in window.error_kinds.items():
            totals.error_kinds[kind] = totals.error_kinds.get(kind, 0) + count
        if final and span < 1.0:
            return  # the stragglers of the last interval, already reported
        cpu_now = cpu_seconds(pid)
        cpu_used, cpu_at[0] = cpu_now - cpu_at[0], cpu_now
        row = {
            "t": round(elapsed, 1),
            "requests": len(window.latencies),
            "errors": window.errors,
            "rate": len(window.latencies) / span if span > 0 else 0.0,
            "p50_ms": percentile(window.latencies, 50) * 1e3,
            "p99_ms": percentile(window.latencies, 99) * 1e3,
            "rss_mib": rss_mib(pid),
            # the server's CPU use (100 = one core) and the machine's 1-minute load average
            "cpu_percent": 100 * cpu_used / span if span > 0 else 0.0,
            "load_average": os.getloadavg()[0],
        }
        intervals.append(row)
        print(
            f"{row['t']:>6.0f} {row['requests']:>9,} {row['errors']:>7,} {row['rate']:>7.0f} "
            f"{row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} {row['rss_mib']:>8.1f} "
            f"{row['cpu_percent']:>6.0f} {row['load_average']:>5.1f}",
            flush=True,
        )

    async def tick() -> None:
        while True:
            await asyncio.sleep(args.interval)
            report()

    await load.open_loop(rate, args.duration, tick)
    report(final=True)  # the last, partial interval
    rss_end = rss_mib(pid)
    growth = rss_end / rss_start - 1
    summary = {
        "peak_rps": peak,
        "target_rps": rate,
        "duration_s": args.duration,
        "requests": len(totals.latencies),
        "errors": totals.errors,
        "error_kinds": totals.error_kinds,
        "achieved_rps": len(totals.latencies) / args.duration,
        "p50_ms": percentile(totals.latencies, 50) * 1e3,
        "p99_ms": percentile(totals.latencies, 99) * 1e3,
        "p99_ms_worst_interval": max(row["p99_ms"] for row in intervals),
        "rss_start_mib": rss_start,
        "rss_end_mib": rss_end,
        "rss_growth": growth,
        "intervals": intervals,
    }
    (OUT / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    ok = totals.errors == 0 and growth < RSS_GROWTH_LIMIT
    print(
        f"summary: {summary['requests']:,} requests in {args.duration:g} s "
        f"({summary['achieved_rps']:.0f}/s, target {rate:.0f}/s = "
        f"{rate / peak:.0%} of the peak {peak:.0f}/s); errors {totals.errors:,}"
        + (f" {totals.error_kinds}" if totals.errors else "")
        + f"; p50 {summary['p50_ms']:.1f} ms, p99 {summary['p99_ms']:.1f} ms "
        f"(worst interval {summary['p99_ms_worst_interval']:.1f} ms); RSS {rss_start:.1f} -> "
        f"{rss_end:.1f} MiB ({growth:+.1%}, limit +{RSS_GROWTH_LIMIT:.0%}): "
        + ("PASS" if ok else "FAIL"),
        flush=True,
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
