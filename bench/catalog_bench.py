"""Recommend at catalog scale: exhaustive ranking against two-stage (retrieve, then rank).

For each catalog size, publishes an NCF-MLP ranker with a small tower (embedding 16, tower 32-16,
random weights: the latency figures do not depend on them) and 64-wide retrieval vectors (random
around 256 centres, as trained embeddings cluster) through the repository contract, starts one
``recserve serve`` (one at a time: a 1M-item version holds about 0.6 GB), and for each mode
measures through HTTP: latency at concurrency 1 (raw keep-alive requests, bounded in count and
time), requests/s at concurrency 16 (wrk, ``bench/wrk/post_bodies.lua``), the index build time
(``recserve_retrieval_index_build_seconds``) and the server's resident memory. ``recall_at_10``
is the share of the exhaustive ranking's top 10 that two-stage returns over sampled users, on
these random weights (marked ``(random)``), or with ``--trained REPO/MODEL`` on a trained version
that ships retrieval vectors. One line per size and mode:

    catalog_bench items=N mode=M p50_ms=.. p99_ms=.. rps_c16=.. recall_at_10=.. build_s=.. rss_mb=..

    .venv/bin/python bench/catalog_bench.py [--sizes 100000,1000000] [--requests 200]
        [--duration 5] [--recall-users 20] [--trained REPO/MODEL]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.serve_bench import run_wrk  # noqa: E402
from modelrepo import RetrievalVectors  # noqa: E402
from tests.factories import latest_ids, publish_mlp_version, random_params  # noqa: E402
from tests.raw_http import connect, read_response, request_head  # noqa: E402
from tests.server_process import ServerProcess, rss_bytes, start_server  # noqa: E402

N_USERS, DIM, RANK_DIM, TOWER = 10_000, 64, 16, (32, 16)
MODES = ("exhaustive", "two_stage")
MODEL = "catalog"


def clustered(rng: np.random.Generator, n: int, centres: np.ndarray) -> np.ndarray:
    picked = centres[rng.integers(0, len(centres), n)]
    return (picked + 0.7 * rng.normal(size=(n, centres.shape[1]))).astype(np.float32)


def publish(repository: Path, n_items: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(256, DIM)).astype(np.float32)
    vectors = RetrievalVectors(
        clustered(rng, N_USERS + 1, centres), clustered(rng, n_items + 1, centres)
    )
    params = random_params(N_USERS + 1, n_items + 1, dim=RANK_DIM, tower=TOWER, seed=seed)
    users = [f"u{i}" for i in range(N_USERS)]
    items = [f"i{i}" for i in range(n_items)]
    publish_mlp_version(repository, MODEL, params, users, items, retrieval=vectors)


class Client:
    """One keep-alive connection posting JSON bodies."""

    def __init__(self, port: int, path: str) -> None:
        self.sock, self.path = connect(port, timeout_s=120), path

    def post(self, body: dict[str, Any]) -> Any:
        data = json.dumps(body).encode()
        head = request_head("POST", self.path, {"Content-Type": "application/json"}, len(data))
        self.sock.sendall(head + data)
        reply = read_response(self.sock)
        if reply.status != 200:
            raise RuntimeError(f"{reply.status}: {reply.body[:300]!r}")
        return reply.json()


def latencies(client: Client, bodies: list[dict[str, Any]], budget_s: float) -> np.ndarray:
    """Milliseconds per request at concurrency 1, within ``budget_s`` (at least 5 requests)."""
    times: list[float] = []
    deadline = time.monotonic() + budget_s
    for body in bodies:
        started = time.perf_counter()
        client.post(body)
        times.append((time.perf_counter() - started) * 1000)
        if time.monotonic() > deadline and len(times) >= 5:
            break
    return np.array(times)


def top10(client: Client, users: list[str], mode: str) -> list[set[str]]:
    body = {"k": 10, "mode": mode}
    return [{i["item_id"] for i in client.post({**body, "user_id": u})["items"]} for u in users]


def recall(client: Client, users: list[str]) -> float:
    exact, fast = top10(client, users, "exhaustive"), top10(client, users, "two_stage")
    return float(np.mean([len(a & b) / max(1, len(a)) for a, b in zip(exact, fast, strict=True)]))


def gauge(server: ServerProcess, name: str) -> float:
    import urllib.request

    with urllib.request.urlopen(f"{server.url}/metrics", timeout=30) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return float("nan")


def run_size(
    repository: Path, n_items: int, args: argparse.Namespace, recall_note: str
) -> list[str]:
    log = repository.parent / f"server-{n_items}.log"
    server = start_server(repository, log, "--poll-interval-s", "0", timeout_s=600)
    lines = []
    try:
        server.wait_ready(600)
        path = f"/v1/models/{MODEL}/recommend"
        client = Client(server.port, path)
        rng = np.random.default_rng(1)
        users = [f"u{i}" for i in rng.integers(0, N_USERS, args.requests)]
        build_s = gauge(server, "recserve_retrieval_index_build_seconds")
        recall_users = users[: args.recall_users]
        at10 = recall(client, recall_users) if args.trained is None else float("nan")
        for mode in MODES:
            client = Client(server.port, path)  # the server closes one left idle during wrk
            bodies = [{"user_id": u, "k": 10, "mode": mode} for u in users]
            latencies(client, bodies[:3], 60)  # warm
            ms = latencies(client, bodies, args.budget)
            body_file = repository.parent / f"bodies-{mode}.jsonl"
            body_file.write_text("".join(json.dumps(b) + "\n" for b in bodies))
            wrk = run_wrk(
                f"{server.url}{path}",
                body_file,
                16,
                args.duration,
                argparse.Namespace(wrk_threads=2, timeout=30, nice=0),
            )
            errors = wrk["non2xx"] + sum(wrk["socket_errors"].values())
            rps = (wrk["requests"] - errors) / (wrk["duration_us"] / 1e6)  # answered 200 only
            rss_mb = rss_bytes(server.process.pid) / 2**20
            lines.append(
                f"catalog_bench items={n_items} mode={mode} p50_ms={np.percentile(ms, 50):.2f} "
                f"p99_ms={np.percentile(ms, 99):.2f} rps_c16={rps:.1f} "
                f"recall_at_10={at10:.3f}{recall_note} build_s={build_s:.2f} rss_mb={rss_mb:.0f}"
                + (f" errors={errors}" if errors else "")
                + f" n_c1={ms.size}"
            )
            print(lines[-1], flush=True)
    finally:
        server.stop(60)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--requests", type=int, default=200, help="most requests at c1 per mode")
    parser.add_argument("--budget", type=float, default=20.0, help="seconds at c1 per mode")
    parser.add_argument("--duration", type=int, default=5, help="wrk seconds at c16")
    parser.add_argument("--recall-users", type=int, default=20)
    parser.add_argument("--trained", help="REPO/MODEL: recall on a trained version with vectors")
    args = parser.parse_args(argv)
    for n_items in (int(s) for s in args.sizes.split(",") if s):
        with tempfile.TemporaryDirectory(prefix="catalog-bench-") as tmp:
            repository = Path(tmp) / "repo"
            started = time.monotonic()
            publish(repository, n_items)
            print(f"# published {n_items} items in {time.monotonic() - started:.1f} s", flush=True)
            run_size(repository, n_items, args, "(random)")
    if args.trained:
        print(f"catalog_bench trained={args.trained} recall_at_10={trained_recall(args):.3f}")
    return 0


def trained_recall(args: argparse.Namespace) -> float:
    """Recall@10 of two-stage against exhaustive on a trained version (its users sampled)."""
    repo, model = args.trained.rsplit("/", 1)
    _, user_ids, _ = latest_ids(Path(repo), model)
    with tempfile.TemporaryDirectory(prefix="catalog-bench-") as tmp:
        log = Path(tmp) / "server.log"
        server = start_server(Path(repo), log, "--poll-interval-s", "0", timeout_s=600)
        try:
            server.wait_ready(600)
            client = Client(server.port, f"/v1/models/{model}/recommend")
            rng = np.random.default_rng(2)
            users = [user_ids[i] for i in rng.choice(len(user_ids), args.recall_users, False)]
            return recall(client, users)
        finally:
            server.stop(60)


if __name__ == "__main__":
    raise SystemExit(main())
