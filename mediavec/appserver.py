"""A small aiohttp server in its own loop thread: the base of the local servers tests and the dev stack run.

:class:`LoopThread` runs an asyncio loop in a daemon thread that the main thread submits
coroutines to; :class:`AppServer` serves an aiohttp application from one, over http or https,
on a loopback port (0 picks a free one). :class:`mediavec.mediaserver.MediaServer` and the dev
stack's OIDC token endpoint (:mod:`mediavec.devstack.oidc`) are built on it.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from abc import ABC, abstractmethod
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar

from aiohttp import web

__all__ = ["AppServer", "LoopThread"]

T = TypeVar("T")


class LoopThread:
    """An asyncio loop in a daemon thread, for servers that tests drive from the main thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()


class AppServer(ABC):
    """An aiohttp application on ``host:port`` (port 0 picks a free one), served from a loop thread.

    Subclasses build the application in :meth:`_app`; ``with`` starts and stops it.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None) -> None:
        self.host = host
        self.port = port
        self.ssl_context = ssl_context  # serve https with it
        self._thread: LoopThread | None = None
        self._runner: web.AppRunner | None = None

    @abstractmethod
    def _app(self) -> web.Application:
        """The application to serve, made at :meth:`start`."""

    def start(self) -> Self:
        self._thread = LoopThread(f"{type(self).__name__.lower()}-{self.host}")
        self._runner = web.AppRunner(self._app(), handler_cancellation=True, shutdown_timeout=0.5)
        self.port = self._thread.run(self._listen(self._runner))
        return self

    async def _listen(self, runner: web.AppRunner) -> int:
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, ssl_context=self.ssl_context)
        await site.start()
        return int(runner.addresses[0][1])

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._runner is not None:
            self._thread.run(self._runner.cleanup())
        self._thread.close()
        self._thread = self._runner = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://{self.host}:{self.port}"
