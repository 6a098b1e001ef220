"""A small aiohttp server in its own loop thread: the base of the local servers tests and the dev stack run.

:class:`AppServer` serves an aiohttp application from a :class:`streams.loopthread.LoopThread`, over http or https,
on a loopback port (0 picks a free one). :class:`devstack.mediaserver.MediaServer` and the dev
stack's OIDC token endpoint (:mod:`devstack.oidc`) are built on it.
"""

from __future__ import annotations

import ssl
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Any, ClassVar, Self

from aiohttp import web

from streams.loopthread import LoopThread

__all__ = ["AppServer"]


class AppServer(ABC):
    """An aiohttp application on ``host:port`` (port 0 picks a free one), served from a loop thread.

    Subclasses build the application in :meth:`_app`; ``with`` starts and stops it.
    """

    runner_args: ClassVar[dict[str, Any]] = {}  # the request handler's options (aiohttp's parser limits)

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
        self._thread = LoopThread(f"{type(self).__name__.lower()}-{self.host}").start()
        self._runner = web.AppRunner(self._app(), handler_cancellation=True, shutdown_timeout=0.5, **self.runner_args)
        self.port = self._thread.run(self._listen(self._runner), timeout=30)
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
            self._thread.run(self._runner.cleanup(), timeout=30)
        self._thread.stop()
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
