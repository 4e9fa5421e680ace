"""The HTTP edge's cost and what it buys: recserve's protocol against uvicorn's own, in one run.

Starts two servers on one repository (one worker each): ``edge``, as ``recserve serve`` runs, and
``plain``, the same server with uvicorn's own httptools protocol (no header, time or connection
limits). Then, for each server:

- hot path: wrk sends single-row V2 ``infer`` requests (``bench/wrk/post_bodies.lua``), the two
  servers taking turns round by round so load from elsewhere falls on both alike; prints the
  median requests/s and server CPU per request of each, and edge / plain;
- header flood: eight connections each send a request line and 50 MB of header fields and never
  finish; prints the server's resident memory idle, while they hold their blocks, and after they
  close.

    .venv/bin/python bench/edge_bench.py [--rounds 12] [--seconds 5] [--flood-mb 50]

Needs wrk (``make system-deps``). Exits 0: it is a report.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.factories import publish_random_version  # noqa: E402
from tests.raw_http import connect  # noqa: E402
from tests.server_process import (  # noqa: E402
    ServerProcess,
    launch,
    rss_bytes,
    serve_command,
    server_env,
)

LUA_SCRIPT = Path(__file__).resolve().parent / "wrk" / "post_bodies.lua"
MiB = 1 << 20
FLOOD_CONNECTIONS = 8
# `recserve serve` with uvicorn's own protocol in place of the edge's: the baseline.
PLAIN = (
    "import sys, service.server as s; s.edge_protocol = lambda settings: 'httptools'; "
    "from recserve.cli import main; sys.exit(main(sys.argv[1:]))"
)
SINGLE_ROW = {
    "inputs": [
        {"name": "user", "shape": [1], "datatype": "INT64", "data": [3]},
        {"name": "item", "shape": [1], "datatype": "INT64", "data": [7]},
    ]
}


def start(name: str, repository: Path, out: Path) -> ServerProcess:
    serve = serve_command(repository)
    argv = serve if name == "edge" else [sys.executable, "-c", PLAIN, *serve[3:]]
    return launch(argv, out / f"{name}.log", env=server_env(), name=name).wait_listening(180)


def wrk_round(server: ServerProcess, bodies: Path, seconds: int) -> tuple[float, float]:
    """Requests/s of one wrk run, and the server's CPU microseconds per request in it."""
    cpu_before = server.cpu_seconds()
    out = subprocess.run(
        ["wrk", "-t1", "-c16", f"-d{seconds}s", "-s", str(LUA_SCRIPT),
         f"{server.url}/v2/models/recs/infer", "--", str(bodies)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    if result.get("non2xx") or result.get("errors"):
        raise SystemExit(f"{server.name}: wrk saw errors: {result}")
    rps = float(
        next(line for line in out.splitlines() if line.startswith("Requests/sec")).split()[1]
    )
    return rps, (server.cpu_seconds() - cpu_before) / (rps * seconds) * 1e6


def flood(server: ServerProcess, megabytes: int) -> tuple[float, float, float]:
    """Resident MiB idle, while eight clients hold unfinished header blocks, after they close."""
    line = b"X-Filler: " + b"a" * 1000 + b"\r\n"
    block = line * (megabytes * MiB // len(line))
    idle = rss_bytes(server.pid) / MiB
    sockets = [connect(server.port, 60) for _ in range(FLOOD_CONNECTIONS)]

    def send(sock: socket.socket) -> None:
        try:
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
            sock.sendall(block)  # never ended by the blank line that ends a head
        except OSError:
            pass  # the edge refuses the head (431) and closes: what it is for

    threads = [threading.Thread(target=send, args=(sock,)) for sock in sockets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    time.sleep(0.5)
    during = rss_bytes(server.pid) / MiB
    for sock in sockets:
        sock.close()
    time.sleep(2.0)
    return idle, during, rss_bytes(server.pid) / MiB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12, help="wrk runs per server")
    parser.add_argument("--seconds", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--flood-mb", type=int, default=50, help="header megabytes per client")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        out = Path(tmp)
        publish_random_version(out / "repo", "recs")
        bodies = out / "bodies.jsonl"
        bodies.write_text(json.dumps(SINGLE_ROW) + "\n")
        names = ("edge", "plain")
        servers = {name: start(name, out / "repo", out) for name in names}
        try:
            runs: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
            for round_ in range(args.rounds):
                for name in names if round_ % 2 == 0 else names[::-1]:
                    runs[name].append(wrk_round(servers[name], bodies, args.seconds))
            memory = {name: flood(servers[name], args.flood_mb) for name in names}
        finally:
            for server in servers.values():
                server.stop(60)

    rps = {name: statistics.median(r for r, _ in runs[name]) for name in names}
    cpu = {name: statistics.median(c for _, c in runs[name]) for name in names}
    print(f"hot path: single-row V2 infer, wrk 1 thread 16 connections, {args.rounds} runs of "
          f"{args.seconds} s each, interleaved; medians")  # fmt: skip
    for name in names:
        spread = f"{min(r for r, _ in runs[name]):.0f}-{max(r for r, _ in runs[name]):.0f}"
        print(
            f"  {name:<6} {rps[name]:>8.0f} req/s (runs {spread})  {cpu[name]:6.1f} us CPU/request"
        )
    print(
        f"  edge / plain: {rps['edge'] / rps['plain']:.2f}x req/s, "
        f"{cpu['edge'] / cpu['plain']:.2f}x CPU per request"
    )
    print(f"header flood: {FLOOD_CONNECTIONS} clients x {args.flood_mb} MB of unfinished headers; "
          "resident MiB idle / holding / after they close")  # fmt: skip
    for name in names:
        idle, during, after = memory[name]
        print(f"  {name:<6} {idle:6.0f} / {during:6.0f} / {after:6.0f}  ({after / idle - 1:+.0%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
