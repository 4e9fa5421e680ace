"""The README tells the truth: its flag table against the settings, its examples against a server.

The runnable examples are the fenced ``sh`` blocks that call curl on ``localhost:8000`` and the
tritonclient ``python`` block. In an ``sh`` block each command may be followed by comment lines;
comment lines that start with ``{`` or ``[`` are the command's sample output, as JSON. Each
command runs in bash (curl failing on any status >= 400) against a real server process serving a
random model with the README's ids, and each answer must be JSON of the sample's shape: the same
keys, list lengths and value types (the values depend on the model). Deployment walk-throughs
(compose, kubectl) are indented blocks and are not run.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from service.settings import BatchingSettings, Settings
from tests.deploy_tools import tool
from tests.factories import publish_random_version
from tests.server_process import ROOT, ServerProcess, Servers

README = ROOT / "README.md"
TOKEN = "readme-admin-token"
DOCUMENTED_ADDRESS = "localhost:8000"
# The README's examples use user u42 and items up to i311 of model "demo".
N_USERS, N_ITEMS = 50, 400
# What a trained version records, so that its V2 metadata has every parameter the README shows.
_FIGURES = {"hr@10": 0.55, "ndcg@10": 0.33, "auc": 0.84}
RECORDS: dict[str, Any] = {
    "created_at": "2026-01-02T03:04:05Z",
    "dataset": {"name": "synthetic", "size": 60_000},
    "published_model": {"trained_on": "all interactions"},
    "metrics": {"test": {"model": _FIGURES, "popularity": _FIGURES}},
}

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
_HEREDOC = re.compile(r"<<-?\s*'?(\w+)'?")


def readme() -> str:
    return README.read_text(encoding="utf-8")


def fenced_blocks(language: str) -> list[str]:
    return [body for lang, body in _FENCE.findall(readme()) if lang == language]


# The flag table -----------------------------------------------------------------------------


def documented_default(value: object) -> str:
    """A default as the table writes it: ``unset`` for None, else the value in backticks."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def expected_rows() -> dict[str, tuple[str, str]]:
    """Flag -> (environment variable, default) for every setting ``recserve serve`` takes."""
    rows: dict[str, tuple[str, str]] = {}
    nested = (("", Settings, "RECSERVE_"), ("batching", BatchingSettings, "RECSERVE_BATCHING__"))
    for skip, model, prefix in nested:
        for name, field in model.model_fields.items():
            if name == "batching" and skip == "":
                continue
            default = field.get_default(call_default_factory=True)
            flag = "`--" + name.replace("_", "-") + "`"
            rows[flag] = (f"`{prefix}{name.upper()}`", documented_default(default))
    return rows


def table_rows() -> dict[str, tuple[str, str]]:
    """Flag -> (environment, default) as the README's flag table gives them."""
    lines = readme().splitlines()
    start = lines.index("| Flag | Environment | Default | Meaning |")
    rows: dict[str, tuple[str, str]] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        flag, env, default, _meaning = (cell.strip() for cell in line.strip("|").split("|", 3))
        assert flag not in rows, f"{flag} is in the table twice"
        rows[flag] = (env, default)
    return rows


def test_the_flag_table_lists_every_setting_with_its_environment_variable_and_default() -> None:
    table, expected = table_rows(), expected_rows()
    assert sorted(table) == sorted(expected), "flags missing from or unknown to the table"
    wrong = {flag: (table[flag], want) for flag, want in expected.items() if table[flag] != want}
    assert not wrong, f"README row (environment, default) vs the settings: {wrong}"


# The curl examples --------------------------------------------------------------------------


@dataclass
class Example:
    command: str
    sample: Any = None  # the documented output, when the README gives one

    @property
    def calls_server(self) -> bool:
        return "curl " in self.command and DOCUMENTED_ADDRESS in self.command


def parse_examples(block: str) -> list[Example]:
    """The commands of an ``sh`` block (continuation lines and here-documents included), each
    with the JSON sample output of the comment lines that follow it."""
    examples: list[Example] = []
    lines = iter(block.splitlines())
    comment: list[str] = []

    def close_comment() -> None:
        text = "\n".join(comment).strip()
        comment.clear()
        if text[:1] in ("{", "["):
            assert examples, f"sample output before any command: {text}"
            examples[-1].sample = json.loads(text)

    for line in lines:
        if line.startswith("#"):
            comment.append(line[1:])
            continue
        close_comment()
        if not line.strip():
            continue
        command = [line]
        while command[-1].endswith("\\"):
            command.append(next(lines))
        heredoc = _HEREDOC.search(line)
        if heredoc:
            command.extend(iter(lambda: next(lines), heredoc.group(1)))
            command.append(heredoc.group(1))
        examples.append(Example("\n".join(command)))
    close_comment()
    return examples


