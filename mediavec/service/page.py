"""The search page: a static page, served by the search service itself, that calls the service's API.

``GET /`` is the page and ``GET /page/{file}`` its script and style sheet: plain files in
``mediavec/service/page/`` (no build step, nothing fetched from elsewhere, so it works offline).
Only the files named in :data:`ASSETS` are served, read once when the application is made.

Every answer carries a strict Content-Security-Policy: scripts, styles and requests go to this
origin only, and images may also be ``data:`` and ``blob:`` URLs (thumbnails are fetched with the
API key header and shown as blob URLs; an ``<img src>`` could not send the header). The page
writes whatever the API returns as text, never as markup.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

from mediavec.service.middleware import ApiError

__all__ = ["ASSETS", "CSP", "PAGE_PATHS", "add_page_routes"]

logger = logging.getLogger(__name__)

CSP = "default-src 'self'; img-src 'self' data: blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
ASSETS: dict[str, str] = {  # file -> content type
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
PAGE_PATHS = ("/", "/page/{file}")  # routes that need no API key: the page asks for the key itself
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # small files: a browser revalidates and picks up a new version
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str


def _load() -> dict[str, Asset]:
    folder = resources.files("mediavec.service") / "page"
    return {name: Asset((folder / name).read_bytes(), ctype) for name, ctype in ASSETS.items()}


def _response(asset: Asset) -> web.Response:
    return web.Response(body=asset.body, headers={**_HEADERS, "Content-Type": asset.content_type})


def add_page_routes(app: web.Application) -> None:
    """Serve the page at ``/`` and its assets at ``/page/{file}`` from ``app``."""
    assets = _load()

    async def page(_request: web.Request) -> web.Response:
        return _response(assets["index.html"])

    async def asset(request: web.Request) -> web.Response:
        found = assets.get(request.match_info["file"])
        if found is None:
            raise ApiError(404, f"no such page file: {request.match_info['file'][:64]!r}")
        return _response(found)

    app.router.add_get(PAGE_PATHS[0], page, name="page")
    app.router.add_get(PAGE_PATHS[1], asset, name="page_asset")
