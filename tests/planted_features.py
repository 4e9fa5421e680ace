"""Generated interactions with a planted feature effect, written as the files ``recserve train``
reads: users of occupation ``k`` interact (almost only) with items of genre ``k``, uniformly
within the genre, so that popularity knows nothing a user's occupation does not tell better.

Files: ``interactions.csv`` (user_id,item_id,timestamp), ``users.csv`` (user_id, occupation,
age) and ``items.csv`` (item_id, genres as a ``|`` bag: the item's genre and, for some, a second).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.models import ModelConfig
from training.train import TrainConfig

OCCUPATIONS = ("artist", "doctor", "engineer", "student")
GENRES = ("action", "comedy", "drama", "horror")
N_USERS, N_ITEMS, PER_USER = 160, 200, 16
ON_GENRE = 0.9  # the share of a user's interactions with the genre of their occupation

MODEL = ModelConfig(kind="dlrm", embedding_dim=8, tower=(16,), bottom=(), l2=0.0, id_dropout=0.3)
TRAIN = TrainConfig(epochs=4, lr=0.01, lr_decay=1.0, batch_size=256, patience=4)
FLAGS = (
    "--kind", "dlrm", "--embedding-dim", "8", "--tower", "16", "--bottom", "none",
    "--id-dropout", "0.3", "--l2", "0", "--epochs", "4", "--lr", "0.01", "--lr-decay", "1",
    "--patience", "4", "--quiet",
)  # fmt: skip
"""The command-line flags of ``MODEL`` and ``TRAIN``."""


@dataclass(frozen=True)
class Planted:
    """The files, and what was planted in them."""

    interactions: Path
    users: Path
    items: Path
    occupation: dict[str, str]  # user id -> occupation
    genre: dict[str, str]  # item id -> its main genre


def write_planted(directory: Path, seed: int = 0) -> Planted:
    """Write the three files under ``directory``."""
    rng = np.random.default_rng(seed)
    item_genre = np.arange(N_ITEMS) % len(GENRES)
    user_occupation = rng.integers(0, len(OCCUPATIONS), N_USERS)
    lines = ["user_id,item_id,timestamp"]
    for user in range(N_USERS):
        on = rng.random(PER_USER) < ON_GENRE
        same = np.flatnonzero(item_genre == user_occupation[user])
        other = np.flatnonzero(item_genre != user_occupation[user])
        picks = np.concatenate(
            [rng.choice(same, int(on.sum()), replace=False), rng.choice(other, int((~on).sum()))]
        )
        for at, item in enumerate(dict.fromkeys(rng.permutation(picks).tolist())):
            lines.append(f"u{user},i{item},{1_000_000 + 100 * user + at}")
    interactions = directory / "interactions.csv"
    interactions.write_text("\n".join(lines) + "\n")
    users = directory / "users.csv"
    ages = rng.integers(18, 70, N_USERS)
    users.write_text(
        "user_id,occupation,age\n"
        + "".join(f"u{u},{OCCUPATIONS[user_occupation[u]]},{ages[u]}\n" for u in range(N_USERS))
    )
    items = directory / "items.csv"
    second = rng.integers(0, len(GENRES), N_ITEMS)
    rows = []
    for item in range(N_ITEMS):
        bag = dict.fromkeys([GENRES[item_genre[item]], GENRES[second[item]]] if item % 3 == 0
                            else [GENRES[item_genre[item]]])  # fmt: skip
        rows.append(f"i{item},{'|'.join(bag)}\n")
    items.write_text("item_id,genres\n" + "".join(rows))
    return Planted(
        interactions,
        users,
        items,
        {f"u{u}": OCCUPATIONS[user_occupation[u]] for u in range(N_USERS)},
        {f"i{i}": GENRES[item_genre[i]] for i in range(N_ITEMS)},
    )
