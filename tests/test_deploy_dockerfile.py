"""Dockerfile and .dockerignore: the images run `recserve serve` as the server's settings expect."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.deploy_tools import ROOT, recserve_args, setting_default, settings_from_env, tool

DOCKERFILE = ROOT / "Dockerfile"
TARGETS = ("cpu", "gpu")
MODEL_REPOSITORY = "/models"
# Packages that compile or build; none belongs in a final image.
BUILD_TOOLS = re.compile(
    r"\b(build-essential|gcc|g\+\+|clang|make|cmake|python3?-dev|python3-pip|[\w.+-]+-dev)\b"
)


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [i.args for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name} has no {keyword}"
        return found[-1]

    def env(self) -> dict[str, str]:
        pairs: dict[str, str] = {}
        for args in self.all("ENV"):
            for word in shlex.split(args):
                key, sep, value = word.partition("=")
                assert sep, f"ENV {args!r}: use KEY=value"
                pairs[key] = value
        return pairs


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: dict[str, Stage]


def logical_lines(text: str) -> Iterator[str]:
    """Instructions with continuations joined and comment lines dropped (Docker's rules)."""
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        line = (pending + stripped).strip()
        pending = ""
        if line:
            yield line
    assert not pending, "Dockerfile ends inside a continued line"


def parse_dockerfile(text: str) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in logical_lines(text):
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        args = args.strip()
        if keyword == "FROM":
            words = args.split()
            assert len(words) == 3 and words[1].upper() == "AS", f"unnamed stage: FROM {args}"
            current = Stage(name=words[2], base=words[0])
            stages[current.name] = current
        elif current is None:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            name, _, default = args.partition("=")
            global_args[name] = default
        else:
            current.instructions.append(Instruction(keyword, args))
    return Dockerfile(global_args, stages)


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def base_image(df: Dockerfile, stage: Stage) -> str:
    """The image a stage starts from, through ARGs and earlier stages."""
    base = re.sub(r"\$\{(\w+)\}", lambda m: df.global_args[m.group(1)], stage.base)
    return base_image(df, df.stages[base]) if base in df.stages else base


def healthcheck_argv(stage: Stage) -> list[str]:
    args = stage.last("HEALTHCHECK")
    options, sep, command = args.partition("CMD ")
    assert sep, f"HEALTHCHECK without CMD: {args}"
    assert "--interval=" in options and "--start-period=" in options
    argv: list[str] = json.loads(command)
    return argv


def test_one_file_builds_a_cpu_and_a_gpu_image(dockerfile: Dockerfile) -> None:
    assert set(TARGETS) <= set(dockerfile.stages)
    assert re.fullmatch(
        r"python:3\.11-slim(-\w+)?", base_image(dockerfile, dockerfile.stages["cpu"])
    )
    gpu_base = base_image(dockerfile, dockerfile.stages["gpu"])
    assert re.fullmatch(r"nvidia/cuda:13\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+", gpu_base)


@pytest.mark.parametrize("target", TARGETS)
def test_entrypoint_is_the_console_script_serving(dockerfile: Dockerfile, target: str) -> None:
    stage = dockerfile.stages[target]
    entrypoint = json.loads(stage.last("ENTRYPOINT"))
    cmd = json.loads(stage.last("CMD"))
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert entrypoint == ["recserve"]
    assert entrypoint[0] in pyproject["project"]["scripts"]
    assert cmd == ["serve"]
    assert recserve_args(cmd).command == "serve"


@pytest.mark.parametrize("target", TARGETS)
def test_runs_as_the_non_root_user_that_owns_the_model_repository(
    dockerfile: Dockerfile, target: str
) -> None:
    stage = dockerfile.stages[target]
    user, _, group = stage.last("USER").partition(":")
    assert user.isdigit() and int(user) != 0, "numeric uid, so runAsNonRoot can verify it"
    assert group.isdigit() and int(group) != 0
    setup = " ".join(stage.all("RUN"))
    assert f"--uid {user}" in setup
    assert f"chown {user}:{group} {MODEL_REPOSITORY}" in setup


@pytest.mark.parametrize("target", TARGETS)
def test_environment_port_and_volume_agree_with_settings(
    dockerfile: Dockerfile, target: str
) -> None:
    stage = dockerfile.stages[target]
    env = stage.env()
    settings = settings_from_env(env)
    assert settings.host == "0.0.0.0"
    assert settings.port == setting_default("port")
    assert stage.all("EXPOSE") == [str(settings.port)]
    assert str(settings.model_repository) == MODEL_REPOSITORY
    assert json.loads(stage.last("VOLUME")) == [MODEL_REPOSITORY]
    assert "/opt/venv/bin" in env["PATH"].split(":")


@pytest.mark.parametrize("target", TARGETS)
def test_final_image_holds_the_venv_and_no_build_tools(dockerfile: Dockerfile, target: str) -> None:
    stage = dockerfile.stages[target]
    for run in stage.all("RUN"):
        assert not BUILD_TOOLS.search(run), f"build tool in the {target} image: {run}"
    copies = stage.all("COPY")
    assert copies == [f"--from={target}-venv /opt/venv /opt/venv"]
    venv_stage = dockerfile.stages[f"{target}-venv"]
    assert "pip uninstall --yes pip" in " ".join(venv_stage.all("RUN"))
    assert base_image(dockerfile, venv_stage) == base_image(dockerfile, stage), (
        "the venv must be built on the Python it runs on"
    )


class _ReadyHandler(BaseHTTPRequestHandler):
    status = 200
    paths: list[str] = []  # noqa: RUF012 - shared with the test on purpose

    def do_GET(self) -> None:
        type(self).paths.append(self.path)
        self.send_response(type(self).status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def ready_server() -> Iterator[tuple[int, type[_ReadyHandler]]]:
    handler = type("Handler", (_ReadyHandler,), {"status": 200, "paths": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("target", TARGETS)
def test_healthcheck_passes_only_while_the_server_is_ready(
    dockerfile: Dockerfile, target: str, ready_server: tuple[int, type[_ReadyHandler]]
) -> None:
    port, handler = ready_server
    argv = healthcheck_argv(dockerfile.stages[target])
    assert argv[0] == "python", "slim images have no curl; the venv's python is on PATH"
    command = [sys.executable, *argv[1:]]
    env = {"RECSERVE_PORT": str(port)}

    handler.status = 200
    assert subprocess.run(command, env=env, capture_output=True, timeout=30).returncode == 0
    handler.status = 503
    assert subprocess.run(command, env=env, capture_output=True, timeout=30).returncode != 0
    assert handler.paths == ["/v2/health/ready", "/v2/health/ready"]


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [tool("hadolint"), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: `*` and `?` stop at `/`, `**` crosses it."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out.append(pattern[i : end + 1])
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def dockerignore_rules(text: str) -> list[tuple[re.Pattern[str], bool]]:
    """Patterns in order, each with whether it excludes (Docker: the last match wins)."""
    rules: list[tuple[re.Pattern[str], bool]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclude = not line.startswith("!")
        rules.append((_pattern_regex(line.lstrip("!").strip("/")), exclude))
    return rules


def is_excluded(rules: list[tuple[re.Pattern[str], bool]], path: str) -> bool:
    """Docker's rule: a pattern matching the path or any of its parent directories applies."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for regex, exclude in rules:
        if any(regex.fullmatch(c) for c in candidates):
            excluded = exclude
    return excluded


def test_dockerignore_keeps_what_the_build_copies_and_drops_the_rest(
    dockerfile: Dockerfile,
) -> None:
    rules = dockerignore_rules((ROOT / ".dockerignore").read_text(encoding="utf-8"))
    sources = [
        src
        for stage in dockerfile.stages.values()
        for args in stage.all("COPY")
        if not args.startswith("--from=")
        for src in args.split()[:-1]
    ]
    assert sources, "the build copies nothing from the context"
    for src in sources:
        path = ROOT / src
        assert path.exists(), f"COPY source {src} missing from the repository"
        files = [path] if path.is_file() else [p for p in path.rglob("*.py") if p.is_file()]
        for file in files:
            rel = file.relative_to(ROOT).as_posix()
            assert not is_excluded(rules, rel), f"{rel} left out"
    for dropped in (
        ".venv/bin/python",
        ".git/HEAD",
        "model_repo/demo/1/model.onnx",
        "tests/test_deploy_dockerfile.py",
        "service/__pycache__/app.cpython-311.pyc",
        "k8s/base/deployment.yaml",
    ):
        assert is_excluded(rules, dropped), f"{dropped} would be sent to the build"


def test_dockerignore_matcher_follows_docker_rules() -> None:
    rules = dockerignore_rules("*\n!service/\n**/__pycache__\n")
    assert is_excluded(rules, "notes.txt")
    assert not is_excluded(rules, "service/app.py")
    assert is_excluded(rules, "service/__pycache__/app.pyc")
    assert is_excluded(rules, "service/v2/__pycache__/x.pyc")


def test_parser_joins_continuations_and_skips_comments() -> None:
    df = parse_dockerfile(
        "ARG BASE=python:3.11-slim\nFROM ${BASE} AS one\n# note\nENV A=1 \\\n    # inner\n"
        "    B=2\nFROM one AS two\nUSER 5:5\n"
    )
    assert df.stages["one"].env() == {"A": "1", "B": "2"}
    assert base_image(df, df.stages["two"]) == "python:3.11-slim"
    assert df.stages["two"].last("USER") == "5:5"
