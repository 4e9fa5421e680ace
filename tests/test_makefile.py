"""The README's two commands: ``make test`` first checks (or, as root, installs) the system tools
its tests drive; ``make run`` says where to go once the server is ready.

The system-tools step runs under a PATH of stand-ins (``id``, ``apt-get``, the tools), so that
nothing is installed or removed on this machine. ``make run`` runs with a virtualenv of wrappers
around this one, so that it neither installs nor trains.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from tests.factories import publish_random_version
from tests.server_process import ROOT, server_env

MAKE = shutil.which("make")
TOOLS = ("promtool", "prometheus", "curl", "wrk")
PACKAGE = {"promtool": "prometheus", "prometheus": "prometheus", "curl": "curl", "wrk": "wrk"}

pytestmark = pytest.mark.skipif(MAKE is None, reason="make is what these tests are about")


def executable(path: Path, body: str) -> None:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


@dataclass
class FakeSystem:
    """A directory that is the whole PATH: ``id`` answering ``uid``, optionally ``apt-get`` (which
    logs its arguments and, if ``installs``, puts every tool in place), and the tools present."""

    bin: Path
    apt_log: Path

    @classmethod
    def make(
        cls, root: Path, *, uid: int, present: tuple[str, ...], apt: bool, installs: bool = True
    ) -> FakeSystem:
        system = cls(root / "bin", root / "apt.log")
        system.bin.mkdir()
        executable(system.bin / "id", f"echo {uid}")
        for name in present:
            executable(system.bin / name, "exit 0")
        if apt:
            install = "".join(
                f"printf '#!/bin/sh\\n' > {system.bin / name}; /bin/chmod +x {system.bin / name}; "
                for name in TOOLS
            )
            executable(
                system.bin / "apt-get",
                f'echo "$*" >> {system.apt_log}\n'
                + (f'case "$1" in install) {install};; esac' if installs else ""),
            )
        return system

    def make_target(self, target: str, **variables: str) -> subprocess.CompletedProcess[str]:
        assert MAKE is not None
        venv = {"VENV": str(Path(sys.executable).parents[1])}  # exists: no venv module needed
        assigned = [f"{k}={v}" for k, v in {**venv, **variables}.items()]
        return subprocess.run(
            [MAKE, "--no-print-directory", "-s", "-C", str(ROOT), target, *assigned],
            env={"PATH": str(self.bin), "HOME": str(self.bin.parent)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def apt_calls(self) -> list[str]:
        return self.apt_log.read_text().splitlines() if self.apt_log.exists() else []


def missing_line(missing: list[str], install_prefix: str) -> str:
    packages = " ".join(dict.fromkeys(PACKAGE[m] for m in missing))
    return f"missing: {' '.join(missing)}; {install_prefix}apt-get install -y {packages}"


def test_nothing_happens_when_every_tool_is_present(tmp_path: Path) -> None:
    system = FakeSystem.make(tmp_path, uid=1000, present=TOOLS, apt=True)
    result = system.make_target("system-deps")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert system.apt_calls() == []


@pytest.mark.parametrize(
    ("present", "missing"),
    [
        (("curl", "wrk"), ["promtool", "prometheus"]),
        ((), ["promtool", "prometheus", "curl", "wrk"]),
    ],
)
def test_without_root_it_stops_naming_what_is_missing_and_the_command(
    tmp_path: Path, present: tuple[str, ...], missing: list[str]
) -> None:
    system = FakeSystem.make(tmp_path, uid=1000, present=present, apt=True)
    result = system.make_target("system-deps")
    assert result.returncode != 0
    assert result.stderr.splitlines()[0] == missing_line(missing, "install them with: sudo ")
    assert system.apt_calls() == []


def test_without_apt_get_it_names_the_debian_command(tmp_path: Path) -> None:
    system = FakeSystem.make(tmp_path, uid=0, present=("curl", "wrk", "prometheus"), apt=False)
    result = system.make_target("system-deps")
    assert result.returncode != 0
    assert (
        result.stderr.splitlines()[0]
        == missing_line(["promtool"], "install them with your package manager (Debian/Ubuntu: ")
        + ")"
    )


def test_a_python_without_venv_is_named_when_the_virtualenv_does_not_exist(
    tmp_path: Path,
) -> None:
    system = FakeSystem.make(tmp_path, uid=1000, present=TOOLS, apt=True)
    result = system.make_target(
        "system-deps", VENV=str(tmp_path / "new-venv"), PYTHON=str(tmp_path / "python3")
    )
    assert result.returncode != 0
    assert result.stderr.splitlines()[0] == (
        "missing: python3-venv; install them with: sudo apt-get install -y python3-venv"
    )


def test_as_root_with_apt_get_it_installs_the_missing_packages(tmp_path: Path) -> None:
    system = FakeSystem.make(tmp_path, uid=0, present=("curl",), apt=True)
    result = system.make_target("system-deps")
    assert result.returncode == 0, result.stderr
    assert system.apt_calls() == [
        "update -qq",
        "install -y -qq --no-install-recommends prometheus wrk",
    ]
    assert all((system.bin / name).exists() for name in TOOLS)


def test_an_install_that_leaves_a_tool_missing_fails(tmp_path: Path) -> None:
    system = FakeSystem.make(tmp_path, uid=0, present=("curl", "wrk"), apt=True, installs=False)
    result = system.make_target("system-deps")
    assert result.returncode != 0
    assert "still missing after apt-get install -y prometheus: promtool" in result.stderr


def test_make_test_stops_at_the_missing_tools_before_anything_else(tmp_path: Path) -> None:
    system = FakeSystem.make(tmp_path, uid=1000, present=("curl", "wrk"), apt=True)
    # A virtualenv without pip: had make gone on, it would have failed to install into it.
    venv = wrapper_venv(tmp_path / "venv")
    result = system.make_target("test", VENV=str(venv))
    assert result.returncode != 0
    assert result.stdout == ""
    assert result.stderr.splitlines()[0] == missing_line(
        ["promtool", "prometheus"], "install them with: sudo "
    )
    assert not (venv / ".test-installed").exists()


# make run -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wrapper_venv(path: Path) -> Path:
    """A virtualenv whose python and recserve are this one's, already installed for make."""
    real = Path(sys.executable).parent
    (path / "bin").mkdir(parents=True)
    for name in ("python", "recserve"):
        executable(path / "bin" / name, f'exec "{real / name}" "$@"')
    (path / ".run-installed").touch()
    return path


