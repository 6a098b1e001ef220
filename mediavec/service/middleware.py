"""What every request goes through: CORS, metrics, errors as JSON, the API key and the size limit.

An error is always ``{"error": "<one line>"}``: a bad request is a 4xx that says what was wrong, an
unavailable store or model a 503, and only a bug is a 500, with a generic message (its traceback
goes to the log). Messages pass through :func:`mediavec.cli_errors.mask`, so a configured secret
never reaches a response; the API key is compared in constant time and never logged.
"""

from __future__ import annotations

import logging
import secrets
import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import Counter, Histogram
from pydantic import ValidationError

from mediavec.cli_errors import mask, one_line
from mediavec.service.settings import ServeSettings

logger = logging.getLogger(__name__)

REQUESTS = Counter("mediavec_http_requests_total", "HTTP requests answered", ["endpoint", "method", "status"])
LATENCY = Histogram(
    "mediavec_http_request_seconds",
    "Time to answer an HTTP request",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
UNMATCHED = "unmatched"  # the endpoint label of requests no route matched: labels stay a fixed set


class ApiError(Exception):
    """A request the service answers with ``status`` and a one-line reason."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def validation_message(exc: ValidationError) -> str:
    """Each wrong field and why, in one line: ``limit: Input should be less than or equal to 100``."""
    problems = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(part) for part in err["loc"]) or "body"
        reason = "unknown field" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {reason}")
    return one_line("; ".join(problems))


def _expected() -> tuple[tuple[type[BaseException], int], ...]:
    """Expected errors and their status; the first class an error is an instance of wins."""
    from media.decode import DecodeError
    from mediavec.query_models import SearchError
    from models.weights import WeightsNotFound
    from stores.encindex.keys import IndexKeyError
    from stores.vectorstore import FilterError, UnknownCollectionError, VectorStoreError

    return (
        (SearchError, 400),
        (DecodeError, 400),
        (FilterError, 400),
        (UnknownCollectionError, 404),
        (VectorStoreError, 503),  # StoreLockedError among them: the store is busy or unreachable
        (WeightsNotFound, 503),
        (IndexKeyError, 503),  # the encrypted index cannot be read without its key
    )


def status_of(exc: BaseException) -> int | None:
    """The status an expected error is answered with; None for a bug."""
    if isinstance(exc, ApiError):
        return exc.status
    if isinstance(exc, ValidationError):
        return 400
    return next((status for cls, status in _expected() if isinstance(exc, cls)), None)


def observe(secret_values: list[str]) -> Middleware:
    """Count and time every request, and turn every failure into a JSON error."""

    @web.middleware
    async def observe_mw(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        route = request.match_info.route.resource
        endpoint = route.canonical if route is not None else UNMATCHED
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # aiohttp's own: no route (404), wrong method (405), too large (413)
            response = error_response(exc.status, _http_message(request, exc), _kept_headers(exc))
        except Exception as exc:
            response = _failure(request, exc, secret_values)
        REQUESTS.labels(endpoint, request.method, str(response.status)).inc()
        LATENCY.labels(endpoint).observe(time.perf_counter() - started)
        return response

    return observe_mw


def _failure(request: web.Request, exc: Exception, secret_values: list[str]) -> web.Response:
    status = status_of(exc)
    if status is None:
        logger.exception("%s %s failed", request.method, request.path)
        return error_response(500, "internal error (the service's log has the details)")
    told = validation_message(exc) if isinstance(exc, ValidationError) else one_line(str(exc))
    message = mask(told or type(exc).__name__, secret_values)
    logger.log(
        logging.WARNING if status >= 500 else logging.INFO,
        "%s %s: %d %s",
        request.method,
        request.path,
        status,
        message,
    )
    return error_response(status, message, exc.headers if isinstance(exc, ApiError) else None)


def _http_message(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return f"no such endpoint: {request.method} {one_line(request.path, 200)}"
    if exc.status == 405:
        return f"{request.method} is not allowed here: use {exc.headers.get('Allow', 'another method')}"
    if exc.status == 413:
        return "request body too large"
    return one_line(exc.reason or exc.text or "") or f"HTTP {exc.status}"


def _kept_headers(exc: web.HTTPException) -> dict[str, str]:
    return {k: v for k, v in exc.headers.items() if k in ("Allow",)}


def limit_size(max_bytes: int) -> Middleware:
    """Refuse a body over ``max_bytes`` by its declared length, before reading it (a chunked body is
    stopped by the application's ``client_max_size`` as it is read)."""

    @web.middleware
    async def limit_mw(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.content_length is not None and request.content_length > max_bytes:
            raise ApiError(413, f"request body of {request.content_length} bytes is over the limit of {max_bytes}")
        return await handler(request)

    return limit_mw


def require_key(settings: ServeSettings, public: frozenset[str]) -> Middleware:
    """Let a request through when it carries the API key (or needs none); 401 otherwise."""
    key = settings.api_key.get_secret_value().encode() if settings.api_key is not None else None

    @web.middleware
    async def key_mw(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.resource
        if key is None or (route is not None and route.canonical in public) or _carries(request, key):
            return await handler(request)
        raise ApiError(
            401,
            "this service needs an API key: Authorization: Bearer <key>, or X-API-Key: <key>",
            {"WWW-Authenticate": 'Bearer realm="mediavec"'},
        )

    return key_mw


def _carries(request: web.Request, key: bytes) -> bool:
    given = request.headers.get("X-API-Key")
    if given is None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        given = token.strip() if scheme.lower() == "bearer" else None
    # compare_digest needs equal types; surrogates or non-ASCII in a header cannot be the key anyway
    return given is not None and secrets.compare_digest(given.encode("utf-8", "surrogateescape"), key)


CORS_METHODS = "GET, POST, OPTIONS"
CORS_HEADERS = "Authorization, Content-Type, X-API-Key"


def cors(origins: tuple[str, ...]) -> Middleware:
    """Let the listed browser origins call the API (preflights included); others get no CORS headers."""
    allowed = frozenset(origins)

    @web.middleware
    async def cors_mw(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin not in allowed:
            return await handler(request)
        headers = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            preflight = {"Access-Control-Allow-Methods": CORS_METHODS, "Access-Control-Allow-Headers": CORS_HEADERS}
            return web.Response(status=204, headers=headers | preflight | {"Access-Control-Max-Age": "600"})
        response = await handler(request)
        response.headers.update(headers)
        return response

    return cors_mw
