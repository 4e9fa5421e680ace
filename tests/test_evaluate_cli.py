"""``recserve evaluate`` reproduces a run's test report from the published graph alone; every
version's recorded figures reach the V2 model metadata as ``parameters``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelrepo import Manifest, read_manifest, read_version, two_id_signature
from recserve import cli
from service.v2.routes import metadata_parameters
from tests.app_harness import Harness
from tests.factories import publish_random_version, reference_scores
from tests.planted_features import FLAGS, write_planted
from training.data import load
from training.evaluate import evaluate
from training.evaluate_cli import OnnxScorer
from training.split import leave_one_out

TINY = ["--data", "synthetic", "--synthetic-users", "120", "--synthetic-items", "130"]
TINY += ["--synthetic-interactions", "3000"]
TOLERANCE = 0.005  # what the acceptance allows between the run's report and the evaluation
FIGURES = ("hr@10", "ndcg@10", "auc")


def _train(repository: Path, *flags: str) -> None:
    argv = ["train", *TINY, "--model", "tiny", "--repository", str(repository), "--quiet"]
    assert cli.main([*argv, *flags]) == 0


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two versions of "tiny", each the model its run evaluated: an MLP after 1 epoch, a NeuMF
    after 4, both on split seed 3."""
    repository = tmp_path_factory.mktemp("repo")
    _train(repository, "--no-refit", "--kind", "mlp", "--epochs", "1", "--seed", "3")
    _train(
        repository,
        "--no-refit",
        "--kind",
        "neumf",
        "--epochs",
        "4",
        "--patience",
        "4",
        "--seed",
        "3",
    )
    return repository


def _evaluate(
    capsys: pytest.CaptureFixture[str], repository: Path, *flags: str, data: list[str] = TINY
) -> tuple[int, str, str]:
    code = cli.main(["evaluate", *data, "--model", "tiny", "--repository", str(repository), *flags])
    out = capsys.readouterr()
    return code, out.out, out.err


def _report(capsys: pytest.CaptureFixture[str], repository: Path, *flags: str) -> dict[str, Any]:
    code, out, err = _evaluate(capsys, repository, "--json", *flags)
    assert (code, err) == (0, "")
    report: dict[str, Any] = json.loads(out)
    return report


def _recorded(repository: Path, version: int, who: str = "model") -> dict[str, float]:
    test = read_manifest(repository / "tiny" / str(version)).records()["metrics"]["test"]
    return {key: test[who][key] for key in FIGURES}