def announced(lines: list[str]) -> list[str]:
    """The lines ``make run`` prints once the server is ready (README: "Two commands")."""
    start = next(i for i, line in enumerate(lines) if line.startswith("recserve is ready at "))
    return lines[start : start + 3]


def readme_announcement(address: str) -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    return [
        line.replace("127.0.0.1:8000", address) for line in announced(list(map(str.strip, readme)))
    ]


def test_make_run_says_where_the_docs_are_and_what_to_try_once_ready(tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    publish_random_version(repository, "demo")  # user ids u0.., as the default model's
    port = free_port()
    assert MAKE is not None
    command = [MAKE, "--no-print-directory", "-C", str(ROOT), "run", f"PORT={port}",
               f"VENV={wrapper_venv(tmp_path / 'venv')}", f"MODEL_REPO={repository}"]  # fmt: skip
    log_path = tmp_path / "make-run.log"
    with open(log_path, "wb") as log:
        make = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=server_env({"RECSERVE_WORKERS": "1"}),
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while "recserve is ready at" not in log_path.read_text() and make.poll() is None:
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        time.sleep(0.2)  # the rest of the announcement
        lines = [line.strip() for line in log_path.read_text().splitlines()]
        address = f"127.0.0.1:{port}"
        assert announced(lines) == readme_announcement(address), log_path.read_text()
        docs_url = announced(lines)[1].removeprefix("API documentation: ")
        assert httpx.get(docs_url, timeout=10).status_code == 200
        example = announced(lines)[2].removeprefix("try: ")
        result = subprocess.run(
            ["bash", "-c", example.replace("curl ", "curl --silent --fail-with-body ", 1)],
            capture_output=True, timeout=30, check=True,
        )  # fmt: skip
        assert len(orjson.loads(result.stdout)["items"]) == 5
    finally:
        os.killpg(make.pid, signal.SIGINT)  # Ctrl-C in the terminal
        make.wait(60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(make.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.killpg(make.pid, signal.SIGKILL)
        pytest.fail(f"make run left processes behind:\n{log_path.read_text()}")
    assert "Finished server process" in log_path.read_text()
