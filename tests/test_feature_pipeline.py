"""``recserve train`` with side-feature files, end to end: the dlrm model trained on planted data
is published with its feature tables and vocabularies and served by the real server (a known user
ranked with the server-side features, an unknown one with the ``user_features`` it sends, both
equal to a brute-force ranking under ONNX Runtime); the refit trains on the features too; bad
feature files and flags end with exit status 2 and one line naming the problem."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from modelrepo import ITEM_FEATURES_FILE, USER_FEATURES_FILE, Source, StoredVersion, read_version
from tests.planted_features import FLAGS, MODEL, TRAIN, Planted, write_planted
from tests.server_process import ServerProcess, Servers
from training.cli import main
from training.exits import EXIT_OK, EXIT_USAGE
from training.feature_inputs import FeatureOptions
from training.models import SideFeature, build_model
from training.pipeline import PipelineConfig, run_pipeline

NAME = "feat"


@dataclass
class Trained:
    planted: Planted
    repository: Path
    stored: StoredVersion


def train_flags(planted: Planted, repository: Path, *extra: str) -> list[str]:
    return [
        "--data", str(planted.interactions), "--model", NAME, "--repository", str(repository),
        "--user-features", str(planted.users), "--item-features", str(planted.items), *FLAGS,
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """One run of the command, refit included (the default)."""
    root = tmp_path_factory.mktemp("feature_pipeline")
    planted = write_planted(root)
    repository = root / "repo"
    assert main(train_flags(planted, repository)) == EXIT_OK
    return Trained(planted, repository, read_version(repository / NAME / "1"))


@pytest.fixture(scope="module")
def server(module_servers: Servers, trained: Trained) -> ServerProcess:
    return module_servers.start(trained.repository, poll_interval_s=0, forbidden=("Traceback",))


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def test_the_version_ships_every_feature_input_with_its_table_and_vocabulary(
    trained: Trained,
) -> None:
    stored = trained.stored
    signature = stored.manifest.signature
    names = [spec.name for spec in signature.inputs]
    assert names == ["user", "item", "user_occupation", "user_age", "item_genres"]
    age = signature.input("user_age")
    assert age.feature == "age" and age.source is Source.USER_TABLE
    assert age.mean is not None and 30 < age.mean[0] < 60 and age.std is not None
    assert [signature.input(n).caller for n in names] == ["never", "never", "may", "may", "never"]
    occupations = stored.vocabularies["vocab_user_occupation.txt"]
    assert sorted(occupations.ids) == ["artist", "doctor", "engineer", "student"]
    users = stored.vocabularies["users.txt"]
    table = stored.tables[USER_FEATURES_FILE]["user_occupation"]
    assert table.shape == (users.n_rows,) and table[0] == 0
    for user in ("u0", "u7", "u42"):  # each user's row holds its own occupation
        row = table[users.row(user)]
        assert occupations.id_of_row(int(row)) == trained.planted.occupation[user]
    genres = stored.tables[ITEM_FEATURES_FILE]["item_genres"]
    assert genres.shape == (stored.vocabularies["items.txt"].n_rows, 2)
    records = stored.manifest.records()
    assert [i["input"] for i in records["features"]["inputs"]] == names[2:]
    assert records["published_model"]["refit"] is True


def test_the_refit_trains_the_feature_embeddings(trained: Trained) -> None:
    """The published (refit) model's feature weights moved away from their initialisation."""
    graph = onnx.load_from_string(trained.stored.model)
    weights = {init.name: numpy_helper.to_array(init) for init in graph.graph.initializer}
    stored = trained.stored
    n_users = stored.vocabularies["users.txt"].n_rows
    n_items = stored.vocabularies["items.txt"].n_rows
    # Same seed, same shapes: what the refit started from.
    fresh = build_model(MODEL, n_users, n_items, TRAIN.seed, _features_of(trained))
    for name in ("user_occupation_emb", "item_genres_emb"):
        assert weights[name].shape == fresh.params[name].shape
        assert np.abs(weights[name] - fresh.params[name]).max() > 1e-3, name


def _features_of(trained: Trained) -> tuple[SideFeature, ...]:
    """The side features as the run built them, from what the version ships."""
    stored = trained.stored
    signature = stored.manifest.signature
    user_table, item_table = stored.tables[USER_FEATURES_FILE], stored.tables[ITEM_FEATURES_FILE]
    occupation = signature.input("user_occupation")
    genres = signature.input("item_genres")
    age = signature.input("user_age")
    assert occupation.n_rows and genres.n_rows and age.mean and age.std
    return (
        SideFeature.categorical(
            "occupation", Source.USER_TABLE, occupation.n_rows, user_table["user_occupation"]
        ),
        SideFeature.dense("age", Source.USER_TABLE, user_table["user_age"], age.mean, age.std),
        SideFeature.multi_hot(
            "genres", Source.ITEM_TABLE, genres.n_rows, item_table["item_genres"]
        ),
    )


