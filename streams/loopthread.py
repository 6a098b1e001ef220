"""An asyncio loop running in a daemon thread, driven from synchronous code.

The fetch stage downloads on one (its HTTP session and connection pool live as long as the
worker); the local servers of :mod:`mediavec.appserver` serve from one. Synchronous code submits
coroutines with :meth:`LoopThread.submit` (a future) or :meth:`LoopThread.run` (waits for it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["LoopThread"]
logger = logging.getLogger(__name__)

T = TypeVar("T")


class LoopThread:
    """An asyncio loop in a daemon thread; :meth:`stop` cancels what still runs on it, then closes it."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def name(self) -> str:
        return self._thread.name

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self) -> LoopThread:
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self.loop.is_running() and not self.loop.is_closed()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result (``timeout`` seconds, or for ever)."""
        return self.submit(coro).result(timeout)

    def stop(self, cancel_timeout_s: float = 30.0) -> None:
        """Cancel the loop's tasks (waiting up to ``cancel_timeout_s``), stop the loop, join, close."""
        if self.alive:
            try:
                self.run(_cancel_others(), timeout=cancel_timeout_s)
            except TimeoutError:
                logger.warning("%s: tasks still running %.0f s after cancel", self.name, cancel_timeout_s)
        if self._thread.is_alive() and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=10)
        if not self._thread.is_alive() and not self.loop.is_closed():
            self.loop.close()


async def _cancel_others() -> None:
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
