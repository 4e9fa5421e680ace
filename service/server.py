"""Running the app under uvicorn: event loop and parser choice, worker processes, graceful exit.

On SIGTERM (or a first Ctrl-C) each worker turns readiness false at once and refuses new
inference requests with 503, lets the requests it accepted finish within
``settings.shutdown_grace_s``, then stops listening, shuts the model reconciler down and exits 0.
Requests still queued as the grace period ends are answered 503 rather than dropped, clients
still sending a body are cut off (service.http.protocol), and a model load in progress (also one
at startup) is abandoned at its next step; the last half second of the grace period is kept for
stopping, so the process is gone within it.
With ``workers > 1`` a small supervisor binds a socket per worker on the one address (the kernel
spreads connections over them), starts the workers (each builds its own app from ``RECSERVE_*``
environment variables), forwards the signal and restarts a worker that dies on its socket; the
workers' metrics meet in a directory it creates (see service.metrics.multiprocess).
"""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import logging
import logging.config
import math
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn
from pydantic import BaseModel, SecretStr
from uvicorn.config import LOGGING_CONFIG

from modelrepo.access import read_problem
from service.http.edge import edge_protocol
from service.http.lifecycle import Lifecycle
from service.http.state import STATE_KEY, AppState
from service.metrics import multiprocess as multiprocess_metrics
from service.metrics.families import Metrics
from service.settings import Settings

if TYPE_CHECKING:
    from service.models.reconciler import Reconciler

logger = logging.getLogger(__name__)

ENV_PREFIX = "RECSERVE_"
STARTUP_FAILURE = 3  # uvicorn's exit status for a worker that never started serving
BAD_REPOSITORY = 2  # as for an invalid flag: the server cannot start as asked
_SUPERVISOR_TICK_S = 0.5
# Part of the grace period kept for answering 503 to what is still queued when it ends.
_FINAL_ANSWERS_S = 1.0
# Part of the grace period kept for stopping once the requests are done: closing the connections
# (a client still sending its body is cut off then), unloading the models, exiting.
_STOPPING_S = 0.5


def settings_to_env(settings: Settings) -> dict[str, str]:
    """``RECSERVE_*`` variables from which ``Settings()`` rebuilds exactly these settings."""
    env: dict[str, str] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            text = value.get_secret_value()
        elif isinstance(value, BaseModel):
            text = value.model_dump_json()
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        env[ENV_PREFIX + name.upper()] = text
    return env


def log_config(settings: Settings) -> dict[str, Any]:
    """uvicorn's logging setup plus the server's own loggers; request lines are bare JSON."""
    config = copy.deepcopy(LOGGING_CONFIG)
    level = settings.log_level.upper()
    config["formatters"]["plain"] = {"format": "%(message)s"}
    config["handlers"]["request"] = {
        "formatter": "plain",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stdout",
    }
    config["loggers"]["service"] = {"handlers": ["default"], "level": level, "propagate": False}
    config["loggers"]["recserve.request"] = {
        "handlers": ["request"],
        "level": "INFO",
        "propagate": False,
    }
    return config


def uvicorn_config(settings: Settings, app: Any) -> uvicorn.Config:
    """uvicorn settings: uvloop when installed, the server's own HTTP protocol with its limits
    (service.http.protocol: httptools when installed), no access log (see request_log)."""
    have = importlib.util.find_spec
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop" if have("uvloop") else "asyncio",
        http=edge_protocol(settings),
        h11_max_incomplete_event_size=settings.max_header_bytes,
        timeout_keep_alive=math.ceil(settings.keep_alive_timeout_s),
        lifespan="on",
        access_log=False,
        log_level=settings.log_level,
        log_config=log_config(settings),
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s),
        proxy_headers=False,
    )


class GracefulServer(uvicorn.Server):
    """A uvicorn server that drains before it stops listening, and exits 0 after a signal."""

    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle, grace_s: float) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle
        self.grace_s = grace_s
        self.reconciler: Reconciler | None = None  # set by the app's reconciler factory
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # The signal is not recorded for re-raising (uvicorn's default), so the exit status is 0.
        if self.reconciler is not None:
            self.reconciler.stop_loading()  # a load in progress (at startup too) is abandoned
        if not self.started and not self.should_exit:
            logger.info("received %s while starting: stopping", signal.Signals(sig).name)
        if self._loop is None or not self.started or self.lifecycle.draining:
            if self.lifecycle.draining and sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True
            return
        logger.info(
            "received %s: draining for up to %.1f s", signal.Signals(sig).name, self.grace_s
        )
        self.lifecycle.begin_drain()
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self._drain_task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        answering_s = self.grace_s - min(_STOPPING_S, self.grace_s / 4)
        deadline = time.monotonic() + answering_s
        final_s = min(_FINAL_ANSWERS_S, self.grace_s / 4)
        if not await self.lifecycle.wait_idle(answering_s - final_s):
            logger.warning(
                "grace period over with %d request(s) in flight; answering 503 to those queued",
                self.lifecycle.inflight,
            )
            if self.reconciler is not None:
                self.reconciler.abort()
            await self.lifecycle.wait_idle(max(0.0, deadline - time.monotonic()))
        self.config.timeout_graceful_shutdown = max(0.1, deadline - time.monotonic())  # type: ignore[assignment]
        self.should_exit = True


