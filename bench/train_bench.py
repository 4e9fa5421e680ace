"""Training speed of the NumPy trainer against PyTorch on the CPU.

Both train the same NCF-MLP (embedding 32, tower 64-32-16, Adam, lr 1e-3) from the same initial
weights on the same synthetic batches (ML-1M-sized id spaces, uniform random user-item pairs,
4 sampled negatives per positive, 256 rows per batch), with the same number of threads. PyTorch
runs twice: with dense gradients and ``torch.optim.Adam`` (the usual way), and with sparse
embedding gradients and ``SparseAdam`` (the same lazy update as ours). The trainers take turns
in rounds, so that load from other processes falls on all of them alike.

    .venv/bin/python bench/train_bench.py [--steps 20000] [--threads 1]

At 256-row batches the matrices are small, so more threads gain little; on a machine whose
cores are busy with other work, BLAS and OpenMP threads waiting on each other slow both
trainers by an order of magnitude, hence one thread by default.

Needs the ``bench`` extra (PyTorch). Prints a table of samples (rows) per second and the ratios.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20_000, help="timed steps per trainer")
    threads = "BLAS/OpenMP threads for both (1: on a busy 2-core machine more threads thrash)"
    parser.add_argument("--threads", type=int, default=1, help=threads)
    parser.add_argument("--rounds", type=int, default=5, help="turns each trainer takes")
    parser.add_argument("--warmup", type=int, default=200, help="untimed steps per trainer")
    parser.add_argument("--batch", type=int, default=256, help="rows per batch")
    parser.add_argument("--negatives", type=int, default=4, help="negatives per positive")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


ARGS = _parse_args()
# Thread counts must be fixed before NumPy's BLAS and PyTorch start their thread pools.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = str(ARGS.threads)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import itertools  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402

from training.layers import RowGroups, accumulate_rows  # noqa: E402
from training.models import ModelConfig, build_model  # noqa: E402
from training.optim import Adam, train_step  # noqa: E402

N_USERS, N_ITEMS = 6_040, 3_706
CONFIG = ModelConfig(kind="mlp", embedding_dim=32, tower=(64, 32, 16))
LR = 1e-3


@dataclass(frozen=True)
class Batches:
    """Embedding rows and labels, one row of each array per step."""

    users: np.ndarray
    items: np.ndarray
    labels: np.ndarray


def synthetic_batches(n_steps: int, batch: int, negatives: int, seed: int) -> Batches:
    """Uniform random positives, each followed by ``negatives`` random items, shuffled."""
    rng = np.random.default_rng(seed)
    group = 1 + negatives
    n_rows = n_steps * batch
    n_pos = -(-n_rows // group)
    users = np.repeat(rng.integers(1, N_USERS + 1, n_pos), group)[:n_rows]
    items = rng.integers(1, N_ITEMS + 1, n_pos * group)[:n_rows]
    labels = (np.arange(n_rows) % group == 0).astype(np.float32)
    order = rng.permutation(n_rows)
    return Batches(
        users[order].reshape(n_steps, batch),
        items[order].reshape(n_steps, batch),
        labels[order].reshape(n_steps, batch),
    )


Trainer = Callable[[int], float]
"""Runs the step with the given index and returns its loss."""


def numpy_trainer(data: Batches, initial: dict[str, np.ndarray]) -> Trainer:
    model = build_model(CONFIG, N_USERS + 1, N_ITEMS + 1, seed=0)
    model.params.update({name: value.copy() for name, value in initial.items()})
    optimizer = Adam(model.params, lr=LR)
    rng = np.random.default_rng(0)

    def step(k: int) -> float:
        return train_step(model, optimizer, data.users[k], data.items[k], data.labels[k], rng)

    return step


def torch_trainer(data: Batches, initial: dict[str, np.ndarray], *, sparse: bool) -> Trainer:
    import torch
    from torch import nn

    class NCFMLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.user = nn.Embedding(N_USERS + 1, CONFIG.embedding_dim, sparse=sparse)
            self.item = nn.Embedding(N_ITEMS + 1, CONFIG.embedding_dim, sparse=sparse)
            layers: list[nn.Module] = []
            width = 2 * CONFIG.embedding_dim
            for out in CONFIG.tower:
                layers += [nn.Linear(width, out), nn.ReLU()]
                width = out
            layers.append(nn.Linear(width, 1))
            self.tower = nn.Sequential(*layers)

        def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
            x = torch.cat([self.user(users), self.item(items)], dim=1)
            logits: torch.Tensor = self.tower(x).squeeze(1)
            return logits

    model = NCFMLP()
    with torch.no_grad():
        model.user.weight.copy_(torch.from_numpy(initial["user_emb"]))
        model.item.weight.copy_(torch.from_numpy(initial["item_emb"]))
        linears = [m for m in model.tower if isinstance(m, nn.Linear)]
        names = [(f"W{i}", f"b{i}") for i in range(len(CONFIG.tower))] + [("w_out", "b_out")]
        for linear, (weight, bias) in zip(linears, names, strict=True):
            linear.weight.copy_(torch.from_numpy(initial[weight].T.copy()))
            linear.bias.copy_(torch.from_numpy(initial[bias]))
    embeddings: list[torch.Tensor] = [model.user.weight, model.item.weight]
    dense: list[torch.Tensor] = list(model.tower.parameters())
    if sparse:
        optimizers = [torch.optim.SparseAdam(embeddings, lr=LR), torch.optim.Adam(dense, lr=LR)]
    else:
        optimizers = [torch.optim.Adam(embeddings + dense, lr=LR)]
    loss_fn = nn.BCEWithLogitsLoss()
    users = torch.from_numpy(data.users)
    items = torch.from_numpy(data.items)
    labels = torch.from_numpy(data.labels)

    def step(k: int) -> float:
        for optimizer in optimizers:
            optimizer.zero_grad()
        loss = loss_fn(model(users[k], items[k]), labels[k])
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()
        return float(loss.item())

    return step


def accumulation_micro_bench(data: Batches, repeats: int = 2000) -> dict[str, float]:
    """Microseconds to sum one batch's user-embedding gradients per row, three ways."""
    rows = data.users[0]
    grad = np.random.default_rng(0).normal(size=(rows.size, CONFIG.embedding_dim))
    grad = grad.astype(np.float32)
    columns = np.arange(CONFIG.embedding_dim)

    def add_at() -> None:
        unique, inverse = np.unique(rows, return_inverse=True)
        np.add.at(np.zeros((unique.size, grad.shape[1]), np.float32), inverse, grad)

    def bincount() -> None:
        unique, inverse = np.unique(rows, return_inverse=True)
        flat = (inverse[:, None] * grad.shape[1] + columns).ravel()
        np.bincount(flat, weights=grad.ravel(), minlength=unique.size * grad.shape[1])

    def ours() -> None:
        accumulate_rows(RowGroups.of(rows), grad)

    timings = {}
    for name, fn in (("np.add.at", add_at), ("np.bincount", bincount), ("ours (sorted)", ours)):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        timings[name] = 1e6 * (time.perf_counter() - start) / repeats
    return timings


