"""``recserve train`` flags and exit statuses (through ``training.cli``)."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

import training.graph_check as graph_check
from modelrepo import read_version
from training.cli import (
    EXIT_OK,
    EXIT_PARITY,
    EXIT_USAGE,
    FLAG_RULES,
    add_arguments,
    build_parser,
    config_from_args,
    main,
)
from training.models import ModelConfig, kind_names
from training.train import TrainConfig

TINY = [
    "--data",
    "synthetic",
    "--synthetic-users",
    "100",
    "--synthetic-items",
    "200",
    "--synthetic-interactions",
    "3000",
    "--kind",
    "mlp",
    "--embedding-dim",
    "8",
    "--tower",
    "16,8",
    "--epochs",
    "2",
    "--batch-size",
    "512",
    "--quiet",
]


@pytest.fixture(autouse=True)
def no_repository_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECSERVE_MODEL_REPOSITORY", raising=False)


def test_flags_reach_the_configuration() -> None:
    args = build_parser().parse_args(
        [
            "--data",
            "synthetic-ml1m",
            "--synthetic-users",
            "50",
            "--model",
            "m",
            "--kind",
            "mlp",
            "--tower",
            "32,16",
            "--gmf-dim",
            "4",
            "--l2",
            "1e-6",
            "--dropout",
            "0.1",
            "--optimizer",
            "sgd",
            "--lr",
            "0.1",
            "--negatives",
            "2",
            "--patience",
            "1",
            "--seed",
            "9",
            "--unknown-rate",
            "0.05",
        ]
    )
    config = config_from_args(args)
    assert config.synthetic is not None
    assert (config.synthetic.users, config.synthetic.items) == (50, 3706)
    assert config.model.kind == "mlp"
    assert config.model.tower == (32, 16)
    assert (config.model.gmf_dim, config.model.l2, config.model.dropout) == (4, 1e-6, 0.1)
    train = config.train
    assert (train.optimizer, train.lr, train.negatives, train.patience) == ("sgd", 0.1, 2, 1)
    assert (train.seed, train.unknown_rate) == (9, 0.05)
    assert config.repository == Path("model_repo").resolve()  # where serving will look for it
    assert config.refit  # by default the published model is refit on all interactions


def test_add_arguments_works_on_a_subcommand_parser() -> None:
    root = argparse.ArgumentParser(prog="recserve")
    sub = root.add_subparsers(dest="command")
    add_arguments(sub.add_parser("train"))
    args = root.parse_args(["train", "--data", "synthetic", "--model", "x"])
    assert args.command == "train"
    assert args.data == "synthetic"


def test_bad_tower_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--data", "synthetic", "--model", "m", "--tower", "64,x"])
    assert exit_info.value.code == 2
    assert "64,32,16" in capsys.readouterr().err


def test_train_publishes_and_prints_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([*TINY, "--model", "demo", "--repository", str(tmp_path)])
    out = capsys.readouterr()
    assert code == EXIT_OK
    assert "published demo version 1" in out.out
    assert "popularity" in out.out
    assert out.err == ""  # --quiet
    manifest = read_version(tmp_path / "demo" / "1").manifest
    assert manifest.kind == "mlp"
    assert manifest.records()["dataset"]["users"] == 100
    assert manifest.records()["published_model"]["refit"] is True


def test_no_refit_publishes_the_evaluated_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*TINY, "--model", "demo", "--repository", str(tmp_path), "--no-refit"]) == 0
    assert "published model: trained on training split" in capsys.readouterr().out
    records = read_version(tmp_path / "demo" / "1").manifest.records()
    published = records["published_model"]
    assert (published["refit"], published["test_metrics_describe"]) == (False, "this model")
    assert published["interactions"] == records["dataset"]["split"]["train_interactions"]


def test_kind_choices_are_the_registered_kinds() -> None:
    """The registry feeds the flag: every registered kind is a choice, and nothing else is."""
    parser = build_parser()
    assert kind_names() == ("dlrm", "mf", "mlp", "neumf")
    assert "--kind {dlrm,mf,mlp,neumf}" in parser.format_help()
    for kind in kind_names():
        args = parser.parse_args(["--data", "synthetic", "--model", "m", "--kind", kind])
        assert config_from_args(args).model.kind == kind
    with pytest.raises(SystemExit):
        parser.parse_args(["--data", "synthetic", "--model", "m", "--kind", "gmf"])


def test_usage_errors_exit_2_and_publish_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*TINY, "--model", "Bad Name", "--repository", str(tmp_path)]) == EXIT_USAGE
    assert "model name" in capsys.readouterr().err
    missing = str(tmp_path / "absent.csv")
    assert main(["--data", missing, "--model", "m", "--repository", str(tmp_path)]) == EXIT_USAGE
    assert "cannot read" in capsys.readouterr().err
    assert (
        main(["--data", missing, "--model", "m", "--synthetic-users", "5", "--quiet"]) == EXIT_USAGE
    )
    assert "--synthetic-* flags" in capsys.readouterr().err
    assert main([*TINY, "--model", "m", "--lr", "0", "--repository", str(tmp_path)]) == EXIT_USAGE
    assert list(tmp_path.iterdir()) == []


def test_parity_failure_exits_3_with_the_figure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(graph_check, "onnx_parity", lambda *args: 3e-4)
    code = main([*TINY, "--model", "demo", "--repository", str(tmp_path)])
    assert code == EXIT_PARITY
    assert "max |ONNX - NumPy| = 0.0003" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


def test_python_dash_m_training_runs_the_cli() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "training", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert completed.returncode == 0
    assert "--negatives" in completed.stdout
    assert "--unknown-rate" in completed.stdout


def _refuses(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one line ``recserve train`` refuses ``argv`` with (exit 2), after checking that it
    refused before training."""
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--lr", "-1"),
        ("--lr", "nan"),
        ("--lr", "inf"),
        ("--batch-size", "0"),
        ("--negatives", "0"),
        ("--epochs", "0"),
        ("--patience", "-1"),
        ("--threads", "-1"),
        ("--unknown-rate", "1"),
        ("--embedding-dim", "0"),
        ("--gmf-dim", "-4"),
        ("--l2", "-0.1"),
        ("--dropout", "1.5"),
        ("--synthetic-users", "0"),
        ("--synthetic-items", "1"),
        ("--synthetic-interactions", "0"),
    ],
)
def test_a_bad_flag_names_itself_in_one_line(
    flag: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _refuses([*TINY, "--model", "m", flag, value, "--repository", str(tmp_path)], capsys)
    assert err.startswith(f"error: {flag} must be ")
    assert err.rstrip().rsplit(", got ", 1)[1] in (value, str(float(value)))
    assert "Config" not in err  # never the whole configuration object
    assert list(tmp_path.iterdir()) == []


def test_every_numeric_setting_of_a_run_has_a_range_checked_by_its_flag() -> None:
    """A new numeric field of the configurations gets a rule, or this fails: its flag would
    otherwise be refused with the whole configuration printed."""
    numeric = {
        field.name
        for cls in (TrainConfig, ModelConfig)
        for field in dataclasses.fields(cls)
        if field.type in ("int", "float")
    }
    assert {"lr", "epochs", "embedding_dim", "dropout"} <= numeric  # the fields were found
    assert numeric - {"seed"} <= set(FLAG_RULES)
    assert {"synthetic_users", "synthetic_items", "synthetic_interactions"} <= set(FLAG_RULES)


def test_synthetic_interactions_fewer_than_users_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    err = _refuses([*TINY, "--model", "m", "--synthetic-interactions", "50"], capsys)
    assert err == "error: --synthetic-interactions must be at least the users (100), got 50\n"


def test_the_repository_is_checked_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def never(config: object) -> None:
        raise AssertionError("trained although the repository cannot take the version")

    monkeypatch.setattr("training.cli.run_pipeline", never)
    a_file = tmp_path / "repo.txt"
    a_file.write_text("")
    err = _refuses([*TINY, "--model", "m", "--repository", str(a_file)], capsys)
    assert err == f"error: model repository {a_file} is not a directory\n"
    inside = a_file / "repo"
    err = _refuses([*TINY, "--model", "m", "--repository", str(inside)], capsys)
    assert err == f"error: model repository {inside} cannot be created: Not a directory\n"

    def read_only(**kwargs: object) -> str:  # what a read-only mount answers, even to root
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr("modelrepo.access.tempfile.mkdtemp", read_only)
    err = _refuses([*TINY, "--model", "m", "--repository", str(tmp_path)], capsys)
    assert err == f"error: model repository {tmp_path} is not writable: Read-only file system\n"


def test_a_relative_repository_is_resolved_and_the_servers_variable_is_its_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main([*TINY, "--model", "demo", "--repository", "here"]) == EXIT_OK
    assert f"published demo version 1 -> {tmp_path / 'here' / 'demo' / '1'}" in (
        capsys.readouterr().out
    )
    monkeypatch.setenv("RECSERVE_MODEL_REPOSITORY", str(tmp_path / "served"))
    args = build_parser().parse_args(["--data", "synthetic", "--model", "m"])
    assert config_from_args(args).repository == tmp_path / "served"
