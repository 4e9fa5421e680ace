"""``recserve train`` flags and exit statuses (through ``training.cli``)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

import training.pipeline as pipeline_module
from modelrepo import read_version
from training.cli import (
    EXIT_OK,
    EXIT_PARITY,
    EXIT_USAGE,
    add_arguments,
    build_parser,
    config_from_args,
    main,
)
from training.models import kind_names

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
    assert config.repository == Path("model_repo")


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


def test_kind_choices_are_the_registered_kinds() -> None:
    """The registry feeds the flag: every registered kind is a choice, and nothing else is."""
    parser = build_parser()
    assert kind_names() == ("mlp", "neumf")
    assert "--kind {mlp,neumf}" in parser.format_help()
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
    monkeypatch.setattr(pipeline_module, "onnx_parity", lambda *args: 3e-4)
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