def _serve_app(
    settings: Settings,
    sockets: list[socket.socket] | None = None,
    supervisor_pid: int | None = None,
) -> int:
    from service.app import create_app
    from service.models.reconciler import Reconciler

    server: GracefulServer | None = None

    def build_reconciler(settings: Settings, metrics: Metrics) -> Reconciler:
        reconciler = Reconciler(settings, metrics)
        assert server is not None
        server.reconciler = reconciler
        return reconciler

    app = create_app(settings, reconciler_factory=build_reconciler, supervisor_pid=supervisor_pid)
    state: AppState = getattr(app.state, STATE_KEY)
    server = GracefulServer(
        uvicorn_config(settings, app), state.lifecycle, settings.shutdown_grace_s
    )
    server.run(sockets=sockets)
    return 0 if server.started else STARTUP_FAILURE


def _worker_main(sock: socket.socket, supervisor_pid: int) -> None:
    """Entry point of a worker process: its own settings (from the environment) and app."""
    raise SystemExit(_serve_app(Settings(), [sock], supervisor_pid))


def worker_sockets(config: uvicorn.Config, workers: int) -> list[socket.socket]:
    """One listening socket per worker, bound to the same address with ``SO_REUSEPORT``, so
    that the kernel spreads new connections over the workers (by a hash of each connection's
    addresses).

    On one shared socket, the worker whose event loop wakes first accepts every connection then
    waiting (asyncio accepts up to the backlog per wake-up): a client opening 16 keep-alive
    connections at once had them split 14 / 2 or 11 / 5 between two workers, leaving one core
    mostly idle for as long as they lasted. The supervisor keeps every socket open, so a
    restarted worker takes over its predecessor's socket and the connections waiting on it.

    The address is first bound without ``SO_REUSEPORT`` (and released): a port another server
    already listens on is refused as with one socket, never silently shared. Elsewhere than on
    Linux (whose kernel balances ``SO_REUSEPORT`` sockets; BSD kernels give one socket every
    connection), for a Unix socket or an inherited descriptor, all share one socket.
    """
    reuse_port = getattr(socket, "SO_REUSEPORT", None)
    shared = not sys.platform.startswith("linux") or config.uds is not None or config.fd is not None
    if workers < 2 or reuse_port is None or shared:
        return [config.bind_socket()] * workers
    probe = config.bind_socket()  # binds (exits naming the error if taken) and logs the address
    host, port = probe.getsockname()[:2]
    sockets: list[socket.socket] = []
    try:
        for _ in range(workers):
            sock = socket.socket(probe.family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, reuse_port, 1)
            if not sockets[1:]:
                probe.close()  # the port is ours: hand it to the sockets that share it
            sock.bind((host, port))
            sock.set_inheritable(True)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        logger.error("cannot bind %s:%s for %d workers: %s", host, port, workers, exc)
        raise SystemExit(STARTUP_FAILURE) from None
    return sockets


class _Supervisor:
    """Starts ``workers`` processes, each on its listening socket (:func:`worker_sockets`), and
    stops them on a signal."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.context = multiprocessing.get_context("spawn")
        self.stop = threading.Event()
        self.processes: list[multiprocessing.process.BaseProcess] = []

    def _start_worker(self, sock: socket.socket) -> multiprocessing.process.BaseProcess:
        process = self.context.Process(
            target=_worker_main, args=(sock, os.getpid()), name="recserve-worker"
        )
        process.start()
        return process

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        logger.info("received %s: stopping workers", signal.Signals(sig).name)
        self.stop.set()
        for process in self.processes:
            if process.pid is not None and process.exitcode is None:
                os.kill(process.pid, signal.SIGTERM)

    def run(self) -> int:
        config = uvicorn_config(self.settings, "service.app:app_from_env")
        sockets = worker_sockets(config, self.settings.workers)
        # Listen now: connections made while the workers start and load their models wait in the
        # backlog until a worker accepts them, instead of being refused.
        for sock in dict.fromkeys(sockets):
            sock.listen(config.backlog)
        multiprocessing.allow_connection_pickling()
        os.environ.update(settings_to_env(self.settings))
        metrics_dir = multiprocess_metrics.create_shared_dir()  # before any worker starts
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.processes = [self._start_worker(sock) for sock in sockets]
            while not self.stop.wait(_SUPERVISOR_TICK_S):
                for index, process in enumerate(self.processes):
                    if process.exitcode is None:
                        continue
                    if process.exitcode == STARTUP_FAILURE:
                        logger.error("a worker failed to start; stopping")
                        self._on_signal(signal.SIGTERM, None)
                        break
                    logger.warning(
                        "worker %s exited (%s); restarting", process.pid, process.exitcode
                    )
                    if process.pid is not None:
                        multiprocess_metrics.worker_exited(metrics_dir, process.pid)
                    self.processes[index] = self._start_worker(sockets[index])
            return self._join()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for sock in dict.fromkeys(sockets):
                sock.close()
            multiprocess_metrics.remove_shared_dir(metrics_dir)

    def _join(self) -> int:
        deadline = time.monotonic() + self.settings.shutdown_grace_s + 10.0
        status = 0
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                logger.error("worker %s did not stop in time; killing it", process.pid)
                process.kill()
                process.join()
            if process.exitcode != 0:
                status = process.exitcode if process.exitcode == STARTUP_FAILURE else 1
        return status


def serve(settings: Settings) -> int:
    """Serve until a signal; the process exit status (0 after a graceful shutdown).

    A model repository that cannot be read at start ends it at once with one line and status 2:
    it is a mistake in the flags, which a server reporting ready with no models would hide. One
    that becomes unreadable later leaves the loaded models serving (service.models.reconciler).
    """
    problem = read_problem(settings.model_repository)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return BAD_REPOSITORY
    logging.config.dictConfig(log_config(settings))  # uvicorn applies it again, unchanged
    logger.info("%s", settings.workers_reason)
    if settings.workers > 1:
        return _Supervisor(settings).run()
    return _serve_app(settings)
