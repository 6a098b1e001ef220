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
from typing import TYPE_CHECKING, TypeVar

import psycopg
from aiohttp import web
from PIL import Image
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mediavec import __version__
from mediavec.appserver import AppServer
from mediavec.cli_errors import mask, one_line, secret_values
from mediavec.query_models import QueryModels
from mediavec.search import default_stores, layout, search, store_choice
from mediavec.service.api import (
    COLLECTION_PATTERN,
    ENDPOINTS,
    CollectionRow,
    Collections,
    FilteredSearch,
    HitOut,
    ImageSearch,
    Layout,
    SearchOptions,
    SearchResult,
    SimilarSearch,
    SpaceRow,
    Status,
    TextSearch,
    ThumbnailQuery,
    UrlSearch,
)
from mediavec.service.middleware import ApiError, cors, limit_size, observe, require_key
from mediavec.service.openapi import openapi_document
from mediavec.service.page import PAGE_PATHS, add_page_routes
from mediavec.settings import Settings
from mediavec.similar import similar
from schemas.limits import COLLECTION_RE
from stores.vectorstore import Hit, open_store

if TYPE_CHECKING:
    from stores.metadb import Thumbnail

__all__ = ["SearchService", "ServiceServer", "make_app"]

logger = logging.getLogger(__name__)
T = TypeVar("T")
Searched = FilteredSearch | ImageSearch  # the options of a query a model embeds
_NOT_A_URL = frozenset({"bad_url", "bad_scheme"})
# aiohttp's HTTP parser answers a longer request line or header itself, in plain text, before any
# middleware: room for every query string the document allows (a 2000-character label of 4-byte
# characters is 24 KB percent-encoded).
MAX_LINE_BYTES = 64 * 1024
RUNNER_ARGS = {"max_line_size": MAX_LINE_BYTES, "max_field_size": MAX_LINE_BYTES}


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

    def search(self, options: Searched, text: str | None, jpeg: bytes | None) -> list[Hit]:
        """The merged hits up to one past the page (so the page knows whether another follows)."""
        if jpeg is None:
            return self._search(options, text=text)
        with Image.open(io.BytesIO(jpeg)) as image:  # decode_image already bounded and re-encoded it
            return self._search(options, image=image)

    def _search(self, options: Searched, *, text: str | None = None, image: Image.Image | None = None) -> list[Hit]:
        return search(
            self.settings,
            text=text,
            image=image,
            collection=options.collection,
            limit=options.offset + options.limit + 1,
            space=options.space,
            models=self.models,
            stores=self._stores(options),
            per_space=options.per_space,
            where=options.where(),
        )

    def _stores(self, options: SearchOptions) -> tuple[str, ...]:
        """The stores a query reads; the encrypted index of a service without its key is the asker's error."""
        stores = store_choice(self.settings, options.store)
        if "encrypted" in stores and "encrypted" not in default_stores(self.settings):
            raise ApiError(400, f"store {options.store}: this service has no encrypted index key configured")
        return stores

    def similar(self, options: SimilarSearch) -> list[Hit]:
        return similar(
            self.settings,
            options.id,
            collection=options.collection,
            space=options.space,
            limit=options.offset + options.limit + 1,
            stores=self._stores(options),
            per_space=options.per_space,
            where=options.where(),
        )

    def thumbnail(self, query: ThumbnailQuery) -> Thumbnail | None:
        from stores.metadb import connect, read_thumbnail

        with connect(self.settings, application_name="mediavec-serve") as conn:
            return read_thumbnail(conn, query.media_id, query.frame_index)

    def collections(self) -> list[CollectionRow]:
        """Every request collection in the vector store (points over its models), then every alias."""
        from mediavec.aliases import alias_book

        points: dict[str, int] = {}
        with open_store(self.settings, readonly=True) as store:
            for name in store.collections():
                base = name.rsplit("__", 1)[0] if "__" in name else name
                points[base] = points.get(base, 0) + store.count(name)
            rows = [CollectionRow(name=base, points=n) for base, n in sorted(points.items())]
            for alias, target in sorted(alias_book(self.settings).all().items()):
                n = store.count(target) if store.dim(target) is not None else 0
                rows.append(CollectionRow(name=alias, points=n, alias_of=target))
        return rows

    def ready(self) -> None:
        """Raise unless the vector store opens read-only and lists its collections."""
        with open_store(self.settings, readonly=True) as store:
            store.collections()


SERVICE = web.AppKey("service", SearchService)


def _service(request: web.Request) -> SearchService:
    return request.app[SERVICE]


