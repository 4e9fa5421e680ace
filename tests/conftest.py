"""Fixtures shared by the tests: a model repository, a published random version, and servers run
as real processes that are stopped, and checked to exit cleanly, when the test (or module) ends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from modelrepo import PublishedVersion
from tests.factories import publish_random_version
from tests.server_process import Servers

if TYPE_CHECKING:
    from tests.app_harness import Harness


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """An empty model repository."""
    path = tmp_path / "repo"
    path.mkdir()
    return path


@pytest.fixture
def published(repository: Path) -> tuple[PublishedVersion, dict[str, np.ndarray]]:
    """Version 1 of model ``recs`` (50 users ``u0..``, 40 items ``i0..``) and its parameters."""
    return publish_random_version(repository, "recs")


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    """Start servers with ``servers.start(repository, ...)``; each must exit 0 after the test."""
    started = Servers(tmp_path)
    yield started
    started.close()


@pytest.fixture(scope="module")
def module_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """:func:`servers` for servers that serve every test of a module."""
    started = Servers(tmp_path_factory.mktemp("servers"))
    yield started
    started.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def served() -> AsyncIterator[Harness]:
    """The app in-process over a stand-in reconciler, with an admin token (tests.app_harness)."""
    from pydantic import SecretStr

    from tests.app_harness import TOKEN, serving

    async with serving(admin_token=SecretStr(TOKEN)) as harness:
        yield harness
