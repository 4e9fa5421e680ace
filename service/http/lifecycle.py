"""The app's serving state across a graceful shutdown: draining flag and in-flight request count.

On SIGTERM the server calls :meth:`Lifecycle.begin_drain`: readiness turns false at once and new
inference requests are refused with 503; the server then waits for :meth:`wait_idle` before it
stops listening, so no accepted request is dropped.
"""

from __future__ import annotations

import asyncio
import logging

logger = logging.getLogger(__name__)


class Lifecycle:
    def __init__(self) -> None:
        self._draining = False
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def inflight(self) -> int:
        return self._inflight

    def begin_drain(self) -> None:
        if not self._draining:
            self._draining = True
            logger.info("draining: readiness is false, %d request(s) in flight", self._inflight)

    def request_started(self) -> None:
        self._inflight += 1
        self._idle.clear()

    def request_finished(self) -> None:
        self._inflight -= 1
        if self._inflight == 0:
            self._idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no request is in flight; False if ``timeout_s`` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True