def brute_force(
    stored: StoredVersion, user_row: int, occupation_row: int, age: float, k: int
) -> list[str]:
    """Every catalog item scored under ONNX Runtime with the given user features, ranked."""
    items = stored.vocabularies["items.txt"]
    rows = np.arange(1, items.n_rows, dtype=np.int64)
    n = rows.size
    feeds = {
        "user": np.full(n, user_row, dtype=np.int64),
        "item": rows,
        "user_occupation": np.full(n, occupation_row, dtype=np.int64),
        "user_age": np.full((n, 1), age, dtype=np.float32),
        "item_genres": stored.tables[ITEM_FEATURES_FILE]["item_genres"][rows],
    }
    session = ort.InferenceSession(stored.model, providers=["CPUExecutionProvider"])
    (scores,) = session.run(["score"], feeds)
    ids = items.ids_of_rows(rows)
    order = sorted(range(n), key=lambda i: (-float(scores[i]), ids[i]))
    return [ids[i] for i in order[:k]]


def recommend(client: httpx.Client, body: dict[str, Any]) -> list[str]:
    answer = client.post(f"/v1/models/{NAME}/recommend", content=json.dumps(body))
    assert answer.status_code == 200, answer.text
    return [item["item_id"] for item in answer.json()["items"]]


def test_a_known_user_is_served_with_the_features_of_the_user_table(
    trained: Trained, client: httpx.Client
) -> None:
    stored = trained.stored
    users = stored.vocabularies["users.txt"]
    table = stored.tables[USER_FEATURES_FILE]
    for user in ("u3", "u11"):
        row = users.row(user)
        expected = brute_force(
            stored, row, int(table["user_occupation"][row]), float(table["user_age"][row, 0]), 10
        )
        got = recommend(client, {"user_id": user, "k": 10, "exclude_seen": False})
        assert got == expected


def test_an_unknown_user_is_served_from_the_features_sent(
    trained: Trained, client: httpx.Client
) -> None:
    stored = trained.stored
    occupations = stored.vocabularies["vocab_user_occupation.txt"]
    age = stored.manifest.signature.input("user_age")
    assert age.mean is not None and age.std is not None
    plain = recommend(client, {"user_id": "nobody", "k": 10})
    assert plain == brute_force(stored, 0, 0, 0.0, 10)
    by_genre = trained.planted.genre
    for occupation, genre in (("artist", "action"), ("engineer", "drama")):
        sent = {"occupation": occupation, "age": 41}
        body = {"user_id": "nobody", "k": 10, "user_features": sent}
        got = recommend(client, body)
        standard = (41 - age.mean[0]) / age.std[0]
        assert got == brute_force(stored, 0, occupations.row(occupation), standard, 10)
        assert got != plain
        # The planted effect: an artist's top items are mostly action films.
        assert sum(by_genre[item] == genre for item in got) >= 6, (occupation, got)


def test_no_refit_publishes_the_evaluated_feature_model(tmp_path: Path) -> None:
    planted = write_planted(tmp_path)
    options = FeatureOptions(user_path=planted.users, item_path=planted.items)
    config = PipelineConfig(
        data=str(planted.interactions), model_name=NAME, repository=tmp_path / "repo",
        model=MODEL, train=TRAIN, quiet=True, refit=False, features=options,
    )  # fmt: skip
    result = run_pipeline(config)
    records = result.manifest.records()
    assert records["published_model"]["refit"] is False
    assert result.parity_error <= 1e-5
    assert result.test.model.hr > result.test.popularity.hr + 0.1
    stored = read_version(result.published.path)
    assert set(stored.tables[USER_FEATURES_FILE]) == {"user_occupation", "user_age"}


# -- bad feature files and flags -----------------------------------------------------------------


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str], *needles: str) -> None:
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_a_duplicate_id_in_a_feature_file_exits_2_naming_the_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    planted = write_planted(tmp_path)
    with planted.users.open("a") as f:
        f.write("u5,doctor,30\n")  # u5 again, on the last line
    last = len(planted.users.read_text().splitlines())
    argv = train_flags(planted, tmp_path / "repo")
    _fails(capsys, argv, "users.csv", "duplicate id 'u5'", str(last))
    assert not (tmp_path / "repo" / NAME).exists()


def test_a_ragged_row_exits_2_naming_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    planted = write_planted(tmp_path)
    text = planted.items.read_text().splitlines()
    text[4] += ",extra"
    planted.items.write_text("\n".join(text) + "\n")
    _fails(capsys, train_flags(planted, tmp_path / "repo"), "items.csv", "line 5")


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--feature-kind", "shoe_size=numeric"], ["--feature-kind", "shoe_size"]),
        (["--drop-feature", "colour"], ["--drop-feature", "colour"]),
        (["--kind", "mf"], ["--user-features", "--kind dlrm"]),
        (["--history-items", "-1"], ["--history-items", "at least 0"]),
    ],
)
def test_feature_flags_that_do_not_fit_exit_2_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], needles: list[str]
) -> None:
    planted = write_planted(tmp_path)
    _fails(capsys, train_flags(planted, tmp_path / "repo", *extra), *needles)


def test_feature_kind_and_drop_change_what_is_read(tmp_path: Path) -> None:
    planted = write_planted(tmp_path)
    argv = train_flags(
        planted, tmp_path / "repo", "--feature-kind", "age=categorical",
        "--drop-feature", "occupation", "--epochs", "1", "--no-refit",
    )  # fmt: skip
    assert main(argv) == EXIT_OK
    signature = read_version(tmp_path / "repo" / NAME / "1").manifest.signature
    assert [spec.name for spec in signature.inputs] == ["user", "item", "user_age", "item_genres"]
    assert signature.input("user_age").mean is None  # a category now, with a vocabulary
    assert signature.input("user_age").vocabulary == "vocab_user_age.txt"
