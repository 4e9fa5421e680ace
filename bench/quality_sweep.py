"""Model quality of ``recserve train`` configurations, scored on a split training never sees.

The split is made here, independently of training's own: per user, the latest interaction by
timestamp (ties: the later line of the file) is the test item, ranked against 99 items drawn
uniformly (fixed seed) from those the user never interacted with anywhere in the file. Everything
else is written as a MovieLens ``u.data`` file, and each configuration runs the real command on it
as a subprocess (refit included), timed by the wall clock:

    recserve train --data <train file> --model <name> --repository <work repo> --quiet [flags]

The published version is then scored without training's evaluation code: ``modelrepo`` reads it,
its vocabularies map raw ids to rows (unknown ids to row 0), ONNX Runtime runs ``model.onnx``, and
the test item's rank among its 100 candidates gives HR@10 and NDCG@10. Ties count against the test
item (its rank is the number of candidates scoring at least as high), for every row alike. The
popularity row scores an item by its count in the training file.

    .venv/bin/python bench/quality_sweep.py --data /tmp/u.data                 # every config
    .venv/bin/python bench/quality_sweep.py --data ml-100k.inter --only default,mlp
    .venv/bin/python bench/quality_sweep.py --data u.data --config 'try:--kind mf --l2 1e-4'

``--data`` takes what ``recserve train`` reads (``u.data``, ``ratings.dat``, CSV) or a typed TSV
atomic file (``ml-100k.inter``: ``user_id:token``, ``item_id:token``, ``timestamp:float``
columns). Work files go under ``bench/out/quality_sweep/`` (ignored by git).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from modelrepo import Source, list_versions, read_version  # noqa: E402
from training.data import load  # noqa: E402

OUT = ROOT / "bench" / "out" / "quality_sweep"
K = 10
NEGATIVES = 99


@dataclass(frozen=True)
class Config:
    """A named set of extra ``recserve train`` flags; ``default`` adds none."""

    name: str
    flags: str
    note: str = ""


# The informative points of the sweep that chose the defaults (bench/README.md has the notes):
# the default, the kinds at their own best settings, and what moving one lever away costs.
_OLD = "--lr 0.001 --lr-decay 1 --epochs 20 --patience 3 --l2 0"
CONFIGS: tuple[Config, ...] = (
    Config("default", "", "what `recserve train` does with no tuning flags"),
    Config("neumf-old", f"--kind neumf --embedding-dim 32 {_OLD}", "the default before the sweep"),
    Config("mlp-old", f"--kind mlp --embedding-dim 32 {_OLD}", "NCF-MLP, settings before"),
    Config("neumf", "--kind neumf --embedding-dim 32 --l2 0", "NeuMF with the new schedule"),
    Config("mf-const-lr", "--lr 0.001 --lr-decay 1 --epochs 60", "no decay: slower, not better"),
    Config("mf-lr-0.005", "--lr 0.005 --lr-decay 0.85", "faster start, faster decay: a tie"),
    Config("mf-128", "--embedding-dim 128", "more factors: no gain"),
    Config("mf-l2-1e-4", "--l2 1e-4", "the L2 before: collapses on the ML-1M-sized set"),
    Config("mf-l2-3e-5", "--l2 3e-5", "best here, still short of learning on ML-1M size"),
    Config("mf-neg-6", "--negatives 6", "more negatives: slower, no gain"),
    Config("mf-recency-4", "--recency-weight 4", "recency-weighted positives, blend on top"),
    Config("mf-no-recent", "--no-recent", "user vectors as trained, no recent-items blend"),
    Config(
        "mf-recent-fixed",
        "--recent-items 5 --recent-blend 0.6 --recent-decay 0.8",
        "a fixed blend instead of validation's choice",
    ),
    Config(
        "mf-recent-20",
        "--recent-items 20 --recent-decay 1",
        "20 latest items, no decay: recency diluted",
    ),
)


@dataclass(frozen=True)
class Raw:
    """Interactions as raw id strings and timestamps, in file order."""

    users: np.ndarray  # object [n]
    items: np.ndarray  # object [n]
    timestamps: np.ndarray  # int64 [n]


@dataclass(frozen=True)
class Holdout:
    """The frozen test: per user, the test item in column 0 of ``candidates``, then negatives."""

    users: np.ndarray  # object [u]
    candidates: np.ndarray  # object [u, 1 + NEGATIVES]
    train_file: Path


def read_raw(path: Path) -> Raw:
    """The file's interactions: a typed TSV atomic file here, anything else by ``load``."""
    with path.open(encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n").split("\t")
    if any(":" in column for column in header) and "::" not in "\t".join(header):
        return _read_typed_tsv(path, [column.split(":")[0] for column in header])
    data = load(path)
    user_ids, item_ids = np.array(data.user_ids, object), np.array(data.item_ids, object)
    return Raw(user_ids[data.users], item_ids[data.items], data.timestamps.astype(np.int64))


def _read_typed_tsv(path: Path, columns: list[str]) -> Raw:
    user, item, stamp = (columns.index(name) for name in ("user_id", "item_id", "timestamp"))
    rows = [line.rstrip("\n").split("\t") for line in path.open(encoding="utf-8")][1:]
    rows = [row for row in rows if len(row) == len(columns)]
    return Raw(
        np.array([row[user] for row in rows], object),
        np.array([row[item] for row in rows], object),
        np.array([int(float(row[stamp])) for row in rows], np.int64),
    )


def make_holdout(raw: Raw, work: Path, seed: int) -> Holdout:
    """Hold out each user's latest interaction with 99 frozen negatives; write the rest."""
    user_ids, users = np.unique(raw.users, return_inverse=True)
    item_ids, items = np.unique(raw.items, return_inverse=True)
    position = np.arange(users.size)
    order = np.lexsort((position, raw.timestamps, users))
    last = order[np.r_[users[order][1:] != users[order][:-1], True]]  # latest line per user
    counts = np.bincount(users, minlength=user_ids.size)
    last = last[counts[users[last]] >= 2]  # a user needs something left to train on
    seen = np.zeros((user_ids.size, item_ids.size), bool)
    seen[users, items] = True
    rng = np.random.default_rng(seed)
    negatives = np.stack(
        [rng.choice(np.flatnonzero(~seen[u]), NEGATIVES, False) for u in users[last]]
    )
    held = np.zeros_like(seen)
    held[users[last], items[last]] = True
    keep = ~held[users, items]  # a repeat of a held-out pair would leak it: drop them all
    work.mkdir(parents=True, exist_ok=True)
    train_file = work / "u.data"
    lines = (
        f"{u}\t{i}\t1\t{t}\n"
        for u, i, t in zip(raw.users[keep], raw.items[keep], raw.timestamps[keep], strict=True)
    )
    train_file.write_text("".join(lines), encoding="utf-8")
    candidates = np.concatenate([item_ids[items[last], None], item_ids[negatives]], axis=1)
    return Holdout(user_ids[users[last]], candidates, train_file)


def ranks(scores: np.ndarray) -> np.ndarray:
    """0-based rank of column 0 in each row; ties count against it (pessimistic)."""
    result: np.ndarray = np.count_nonzero(scores[:, 1:] >= scores[:, :1], axis=1)
    return result


def hr_ndcg(scores: np.ndarray) -> tuple[float, float]:
    rank = ranks(scores)
    hit = rank < K
    return float(hit.mean()), float(np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0).mean())


