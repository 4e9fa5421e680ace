"""The ``recserve`` command line: serve flags over environment over defaults, train dispatch."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import types
from importlib import metadata
from pathlib import Path

import pytest

import service.server
import training
from recserve import cli
from service.cli import settings_from_args
from service.settings import BatchingSettings, Settings


def _settings(*flags: str) -> Settings:
    args = cli.build_parser(["serve"]).parse_args(["serve", *flags])
    return settings_from_args(args)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("RECSERVE_"):
            monkeypatch.delenv(key)


def test_every_setting_has_a_flag() -> None:
    parser = cli.build_parser(["serve"])
    serve = next(
        action.choices["serve"]
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    flags = {opt for action in serve._actions for opt in action.option_strings}
    names = [n for n in Settings.model_fields if n != "batching"]
    names += list(BatchingSettings.model_fields)
    assert {"--" + n.replace("_", "-") for n in names} <= flags
    assert {"--host", "--port", "--workers", "--model-repository", "--admin-token"} <= flags


def test_defaults_without_flags_or_environment() -> None:
    assert _settings().model_dump() == Settings().model_dump()


def test_flags_set_every_kind_of_setting() -> None:
    settings = _settings(
        "--host=0.0.0.0",
        "--port=9100",
        "--workers=4",
        "--model-repository=/models",
        "--poll-interval-s=0",
        "--max-batch-rows=256",
        "--max-queue-delay-us=50",
        "--queue-capacity-rows=4096",
        "--request-timeout-s=1.5",
        "--concurrent-runs=2",
        "--provider=cpu",
        "--cuda-device-id=1",
        "--ort-intra-op-threads=2",
        "--admin-token=tok",
        "--max-request-bytes=65536",
        "--shutdown-grace-s=5",
        "--log-level=debug",
        "--request-log",
    )
    assert (settings.host, settings.port, settings.workers) == ("0.0.0.0", 9100, 4)
    assert settings.model_repository == Path("/models")
    assert settings.poll_interval_s == 0
    assert settings.batching == BatchingSettings(
        max_batch_rows=256,
        max_queue_delay_us=50,
        queue_capacity_rows=4096,
        request_timeout_s=1.5,
        concurrent_runs=2,
    )
    assert (settings.provider, settings.cuda_device_id, settings.ort_intra_op_threads) == (
        "cpu",
        1,
        2,
    )
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == "tok"
    assert (settings.max_request_bytes, settings.shutdown_grace_s) == (65536, 5)
    assert (settings.log_level, settings.request_log) == ("debug", True)


def test_flags_override_the_environment_which_overrides_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RECSERVE_PORT", "9000")
    monkeypatch.setenv("RECSERVE_WORKERS", "3")
    monkeypatch.setenv("RECSERVE_ADMIN_TOKEN", "from-env")
    monkeypatch.setenv("RECSERVE_REQUEST_LOG", "true")
    monkeypatch.setenv("RECSERVE_BATCHING__MAX_BATCH_ROWS", "100")
    settings = _settings("--port", "9100", "--max-queue-delay-us", "5", "--no-request-log")
    assert settings.port == 9100  # flag
    assert settings.workers == 3  # environment
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == "from-env"
    assert settings.request_log is False
    assert settings.batching.max_batch_rows == 100  # environment, beside a batching flag
    assert settings.batching.max_queue_delay_us == 5
    assert settings.batching.concurrent_runs == 1  # default


def test_invalid_values_exit_with_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["serve", "--port", "70000"])
    assert caught.value.code == 2
    assert "invalid settings" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["serve", "--provider", "tpu"])
    with pytest.raises(SystemExit):
        cli.main(["serve", "--workers", "many"])


def test_serve_runs_the_server_with_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Settings] = []

    def fake_serve(settings: Settings) -> int:
        seen.append(settings)
        return 0

    monkeypatch.setattr(service.server, "serve", fake_serve)
    assert cli.main(["serve", "--port", "8123", "--model-repository", "repo"]) == 0
    assert [(s.port, s.model_repository) for s in seen] == [(8123, Path("repo"))]


def test_train_dispatches_to_training_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("training.cli")
    calls: list[argparse.Namespace] = []

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--epochs", type=int, required=True)

    def run(args: argparse.Namespace) -> int:
        calls.append(args)
        return 7

    fake.add_arguments = add_arguments  # type: ignore[attr-defined]
    fake.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "training.cli", fake)
    monkeypatch.setattr(training, "cli", fake, raising=False)
    assert cli.main(["train", "--epochs", "3"]) == 7
    assert [(a.command, a.epochs) for a in calls] == [("train", 3)]


def python(*args: str) -> str:
    """The standard output of a fresh interpreter run in the project's root."""
    out = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    return out.stdout


def test_serving_does_not_import_the_training_cli() -> None:
    code = (
        "import sys\n"
        "from recserve import cli\n"
        "from service.cli import settings_from_args\n"
        "import service.server, service.app\n"
        "settings_from_args(cli.build_parser(['serve']).parse_args(['serve']))\n"
        "print('training.cli' in sys.modules)\n"
    )
    assert python("-c", code).strip() == "False"


def test_help_lists_every_command() -> None:
    out = python("-m", "recserve", "--help")
    for command in ("serve", "train", "models"):
        assert f"\n    {command} " in out  # each with its one-line help


def test_version_is_the_installed_distributions() -> None:
    assert python("-m", "recserve", "--version") == f"recserve {metadata.version('recserve')}\n"


def test_serve_stops_at_once_on_a_repository_that_does_not_exist(tmp_path: Path) -> None:
    """Not a server that reports ready with no models: status 2 and one line naming the path,
    before anything listens."""
    absent = tmp_path / "does" / "not" / "exist"
    command = [sys.executable, "-m", "recserve", "serve", "--port", "0"]
    completed = subprocess.run(
        [*command, "--model-repository", str(absent)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert completed.returncode == 2
    assert completed.stderr == f"error: model repository {absent} does not exist\n"
    assert completed.stdout == ""


def test_serve_refuses_a_file_or_an_unreadable_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "repo.txt"
    a_file.write_text("")
    assert service.server.serve(Settings(model_repository=a_file)) == 2
    assert capsys.readouterr().err == f"error: model repository {a_file} is not a directory\n"
    monkeypatch.chdir(tmp_path)
    relative = Path("repo")
    relative.mkdir()

    def refused(path: object) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(os, "scandir", refused)  # permissions do not bind root: the refusal
    assert service.server.serve(Settings(model_repository=relative)) == 2
    err = capsys.readouterr().err
    assert (
        err == f"error: model repository repo ({tmp_path / 'repo'}) cannot be read: "
        "Permission denied\n"
    )


def test_train_help_comes_from_the_training_cli() -> None:
    out = python("-m", "recserve", "train", "--help")
    assert "usage: recserve train" in out
    assert "--repository" in out
