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
import json
import os
import random
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.factories import latest_ids, publish_mlp_version, random_params  # noqa: E402
from tests.raw_http import AsyncConnection  # noqa: E402
from tests.server_process import (  # noqa: E402
    ServerError,
    ServerProcess,
    launch,
    rss_bytes,
    serve_command,
)

OUT = ROOT / "bench" / "out" / "soak"
MODEL_NAME = "ml1m-mlp"
N_USERS, N_ITEMS, DIM, TOWER = 6_040, 3_706, 32, (64, 256, 128, 64)
CANDIDATES = 100
MIX = (("score", 0.7), ("infer", 0.2), ("recommend", 0.1))
MAX_IN_FLIGHT = 1024  # beyond this the client counts a scheduled request as an error, unsent
RSS_GROWTH_LIMIT = 0.10
JSON = {"Content-Type": "application/json"}


# ----------------------------------------------------------------------------- the model


def publish_model(repository: Path, seed: int = 0) -> None:
    params = random_params(N_USERS + 1, N_ITEMS + 1, dim=DIM, tower=TOWER, seed=seed)
    publish_mlp_version(
        repository,
        MODEL_NAME,
        params,
        [str(u) for u in range(1, N_USERS + 1)],
        [str(i) for i in range(1, N_ITEMS + 1)],
        hyperparameters={"embedding_dim": DIM, "tower": list(TOWER)},
        dataset={"name": "random weights, MovieLens-1M sized", "size": 0},
    )


@dataclass(frozen=True)
class Workload:
    model: str
    user_ids: list[str]
    item_ids: list[str]

    @classmethod
    def of(cls, repository: Path, model: str) -> Workload:
        try:
            _, user_ids, item_ids = latest_ids(repository, model)
        except LookupError as exc:
            raise SystemExit(str(exc)) from None
        return cls(model, user_ids, item_ids)

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
def running_server(repository: Path, log_path: Path) -> Iterator[ServerProcess]:
    """``recserve serve`` on a free port, with this environment's settings; SIGTERM (then
    SIGKILL) after."""
    server = launch(serve_command(repository), log_path, env=os.environ)
    try:
        try:
            server.wait_listening(180)
        except ServerError:
            raise SystemExit(f"the server did not start; see {log_path}") from None
        yield server
    finally:
        with contextlib.suppress(ServerError):
            server.stop(60)


def rss_mib(pid: int) -> float:
    return rss_bytes(pid) / 2**20


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

    def __init__(self, port: int, requests: list[tuple[str, bytes]], max_in_flight: int) -> None:
        self.port = port
        self.requests = requests
        self.max_in_flight = max_in_flight
        self.next = 0
        self.idle: list[AsyncConnection] = []
        self.busy = 0  # requests in flight, each on its own connection
        self.window = Window()
        self.saturated = 0  # scheduled requests not sent: every connection was busy

    def _take(self) -> tuple[str, bytes]:
        request = self.requests[self.next % len(self.requests)]
        self.next += 1
        return request

    async def _send(self, scheduled: float) -> None:
        connection = self.idle.pop() if self.idle else AsyncConnection(self.port, reconnect=True)
        path, body = self._take()
        error: str | None = None
        self.busy += 1
        try:
            reply = await asyncio.wait_for(connection.request("POST", path, body, JSON), 60)
            if reply.status != 200:
                error = f"HTTP {reply.status}"
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
            error = type(exc).__name__
            await connection.close()
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
        try:
            latest_ids(repository, MODEL_NAME)
        except LookupError:
            publish_model(repository)
    workload = Workload.of(repository, args.model)
    requests = workload.bodies(4096, seed=0)

    with running_server(repository, OUT / "recserve.log") as server:
        return asyncio.run(soak(args, server, requests))


async def soak(
    args: argparse.Namespace, server: ServerProcess, requests: list[tuple[str, bytes]]
) -> int:
    load = Load(server.port, requests, args.max_in_flight)
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
    rss_start = rss_mib(server.pid)
    print(f"RSS after warm-up: {rss_start:.1f} MiB", flush=True)
    print(
        f"{'t (s)':>6} {'requests':>9} {'errors':>7} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'RSS MiB':>8} {'CPU %':>6} {'load':>5}",
        flush=True,
    )
    intervals: list[dict[str, Any]] = []
    totals = Window()
    started = time.monotonic()
    cpu_at = [server.cpu_seconds()]

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
        cpu_now = server.cpu_seconds()
        cpu_used, cpu_at[0] = cpu_now - cpu_at[0], cpu_now
        row = {
            "t": round(elapsed, 1),
            "requests": len(window.latencies),
            "errors": window.errors,
            "rate": len(window.latencies) / span if span > 0 else 0.0,
            "p50_ms": percentile(window.latencies, 50) * 1e3,
            "p99_ms": percentile(window.latencies, 99) * 1e3,
            "rss_mib": rss_mib(server.pid),
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
    rss_end = rss_mib(server.pid)
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