def main() -> int:
    try:
        import torch
    except ImportError:
        print("PyTorch is missing: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    torch.set_num_threads(ARGS.threads)
    torch.manual_seed(ARGS.seed)

    steps, rounds, warmup = ARGS.steps, ARGS.rounds, ARGS.warmup
    if steps < rounds:
        raise SystemExit("--steps must be at least --rounds")
    data = synthetic_batches(warmup + steps, ARGS.batch, ARGS.negatives, ARGS.seed)
    initial = build_model(CONFIG, N_USERS + 1, N_ITEMS + 1, seed=ARGS.seed).params
    trainers: dict[str, Trainer] = {
        "numpy (ours), lazy Adam": numpy_trainer(data, initial),
        "pytorch, dense Adam": torch_trainer(data, initial, sparse=False),
        "pytorch, SparseAdam": torch_trainer(data, initial, sparse=True),
    }
    first_loss = {name: trainer(0) for name, trainer in trainers.items()}
    for trainer in trainers.values():
        for k in range(1, warmup):
            trainer(k)

    seconds = dict.fromkeys(trainers, 0.0)
    round_seconds: dict[str, list[float]] = {name: [] for name in trainers}
    last_losses: dict[str, list[float]] = {name: [] for name in trainers}
    bounds = np.linspace(warmup, warmup + steps, rounds + 1).astype(int)
    for lo, hi in itertools.pairwise(bounds):
        for name, trainer in trainers.items():
            losses = []
            start = time.perf_counter()
            for k in range(lo, hi):
                losses.append(trainer(k))
            round_seconds[name].append(time.perf_counter() - start)
            seconds[name] += round_seconds[name][-1]
            last_losses[name] = losses

    rows = steps * ARGS.batch
    rate = {name: rows / seconds[name] for name in trainers}
    ours = next(iter(trainers))
    print(
        f"NCF-MLP emb {CONFIG.embedding_dim}, tower {'-'.join(map(str, CONFIG.tower))}, "
        f"batch {ARGS.batch}, {ARGS.negatives} negatives, {N_USERS} users x {N_ITEMS} items; "
        f"{steps} timed steps in {rounds} rounds after {warmup} warm-up steps; "
        f"{ARGS.threads} thread(s); numpy {np.__version__}, torch {torch.__version__}"
    )
    header = f"{'trainer':<26}{'samples/s':>12}{'us/step':>10}{'loss@1':>9}{'loss@end':>10}"
    print(header)
    print("-" * len(header))
    for name in trainers:
        end_loss = float(np.mean(last_losses[name]))
        print(
            f"{name:<26}{rate[name]:>12,.0f}{1e6 * seconds[name] / steps:>10.0f}"
            f"{first_loss[name]:>9.4f}{end_loss:>10.4f}"
        )
    print()
    for name in trainers:
        if name != ours:
            per_round = np.array(round_seconds[name]) / np.array(round_seconds[ours])
            print(
                f"ratio ours / {name}: {rate[ours] / rate[name]:.2f}x "
                f"(rounds: {per_round.min():.2f}x to {per_round.max():.2f}x)"
            )
    fastest = max(rate[name] for name in trainers if name != ours)
    print(f"ratio ours / fastest pytorch: {rate[ours] / fastest:.2f}x")
    print()
    print("embedding gradient, one batch's user rows summed per row (us per call):")
    for name, micros in accumulation_micro_bench(data).items():
        print(f"  {name:<16}{micros:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