def _page(request: web.Request, hits: list[Hit], options: SearchOptions) -> web.Response:
    end = options.offset + options.limit
    thumbnails = _service(request).settings.serve.thumbnails
    page = SearchResult(
        hits=[HitOut.of(h, thumbnails) for h in hits[options.offset : end]],
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
    return _page(request, await service.run(service.search, options, options.text, None), options)


async def search_image(request: web.Request) -> web.Response:
    from media.decode import decode_image

    if len(set(request.query.keys())) != len(request.query):
        raise ApiError(400, "a query parameter is given more than once")
    options = ImageSearch.model_validate(dict(request.query))
    data = await _image_bytes(request)
    service = _service(request)
    decoded = await asyncio.to_thread(decode_image, data, service.settings.fetch)  # the fetch stage's limits
    return _page(request, await service.run(service.search, options, None, decoded.jpeg), options)


async def search_url(request: web.Request) -> web.Response:
    from media.decode import decode_image
    from media.download import Downloader, FetchError, redact_url

    options = UrlSearch.model_validate_json(await request.read())
    service = _service(request)
    try:
        async with Downloader(service.settings.fetch) as downloader:
            got = await downloader.fetch(options.url)
    except FetchError as exc:
        status = 400 if exc.error_class in _NOT_A_URL else 422  # malformed: the asker's; unfetchable: the URL's
        raise ApiError(status, f"could not fetch {redact_url(options.url)}: {exc.error_class}: {exc.reason}") from None
    decoded = await asyncio.to_thread(decode_image, got.data, service.settings.fetch)
    return _page(request, await service.run(service.search, options, None, decoded.jpeg), options)


async def search_similar(request: web.Request) -> web.Response:
    options = SimilarSearch.model_validate_json(await request.read())
    service = _service(request)
    return _page(request, await service.run(service.similar, options), options)


async def thumbnail(request: web.Request) -> web.Response:
    if len(set(request.query.keys())) != len(request.query):
        raise ApiError(400, "a query parameter is given more than once")
    query = ThumbnailQuery.model_validate(dict(request.query))
    service = _service(request)
    if not service.settings.serve.thumbnails:
        raise ApiError(404, "this service keeps no thumbnails (serve.thumbnails is off)")
    try:
        found = await asyncio.to_thread(service.thumbnail, query)
    except psycopg.Error as exc:
        why = mask(one_line(str(exc)) or type(exc).__name__, service.secrets)
        raise ApiError(503, f"thumbnails unavailable: {why}") from None
    if found is None:
        raise ApiError(404, f"no thumbnail for frame {query.frame_index} of {query.media_id[:200]!r}")
    headers = {"Cache-Control": "private, max-age=3600", "X-Frame-Width": str(found.width)}
    headers["X-Frame-Height"] = str(found.height)
    return web.Response(body=found.jpeg, content_type="image/jpeg", headers=headers)


async def collections(request: web.Request) -> web.Response:
    service = _service(request)
    rows = await service.run(service.collections)
    return web.json_response(Collections(collections=rows).model_dump(mode="json"))


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
    "search_url": search_url,
    "search_similar": search_similar,
    "thumbnail": thumbnail,
    "collections": collections,
    "spaces": spaces,
}


def make_app(settings: Settings, models: QueryModels | None = None) -> web.Application:
    """The search API over the stores the settings name; ``models``: query models to share (default: new ones)."""
    serve = settings.serve
    service = SearchService(settings, models or QueryModels(settings))
    public = frozenset(e.path for e in ENDPOINTS if e.public) | frozenset(PAGE_PATHS)
    middlewares = [observe(service.secrets), require_key(serve, public), limit_size(serve.max_request_bytes)]
    if serve.cors_origins:
        middlewares.insert(0, cors(serve.cors_origins))
    app = web.Application(client_max_size=serve.max_request_bytes, middlewares=middlewares)
    app[SERVICE] = service
    for e in ENDPOINTS:
        app.router.add_route(e.method, e.path, HANDLERS[e.name], name=e.name)
    add_page_routes(app)
    if models is None:  # its own query models: a remote provider's session closes with the app

        async def close_models(_: web.Application) -> None:
            service.models.close()

        app.on_cleanup.append(close_models)
    return app


class ServiceServer(AppServer):
    """The search API in a loop thread of this process (tests, the dev stack's demo)."""

    def __init__(self, settings: Settings, models: QueryModels | None = None, port: int = 0) -> None:
        super().__init__(settings.serve.host, port)
        self.settings = settings
        self.models = models

    runner_args = RUNNER_ARGS

    def _app(self) -> web.Application:
        return make_app(self.settings, self.models)
