"""The search service's aiohttp application: :func:`make_app` and the handlers of the endpoint table.

The application keeps one :class:`~mediavec.query_models.QueryModels` (each model loaded on first
use, then kept) and runs every search in a worker thread, so the event loop keeps answering
health checks and metrics while a model embeds. Searches run one at a time: the models are not
made for concurrent calls, and an embedded store opened twice by one process would be read
through itself (:mod:`stores.vectorstore.shared`).

Stores are opened read-only for each search, as ``mediavec search`` opens them: while a sink owns
an embedded store, the search reads through the sink's process.
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web
from PIL import Image
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mediavec import __version__
from mediavec.appserver import AppServer
from mediavec.cli_errors import mask, one_line, secret_values
from mediavec.query_models import QueryModels
from mediavec.search import layout, search, store_choice
from mediavec.service.api import (
    COLLECTION_PATTERN,
    ENDPOINTS,
    HitOut,
    ImageSearch,
    Layout,
    SearchOptions,
    SearchResult,
    SpaceRow,
    Status,
    TextSearch,
)
from mediavec.service.middleware import ApiError, cors, limit_size, observe, require_key
from mediavec.service.openapi import openapi_document
from mediavec.settings import Settings
from schemas.limits import COLLECTION_RE
from stores.vectorstore import Hit, open_store

__all__ = ["SearchService", "ServiceServer", "make_app"]

logger = logging.getLogger(__name__)
T = TypeVar("T")


class SearchService:
    """What the handlers share: the settings, the query models and the lock searches take turns on."""

    def __init__(self, settings: Settings, models: QueryModels) -> None:
        self.settings = settings
        self.models = models
        self.secrets = secret_values(settings)
        self.openapi = openapi_document(__version__, settings.serve.api_key is not None)
        self._turn = threading.Lock()

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` in a worker thread, one at a time."""
        return await asyncio.to_thread(self._locked, fn, *args)

    def _locked(self, fn: Callable[..., T], *args: object) -> T:
        with self._turn:
            return fn(*args)

    def search(self, options: SearchOptions, text: str | None, jpeg: bytes | None) -> list[Hit]:
        """The merged hits up to one past the page (so the page knows whether another follows)."""
        if jpeg is None:
            return self._search(options, text=text)
        with Image.open(io.BytesIO(jpeg)) as image:  # decode_image already bounded and re-encoded it
            return self._search(options, image=image)

    def _search(
        self, options: SearchOptions, *, text: str | None = None, image: Image.Image | None = None
    ) -> list[Hit]:
        return search(
            self.settings,
            text=text,
            image=image,
            collection=options.collection,
            limit=options.offset + options.limit + 1,
            space=options.space,
            models=self.models,
            stores=store_choice(self.settings, options.store),
            per_space=options.per_space,
        )

    def ready(self) -> None:
        """Raise unless the vector store opens read-only and lists its collections."""
        with open_store(self.settings, readonly=True) as store:
            store.collections()


SERVICE = web.AppKey("service", SearchService)


def _service(request: web.Request) -> SearchService:
    return request.app[SERVICE]


def _page(hits: list[Hit], options: SearchOptions) -> web.Response:
    end = options.offset + options.limit
    page = SearchResult(
        hits=[HitOut.of(h) for h in hits[options.offset : end]],
        offset=options.offset,
        limit=options.limit,
        next_offset=end if len(hits) > end else None,
    )
    return web.json_response(page.model_dump(mode="json"))


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response(Status(status="alive").model_dump())


async def readyz(request: web.Request) -> web.Response:
    service = _service(request)
    try:
        await service.run(service.ready)
    except Exception as exc:  # whatever keeps the store from answering, the service is not ready
        why = mask(one_line(str(exc)) or type(exc).__name__, service.secrets)
        logger.warning("not ready: %s", why)
        raise ApiError(503, f"vector store not ready: {why}") from None
    return web.json_response(Status(status="ready").model_dump())


async def metrics(_request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(_service(request).openapi)


async def search_text(request: web.Request) -> web.Response:
    options = TextSearch.model_validate_json(await request.read())
    service = _service(request)
    return _page(await service.run(service.search, options, options.text, None), options)


async def search_image(request: web.Request) -> web.Response:
    from media.decode import decode_image

    if len(set(request.query.keys())) != len(request.query):
        raise ApiError(400, "a query parameter is given more than once")
    options = ImageSearch.model_validate(dict(request.query))
    data = await _image_bytes(request)
    service = _service(request)
    decoded = await asyncio.to_thread(decode_image, data, service.settings.fetch)  # the fetch stage's limits
    return _page(await service.run(service.search, options, None, decoded.jpeg), options)


async def _image_bytes(request: web.Request) -> bytes:
    """The raw body, or the file field ``image`` of a multipart form."""
    if request.content_type != "multipart/form-data":
        return await request.read()
    try:
        form = await request.post()
    except web.HTTPException:
        raise
    except Exception as exc:  # aiohttp's multipart parser raises several types on a stranger's bytes
        raise ApiError(400, f"unreadable multipart body: {one_line(str(exc), 200) or type(exc).__name__}") from None
    field = form.get("image")
    if not isinstance(field, web.FileField):
        raise ApiError(400, "the multipart form needs a file field named image")
    return field.file.read()


async def spaces(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if not COLLECTION_RE.fullmatch(name):
        raise ApiError(400, f"name: collection names match {COLLECTION_PATTERN}")
    service = _service(request)
    rows = await service.run(layout, service.settings, name)
    if not rows:
        raise ApiError(404, f"no collection stored for {name!r}")
    found = Layout(collection=name, spaces=[SpaceRow(**r.__dict__) for r in rows])
    return web.json_response(found.model_dump(mode="json"))


HANDLERS: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = {
    "healthz": healthz,
    "readyz": readyz,
    "metrics": metrics,
    "openapi": openapi,
    "search_text": search_text,
    "search_image": search_image,
    "spaces": spaces,
}


def make_app(settings: Settings, models: QueryModels | None = None) -> web.Application:
    """The search API over the stores the settings name; ``models``: query models to share (default: new ones)."""
    serve = settings.serve
    service = SearchService(settings, models or QueryModels(settings))
    public = frozenset(e.path for e in ENDPOINTS if e.public)
    middlewares = [observe(service.secrets), require_key(serve, public), limit_size(serve.max_request_bytes)]
    if serve.cors_origins:
        middlewares.insert(0, cors(serve.cors_origins))
    app = web.Application(client_max_size=serve.max_request_bytes, middlewares=middlewares)
    app[SERVICE] = service
    for e in ENDPOINTS:
        app.router.add_route(e.method, e.path, HANDLERS[e.name], name=e.name)
    return app


class ServiceServer(AppServer):
    """The search API in a loop thread of this process (tests, the dev stack's demo)."""

    def __init__(self, settings: Settings, models: QueryModels | None = None, port: int = 0) -> None:
        super().__init__(settings.serve.host, port)
        self.settings = settings
        self.models = models

    def _app(self) -> web.Application:
        return make_app(self.settings, self.models)
