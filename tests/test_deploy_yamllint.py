"""yamllint over every YAML file of the repository, with the settings in .yamllint."""

from __future__ import annotations

import subprocess

from tests.deploy_tools import ROOT, tool


def _yamllint(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("yamllint"), "--config-file", str(ROOT / ".yamllint"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_yaml_files_pass_yamllint_strictly() -> None:
    result = _yamllint("--strict", "--format", "parsable", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_yamllint_covers_deployment_files_and_skips_ignored_ones() -> None:
    result = _yamllint("--list-files", ".")
    assert result.returncode == 0, result.stderr
    listed = {line.removeprefix("./") for line in result.stdout.splitlines()}
    for path in (
        "docker-compose.yml",
        "docker-compose.gpu.yml",
        "k8s/base/deployment.yaml",
        "k8s/overlays/gpu/kustomization.yaml",
        "deploy/prometheus/prometheus.yml",
    ):
        assert path in listed, f"{path} not linted"
    assert not any(path.startswith(".venv/") for path in listed)