def popularity_scores(holdout: Holdout) -> np.ndarray:
    """Training-file interaction counts of every candidate."""
    items = np.loadtxt(holdout.train_file, dtype=str, usecols=1, delimiter="\t")
    names, counts = np.unique(items, return_counts=True)
    count_of = dict(zip(names.tolist(), counts.tolist(), strict=True))
    flat = [count_of.get(item, 0) for item in holdout.candidates.reshape(-1).tolist()]
    return np.array(flat, np.int64).reshape(holdout.candidates.shape)


def model_scores(version_dir: Path, holdout: Holdout) -> np.ndarray:
    """The published version's scores of every candidate, run as ONNX Runtime runs it."""
    import onnxruntime as ort

    stored = read_version(version_dir)
    signature = stored.manifest.signature
    user, item = signature.one_from(Source.USER), signature.one_from(Source.ITEM)
    if user is None or item is None or len(signature.inputs) != 2:
        raise SystemExit(f"{version_dir}: not a two-id model; this bench scores those only")
    shape = holdout.candidates.shape
    user_rows, _ = stored.vocabulary(user).rows(np.repeat(holdout.users, shape[1]).tolist())
    item_rows, _ = stored.vocabulary(item).rows(holdout.candidates.reshape(-1).tolist())
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(stored.model, options, providers=["CPUExecutionProvider"])
    feed = {user.name: user_rows, item.name: item_rows}
    (scores,) = session.run([signature.score], feed)
    return np.asarray(scores, np.float64).reshape(shape)


