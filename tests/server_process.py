"""Real server processes, for the end-to-end tests and the benches: start, wait, stop, measure.

One launcher for every caller: the tests run ``python -m recserve serve`` on a free port that
the server's log names (``--port 0``), without the caller's ``RECSERVE_*`` settings; the benches
run the same server (or their baseline) as a user would, with the environment's settings, in a
process group of its own so that no worker outlives the run. CPU time and resident memory are
read from ``/proc``, for a whole process tree (a supervisor and its workers).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
_LISTENING = re.compile(rb"Uvicorn running on http://127\.0\.0\.1:(\d+)")


class ServerError(AssertionError):
    """A server did not start, did not become ready, or did not stop in time (its log attached)."""


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    port: int  # 0 until the server's log has named the port it listens on
    log_path: Path
    name: str = "recserve"
    group: bool = False  # in a process group of its own: signals reach its workers too

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def host_port(self) -> str:
        """``host:port`` as tritonclient.http wants it."""
        return f"{HOST}:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def cpu_seconds(self) -> float:
        """CPU time of the server and all its workers (see :func:`cpu_seconds`)."""
        return cpu_seconds(process_tree(self.pid))

    def wait_listening(self, timeout_s: float = 60.0) -> ServerProcess:
        """Wait until the log names the port the server listens on (it binds after loading)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            match = _LISTENING.search(self.log_path.read_bytes())
            if match:
                self.port = int(match.group(1))
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise ServerError(f"{self.name} did not start:\n{self.log()}")

    def wait_ready(self, timeout_s: float = 60.0) -> ServerProcess:
        """Wait until ``/v2/health/ready`` answers 200 (for servers started with a known port)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"{self.name} exited ({self.process.returncode}): {self.tail()}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=2) as reply,
            ):
                if reply.status == 200:
                    return self
            time.sleep(0.2)
        raise ServerError(f"{self.name} not ready after {timeout_s:.0f} s: {self.tail()}")

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, then the exit status; killed after ``timeout_s``, and ServerError raised."""
        try:
            if self.process.poll() is None:
                self._signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
                raise ServerError(
                    f"{self.name} did not stop in {timeout_s:g} s:\n{self.log()}"
                ) from None
        finally:
            if self.group:
                self._signal(signal.SIGKILL)  # workers left behind, if any

    def kill(self) -> None:
        """SIGKILL (a no-op once it has exited), and reap it."""
        if self.process.poll() is None or self.group:
            self._signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)

    def _signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self.group:
                os.killpg(self.process.pid, signum)
            else:
                self.process.send_signal(signum)


def launch(
    argv: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str],
    port: int = 0,
    name: str = "recserve",
    group: bool = False,
) -> ServerProcess:
    """Start ``argv`` in the repository root, its output (stdout and stderr) to ``log_path``."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=ROOT,
            start_new_session=group,
        )
    return ServerProcess(process, port, log_path, name, group)


def serve_command(repository: Path, *args: str) -> list[str]:
    """``recserve serve`` on 127.0.0.1, on a free port unless ``args`` name one."""
    return [sys.executable, "-m", "recserve", "serve", "--host", HOST, "--port", "0",
            "--model-repository", str(repository), *args]  # fmt: skip


def server_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without its ``RECSERVE_*`` settings, plus ``extra``; one worker unless
    ``extra`` or a flag says otherwise (the default depends on the machine's cores)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSERVE_")}
    env["RECSERVE_WORKERS"] = "1"
    env.update(extra or {})
    return env


def start_server(
    repository: Path,
    log_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    timeout_s: float = 60.0,
) -> ServerProcess:
    """Start the server with ``--port 0`` and wait until it listens (its log names the port)."""
    server = launch(serve_command(repository, *args), log_path, env=server_env(env))
    return server.wait_listening(timeout_s)


def flags(**settings: object) -> list[str]:
    """``max_batch_rows=16`` as ``["--max-batch-rows", "16"]``: settings as ``serve`` flags."""
    return [part for k, v in settings.items() for part in (f"--{k.replace('_', '-')}", str(v))]


@dataclass
class Servers:
    """The servers a test (or a module of tests) started; :meth:`close` stops them and checks
    that each exited with status 0 and that its log holds none of the phrases it must not."""

    log_dir: Path
    started: list[tuple[ServerProcess, float, tuple[str, ...]]] = field(default_factory=list)

    def start(
        self,
        repository: Path,
        *args: str,
        env: dict[str, str] | None = None,
        wait: bool = True,
        stop_timeout_s: float = 30.0,
        forbidden: Sequence[str] = (),
        **settings: object,
    ) -> ServerProcess:
        """Start a server (``settings`` as flags) and, unless ``wait`` is False, wait until it
        listens; the server must not log any of the ``forbidden`` phrases."""
        log_path = self.log_dir / f"server-{len(self.started) + 1}.log"
        command = serve_command(repository, *args, *flags(**settings))
        server = launch(command, log_path, env=server_env(env))
        self.started.append((server, stop_timeout_s, tuple(forbidden)))
        return server.wait_listening() if wait else server

    def close(self) -> None:
        problems = []
        for server, timeout_s, forbidden in self.started:
            status = server.stop(timeout_s)
            log = server.log()
            found = [phrase for phrase in forbidden if phrase in log]
            if status != 0 or found:
                name = server.log_path.name
                problems.append(f"{name}: exit status {status}, logged {found}:\n{log}")
        self.started.clear()
        if problems:
            raise ServerError("\n".join(problems))


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, stack = [], [root]
    while stack:
        pid = stack.pop()
        tree.append(pid)
        stack.extend(children.get(pid, []))
    return tree


def cpu_seconds(pids: Sequence[int]) -> float:
    """User plus system CPU time of the processes (all their threads), in seconds."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")