def test_the_published_graph_reproduces_the_runs_test_report(
    trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = _report(capsys, trained, "--version", "2")
    (scored,) = report["versions"]
    recorded = _recorded(trained, 2)
    assert scored["version"] == 2
    for key in FIGURES:
        assert scored[key] == pytest.approx(recorded[key], abs=TOLERANCE), key
    assert scored["recorded"] == recorded
    assert report["test"]["seed"] == 3  # the run's split seed, read from its manifest
    assert report["test"]["negatives_per_holdout"] == 99
    popularity = _recorded(trained, 2, "popularity")
    assert report["popularity"] == pytest.approx(popularity, abs=1e-9)  # the very same candidates
    assert (scored["unknown_users"], scored["unknown_items"]) == (0, 0)
    assert scored["refit"] is False


def test_a_refit_version_is_not_passed_off_as_the_model_its_run_evaluated(
    repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _train(repository, "--kind", "mlp", "--epochs", "2", "--seed", "3")  # refit: the default
    capsys.readouterr()  # the run's own report
    (scored,) = _report(capsys, repository)["versions"]
    assert scored["refit"] is True
    assert scored["recorded"] == _recorded(repository, 1)  # the evaluated model's figures
    code, table, _ = _evaluate(capsys, repository)
    assert code == 0
    labels = [line[:22].strip() for line in table.splitlines()[3:6]]
    assert labels == ["version 1", "its run's evaluated", "popularity"]
    assert "version 1 was refit on every interaction of this data" in table


def test_against_scores_two_versions_on_the_same_candidates(
    trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = _report(capsys, trained, "--against", "1")  # the latest (2) against 1
    assert [v["version"] for v in report["versions"]] == [2, 1]
    for scored in report["versions"]:
        recorded = _recorded(trained, scored["version"])
        for key in FIGURES:
            assert scored[key] == pytest.approx(recorded[key], abs=TOLERANCE), key
    assert report["versions"][0]["hr@10"] != report["versions"][1]["hr@10"]

    code, table, _ = _evaluate(capsys, trained, "--against", "1")
    assert code == 0
    rows = {line[:22].strip(): line[22:].split() for line in table.splitlines()[3:]}
    assert list(rows) == ["version 2", "as its run reported", "version 1", "popularity"]
    assert [float(x) for x in rows["version 1"]] == pytest.approx(
        [report["versions"][1][key] for key in FIGURES], abs=5e-5
    )
    assert "HR@10" in table.splitlines()[2] and "split seed 3" in table.splitlines()[1]


def test_the_cut_off_and_the_split_seed_can_be_chosen(
    trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    at_5 = _report(capsys, trained, "--k", "5")
    scored = at_5["versions"][0]
    assert at_5["test"]["k"] == 5 and "hr@5" in scored and "hr@10" not in scored
    assert scored["recorded"] is None  # the run reported at 10, not at 5
    assert scored["hr@5"] <= _recorded(trained, 2)["hr@10"] + TOLERANCE

    other_seed = _report(capsys, trained, "--seed", "4")
    assert other_seed["test"]["seed"] == 4
    assert other_seed["versions"][0]["recorded"] is None  # other candidates: no comparison
    assert other_seed["popularity"] != _recorded(trained, 2, "popularity")


def test_unknown_ids_are_scored_from_row_0_and_counted(
    repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    published, params = publish_random_version(repository, "tiny", n_users=8, n_items=150)
    rng = np.random.default_rng(0)
    lines = ["user_id,item_id,timestamp"]
    users = [f"u{i}" for i in range(6)] + ["stranger"]  # a user the version has no row for
    for user in users:
        for t, item in enumerate(rng.choice(150, 12, replace=False)):
            lines.append(f"{user},i{item},{t}")
    lines.append("u0,new-item,99")  # u0's test hold-out: an item the version has no row for
    lines += [f"u7,i{item},0" for item in range(150)]  # every item in the data; u7 is not held out
    data = tmp_path / "interactions.csv"
    data.write_text("\n".join(lines) + "\n")

    code, out, err = _evaluate(capsys, repository, "--json", data=["--data", str(data)])
    assert (code, err) == (0, "")
    (scored,) = json.loads(out)["versions"]
    assert (scored["unknown_users"], scored["unknown_items"]) == (1, 1)
    assert scored["recorded"] is None  # the version was not trained on this data

    # What the evaluation computed is what the graph gives for row 0 of the unknown ids.
    interactions = load(data, None)
    split = leave_one_out(interactions, seed=0)
    scorer = OnnxScorer(read_version(published.path), interactions, threads=1)
    stranger = interactions.user_ids.index("stranger")
    new_item = interactions.item_ids.index("new-item")
    items = np.array([0, new_item])
    expected = reference_scores(params, np.array([0, 0]), np.array([1, 0]))
    assert scorer(np.full(2, stranger), items) == pytest.approx(expected, abs=1e-5)
    assert evaluate(scorer, split.test).hr == pytest.approx(scored["hr@10"])


def test_the_command_lists_evaluate() -> None:
    assert "evaluate" in cli.build_parser(["serve"]).format_help()


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--model", "Bad Name"], "model name 'Bad Name'"),
        (["--model", "absent"], "model 'absent' has no versions"),
        (["--model", "tiny", "--version", "7"], "model 'tiny' has no version 7 (it has [1, 2])"),
        (["--model", "tiny", "--synthetic-users", "0"], "--synthetic-users must be at least 1"),
        (["--model", "tiny", "--threads", "-1"], "--threads must be at least 0"),
    ],
)
def test_what_cannot_be_evaluated_exits_2_with_one_line(
    trained: Path, capsys: pytest.CaptureFixture[str], flags: list[str], says: str
) -> None:
    argv = ["evaluate", *TINY, "--repository", str(trained), *flags]
    assert cli.main(argv) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.startswith("error: ") and says in out.err and out.err.count("\n") == 1


def test_a_missing_repository_or_data_file_exits_2(
    tmp_path: Path, trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _evaluate(capsys, tmp_path / "nowhere")
    assert code == 2 and "does not exist" in err
    code, _, err = _evaluate(capsys, trained, data=["--data", str(tmp_path / "absent.csv")])
    assert code == 2 and "absent.csv" in err


# -- the V2 model metadata -----------------------------------------------------------------------


def test_metadata_parameters_are_the_runs_recorded_figures(trained: Path) -> None:
    manifest = read_manifest(trained / "tiny" / "2")
    parameters = metadata_parameters(manifest)
    test = manifest.records()["metrics"]["test"]
    assert parameters == {
        "kind": "neumf",
        "created_at": manifest.created_at,
        "dataset": manifest.records()["dataset"]["name"],
        "trained_on": manifest.records()["published_model"]["trained_on"],
        **{key: test["model"][key] for key in FIGURES},
        **{f"popularity_{key}": test["popularity"][key] for key in FIGURES},
    }


def test_metadata_parameters_leave_out_what_is_not_recorded() -> None:
    signature = two_id_signature(3, 3)
    imported = Manifest(kind="imported", signature=signature, parity_rows=10)
    assert metadata_parameters(imported) == {"kind": "imported"}
    odd = Manifest.model_validate(
        {
            "kind": "mlp",
            "signature": signature,
            "dataset": ["not", "an", "object"],
            "metrics": {"test": {"model": {"hr@10": None, "auc": True, "ndcg@10": 0.5, "x": 1}}},
        }
    )
    assert metadata_parameters(odd) == {"kind": "mlp", "ndcg@10": 0.5}


@pytest.mark.anyio
async def test_v2_model_metadata_carries_each_versions_parameters(served: Harness) -> None:
    records = {
        "created_at": "2026-01-02T03:04:05Z",
        "dataset": {"name": "ratings.dat", "size": 1000},
        "metrics": {"test": {"model": {"hr@10": 0.7, "ndcg@10": 0.42, "auc": 0.9, "users": 6}}},
    }
    version = served.version(2)
    version.manifest = Manifest(kind="neumf", signature=version.signature, **records)
    latest = (await served.client.get("/v2/models/m")).json()
    assert latest["parameters"] == {
        "kind": "neumf",
        "created_at": "2026-01-02T03:04:05Z",
        "dataset": "ratings.dat",
        "hr@10": 0.7,
        "ndcg@10": 0.42,
        "auc": 0.9,
    }
    first = (await served.client.get("/v2/models/m/versions/1")).json()
    assert first["parameters"] == {"kind": "fake"}
    assert all(math.isfinite(v) for v in latest["parameters"].values() if isinstance(v, float))


def test_a_feature_model_is_evaluated_with_the_features_of_its_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As the server fills a request by id: each user's and item's rows of the version's tables
    (the user's latest items among them); the run's report comes back exactly."""
    planted = write_planted(tmp_path)
    repository = tmp_path / "repo"
    data = ["--data", str(planted.interactions)]
    argv = [
        "train", *data, "--model", "tiny", "--repository", str(repository), "--no-refit",
        "--user-features", str(planted.users), "--item-features", str(planted.items), *FLAGS,
        "--history-items", "3", "--seed", "2",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    capsys.readouterr()
    code, out, err = _evaluate(capsys, repository, "--json", data=data)
    assert (code, err) == (0, "")
    (scored,) = json.loads(out)["versions"]
    recorded = _recorded(repository, 1)
    for key in FIGURES:
        assert scored[key] == pytest.approx(recorded[key], abs=1e-6), key
