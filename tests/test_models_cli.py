"""``recserve models``: a repository's versions with their records, a server's index, exit codes."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from recserve import cli
from tests.factories import publish_mlp_version, random_params
from tests.server_process import Servers

CREATED = "2026-01-02T03:04:05Z"
RECORDS: dict[str, Any] = {
    "created_at": CREATED,
    "dataset": {"name": "ratings.dat", "size": 1_000_209, "users": 6040},
    "metrics": {
        "test": {
            "model": {"hr@10": 0.7012, "ndcg@10": 0.4231, "auc": 0.9},
            "popularity": {"hr@10": 0.4531, "ndcg@10": 0.2544},
            "lift": {"hr@10": 0.2481, "ndcg@10": 0.1687},
        }
    },
}


def _publish(repository: Path, name: str, **records: Any) -> None:
    params = random_params(3, 3)
    publish_mlp_version(repository, name, params, ["u0", "u1"], ["i0", "i1"], **records)


@pytest.fixture
def holding(repository: Path) -> Path:
    """A repository with a trained version, one without records, a broken one and an empty model."""
    _publish(repository, "movies", **RECORDS)
    _publish(repository, "plain")
    broken = repository / "movies" / "2"
    broken.mkdir()
    (broken / "metadata.json").write_text("{")
    (repository / "empty").mkdir()
    return repository


def _models(capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[int, str, str]:
    code = cli.main(["models", *flags])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_repository_lists_every_version_with_its_records(
    holding: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _models(capsys, "--repository", str(holding))
    assert (code, err) == (0, "")
    header, *rows, note = out.splitlines()
    assert header.split() == [
        "MODEL", "VERSION", "STATE", "CREATED", "DATA", "(INTERACTIONS)",
        "HR@10", "NDCG@10", "HR@10", "LIFT", "NDCG@10", "LIFT", "REASON",
    ]  # fmt: skip
    assert [row.split()[:3] for row in rows] == [
        ["empty", "-", "EMPTY"],
        ["movies", "1", "READABLE"],
        ["movies", "2", "UNREADABLE"],
        ["plain", "1", "READABLE"],
    ]
    trained = rows[1]
    for shown in (CREATED, "ratings.dat (1,000,209)", "0.7012", "0.4231", "+0.2481"):
        assert shown in trained
    assert "cannot read metadata.json" in rows[2]
    assert rows[3].split()[3:] == ["-", "random", "(0)"] + ["-"] * 4
    assert note.startswith("lift: the model's figure minus the popularity baseline's")


def test_json_gives_machines_the_same_listing(
    holding: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _models(capsys, "--repository", str(holding), "--json")
    assert code == 0
    listing = {(e["model"], e["version"]): e for e in json.loads(out)}
    assert listing[("movies", "1")] == {
        "model": "movies",
        "version": "1",
        "state": "READABLE",
        "reason": "",
        "created_at": CREATED,
        "dataset": {"name": "ratings.dat", "size": 1_000_209},
        "metrics": {
            "hr@10": 0.7012,
            "ndcg@10": 0.4231,
            "lift": {"hr@10": 0.2481, "ndcg@10": 0.1687},
        },
    }
    assert listing[("movies", "2")]["state"] == "UNREADABLE"
    assert listing[("plain", "1")]["metrics"] is None
    assert listing[("empty", "")]["reason"] == "no versions"


def test_the_default_repository_is_the_servers(
    holding: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECSERVE_MODEL_REPOSITORY", str(holding))
    code, out, _ = _models(capsys, "--json")
    assert code == 0
    assert {e["model"] for e in json.loads(out)} == {"movies", "plain", "empty"}


def test_a_repository_that_cannot_be_read_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for path, why in ((tmp_path / "absent", "does not exist"), (a_file, "is not a directory")):
        code, out, err = _models(capsys, "--repository", str(path))
        assert (code, out) == (2, "")
        assert err == f"error: model repository {path} {why}\n"


def test_a_server_lists_its_index_and_full_reasons_with_the_token(
    holding: Path,
    servers: Servers,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = {"RECSERVE_ADMIN_TOKEN": "t0ken"}
    server = servers.start(holding, workers=1, poll_interval_s=0, env=token)
    monkeypatch.delenv("RECSERVE_ADMIN_TOKEN", raising=False)
    code, out, err = _models(capsys, "--url", server.url)
    assert (code, err) == (0, "")
    header, *rows = out.splitlines()
    assert header.split() == ["MODEL", "VERSION", "STATE", "REASON"]
    assert [row.split(maxsplit=3) for row in rows] == [
        ["empty", "-", "UNAVAILABLE", "no versions"],
        ["movies", "1", "READY"],
        ["movies", "2", "UNAVAILABLE", "failed to load"],
        ["plain", "1", "READY"],
    ]
    monkeypatch.setenv("RECSERVE_ADMIN_TOKEN", "t0ken")
    code, out, _ = _models(capsys, "--url", server.url, "--json")
    assert code == 0
    [failed] = [e for e in json.loads(out) if e["version"] == "2"]
    assert failed["reason"].startswith("cannot read metadata.json: ")  # and the JSON error
    monkeypatch.setenv("RECSERVE_ADMIN_TOKEN", "wrong")
    code, out, err = _models(capsys, "--url", server.url)
    assert (code, out) == (1, "")
    assert err.startswith(f"error: {server.url} answered 403: ")
    assert err.count("\n") == 1


def test_a_server_that_cannot_be_reached_exits_1_with_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, out, err = _models(capsys, "--url", f"http://127.0.0.1:{port}")
    assert (code, out) == (1, "")
    assert err.startswith(f"error: cannot reach http://127.0.0.1:{port}: ")
    assert err.count("\n") == 1


def test_a_repository_and_a_url_are_one_or_the_other(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["models", "--repository", str(tmp_path), "--url", "http://127.0.0.1:1"])
    assert caught.value.code == 2