def chosen_epochs(version_dir: Path) -> str:
    """``best/run``: the epoch validation chose (the refit's count) and the epochs trained."""
    training = read_version(version_dir).manifest.records()["training"]
    return f"{training['best_epoch']}/{training['epochs_run']}"


def train(
    config: Config, holdout: Holdout, repository: Path, seed: int | None
) -> tuple[Path, float]:
    """Run ``recserve train`` for ``config``; the published version's directory and seconds."""
    model = f"{config.name}-s{seed}" if seed is not None else config.name
    command = [sys.executable, "-m", "recserve", "train", "--data", str(holdout.train_file)]
    command += ["--model", model, "--repository", str(repository), "--quiet"]
    command += shlex.split(config.flags) + (["--seed", str(seed)] if seed is not None else [])
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{config.name}: recserve train exited {done.returncode}\n{done.stderr}")
    version = max(list_versions(repository / model))
    return repository / model / str(version), seconds


def _configs(args: argparse.Namespace) -> list[Config]:
    extra = [Config(*text.split(":", 1)) for text in args.config]
    if args.only is None:
        return [*(() if extra else CONFIGS), *extra]
    names = args.only.split(",")
    known = {config.name: config for config in CONFIGS}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(f"unknown config(s) {unknown}; built in: {', '.join(known)}")
    return [known[name] for name in names] + extra


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="u.data, ratings.dat, CSV, .inter")
    parser.add_argument("--only", metavar="NAME,...", help="built-in configs to run (default all)")
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="NAME:FLAGS",
        help="an extra configuration (repeatable); given alone, only these run",
    )
    parser.add_argument(
        "--seeds", default="", metavar="N,...", help="training seeds (--seed); figures are means"
    )
    parser.add_argument("--split-seed", type=int, default=2024, help="seed of the 99 negatives")
    parser.add_argument("--out", type=Path, default=OUT, help="work directory")
    return parser.parse_args()


def main() -> int:
    args = _parse_args()
    configs = _configs(args)
    seeds: list[int | None] = [int(s) for s in args.seeds.split(",") if s] or [None]
    holdout = make_holdout(read_raw(args.data), args.out, args.split_seed)
    repository = args.out / "repository"
    print(
        f"{args.data}: {len(holdout.users):,} users held out (latest interaction, "
        f"{NEGATIVES} frozen negatives each); training file {holdout.train_file}",
        flush=True,
    )
    row = "{:<18}{:>7.4f}{:>9.4f}{:>9}{:>8}  {}"
    popularity = hr_ndcg(popularity_scores(holdout))
    rows = [
        f"{'config':<18}{'HR@10':>7}{'NDCG@10':>9}{'train s':>9}{'epochs':>8}  flags",
        row.format("popularity", *popularity, "", "", "(training-file counts)"),
    ]
    print("\n".join(rows), flush=True)
    for config in configs:
        figures, epochs = [], []
        for seed in seeds:
            version_dir, seconds = train(config, holdout, repository, seed)
            figures.append((*hr_ndcg(model_scores(version_dir, holdout)), seconds))
            epochs.append(chosen_epochs(version_dir))
        hr, ndcg, seconds = np.mean(figures, axis=0)
        flags = config.flags + (" (default)" if config.flags == "" else "")
        rows.append(row.format(config.name, hr, ndcg, f"{seconds:.1f}", ",".join(epochs), flags))
        print(rows[-1], flush=True)
    print("\n" + "\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