def readme_examples() -> list[Example]:
    blocks = [b for b in fenced_blocks("sh") if "curl " in b and DOCUMENTED_ADDRESS in b]
    return [example for block in blocks for example in parse_examples(block)]


def shape(value: Any) -> Any:
    """The structure of a JSON value: keys, list lengths and value types, not the values."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value]
    if isinstance(value, bool) or value is None:
        return type(value).__name__
    return "number" if isinstance(value, int | float) else type(value).__name__


def test_the_example_parser_reads_commands_here_documents_and_sample_outputs() -> None:
    block = (
        'curl localhost:8000/a   # trailing comment\n# {"a": [1,\n#  2]}\n'
        "cat > f <<'EOF'\n# not a comment\nEOF\n"
        "gzip -c f | curl localhost:8000/b \\\n     -H 'X: y'\n# prose, not output\n"
    )
    examples = parse_examples(block)
    assert [e.command for e in examples] == [
        "curl localhost:8000/a   # trailing comment",
        "cat > f <<'EOF'\n# not a comment\nEOF",
        "gzip -c f | curl localhost:8000/b \\\n     -H 'X: y'",
    ]
    assert [e.sample for e in examples] == [{"a": [1, 2]}, None, None]
    assert shape({"a": [1, 2.5], "b": "x", "c": False}) == {
        "a": ["number", "number"],
        "b": "str",
        "c": "bool",
    }


@pytest.fixture(scope="module")
def server(module_servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    """A server of a random model "demo" with the README's ids, and an admin token."""
    repository = tmp_path_factory.mktemp("repo")
    publish_random_version(repository, "demo", n_users=N_USERS, n_items=N_ITEMS, **RECORDS)
    return module_servers.start(
        repository, env={"RECSERVE_ADMIN_TOKEN": TOKEN}, workers=1, poll_interval_s=0
    )


def run_example(example: Example, server: ServerProcess, workdir: Path) -> str:
    """One README command in bash, its curl failing on any HTTP error; its standard output."""
    curl = tool("curl")
    prelude = f'curl() {{ "{curl}" --silent --show-error --fail-with-body "$@"; }}\n'
    command = example.command.replace(DOCUMENTED_ADDRESS, server.host_port)
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", prelude + command],
        cwd=workdir,
        env={"PATH": "/usr/bin:/bin", "RECSERVE_ADMIN_TOKEN": TOKEN},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, (
        f"{command}\nexit {result.returncode}: {result.stdout}{result.stderr}"
    )
    return result.stdout


def test_the_readme_has_curl_examples_with_sample_outputs_for_both_apis() -> None:
    examples = [e for e in readme_examples() if e.calls_server]
    with_samples = " ".join(e.command for e in examples if e.sample is not None)
    for path in ("/v2/health/ready", "/v2/models/demo/infer", "/recommend", "/score"):
        assert path in with_samples, f"no curl example of {path} with its output"


def test_every_curl_example_answers_json_of_the_documented_shape(
    server: ServerProcess, tmp_path: Path
) -> None:
    for example in readme_examples():
        output = run_example(example, server, tmp_path)
        if not example.calls_server:
            continue
        answer = json.loads(output)  # every answer is JSON, sample or not
        if example.sample is not None:
            assert shape(answer) == shape(example.sample), f"{example.command}\n{output}"


# The tritonclient example -------------------------------------------------------------------


def tritonclient_example() -> str:
    (block,) = [b for b in fenced_blocks("python") if "tritonclient.http" in b]
    return block


def test_the_tritonclient_example_runs_and_prints_what_the_readme_shows(
    server: ServerProcess,
) -> None:
    code = tritonclient_example()
    documented = re.search(r"print\(result\.as_numpy\(\"score\"\)\)\s+# (\[.*\])", code)
    assert documented, "the example shows the scores it prints"
    code = code.replace(f'"{DOCUMENTED_ADDRESS}"', f'"{server.host_port}"')
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    scores, rows_per_run = result.stdout.splitlines()
    assert len(scores.strip("[]").split()) == len(documented.group(1).strip("[]").split())
    assert rows_per_run.endswith(" rows per ONNX Runtime run")
    assert float(rows_per_run.split()[0]) >= 1


def test_the_tritonclient_example_says_how_to_install_its_client() -> None:
    assert "pip install -e '.[client]'" in readme()
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^client = \["tritonclient\[http\]', pyproject, re.MULTILINE)
