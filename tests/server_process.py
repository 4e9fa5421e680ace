"""Run ``recserve serve`` as a real subprocess on a free 127.0.0.1 port, for end-to-end tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

_LISTENING = re.compile(rb"Uvicorn running on http://127\.0\.0\.1:(\d+)")


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host_port(self) -> str:
        """``host:port`` as tritonclient.http wants it."""
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, then the exit status (killed after ``timeout_s``)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"server did not stop in {timeout_s} s:\n{self.log()}") from None


def start_server(
    repository: Path,
    log_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    timeout_s: float = 60.0,
) -> ServerProcess:
    """Start the server with ``--port 0`` and wait until it listens (its log names the port)."""
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("RECSERVE_")}
    clean_env.update(env or {})
    command = [
        sys.executable,
        "-m",
        "service.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--model-repository",
        str(repository),
        *args,
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=clean_env,
            cwd=Path(__file__).resolve().parents[1],
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        match = _LISTENING.search(log_path.read_bytes())
        if match:
            return ServerProcess(process, int(match.group(1)), log_path)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    if process.poll() is None:
        process.kill()
        process.wait()
    raise AssertionError(f"server did not start:\n{log_path.read_text(errors='replace')}")
