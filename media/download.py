"""Bounded, guarded, retrying HTTP downloads (aiohttp).

Every request goes through the SSRF guard (:mod:`media.guard`): IP-literal hosts are
checked before each hop, host names when the connector resolves them. Redirects are followed by
hand so that every hop is checked and counted. Retries happen only on retriable failures
(connection errors, timeouts, 429, 5xx), with exponential backoff and full jitter, and never past
the download's deadline, which starts once the download holds its concurrency slots.

:meth:`Downloader.fetch_range` reads one byte range (HTTP ``Range``) through the same guard,
retries, deadline and caps; a server that ignores ``Range`` answers 200 with the whole body, which
comes back whole (bounded by ``max_bytes``) for the caller to use instead.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType

import aiohttp
from yarl import URL

from media.guard import AddressRefused, Allow, GuardedResolver, check_url
from media.settings import FetchSettings
from streams.errors import backoff_s

logger = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
Span = tuple[int, int]  # a byte range [start, end)


class FetchError(Exception):
    """A download that failed; ``error_class`` is stable and machine-readable."""

    def __init__(self, error_class: str, reason: str, *, retriable: bool = False) -> None:
        super().__init__(f"{error_class}: {reason}")
        self.error_class = error_class
        self.reason = reason
        self.retriable = retriable


@dataclass(frozen=True)
class Download:
    data: bytes
    final_url: str  # redacted (no userinfo, no query)
    attempts: int  # tries of the whole redirect chain, 1 when the first one succeeded
    status: int
    content_type: str


@dataclass(frozen=True)
class RangePart:
    """The answer to one range request.

    ``whole`` is True when the server ignored ``Range`` and sent the whole body (status 200):
    then ``start`` is 0 and ``total`` is the body's length. Otherwise ``data`` holds the asked
    bytes from ``start`` (fewer at the end of the resource) and ``total`` is the resource's size
    from ``Content-Range`` (None when the server does not say).
    """

    data: bytes
    start: int
    total: int | None
    whole: bool
    etag: str = ""


@dataclass(frozen=True)
class _Body:
    data: bytes
    status: int
    content_type: str
    content_range: str
    etag: str


def redact_url(url: str | URL) -> str:
    """A URL fit for logs and DLQ reasons: no userinfo, no query or fragment (signed URLs)."""
    try:
        parsed = url if isinstance(url, URL) else URL(url)
        clean = parsed.with_user(None).with_query(None).with_fragment(None)
    except (ValueError, TypeError):
        return "(unparseable URL)"
    marker = "?<redacted>" if parsed.raw_query_string else ""
    return f"{clean}{marker}"


def public_url(url: str) -> str:
    """The request URL without userinfo: credentials never travel into frames and stores."""
    try:
        return str(URL(url).with_user(None))
    except (ValueError, TypeError):
        return url


def _exhausted(err: FetchError, attempts: int) -> FetchError:
    """The error reported once retries ran out: 5xx/429 say so, others keep their class."""
    if err.error_class in ("http_5xx", "http_429"):
        return FetchError(f"{err.error_class}_exhausted", f"{err.reason} (after {attempts} attempts)")
    return FetchError(err.error_class, f"{err.reason} (after {attempts} attempts)")


class Downloader:
    """Async HTTP downloader; use ``async with Downloader(settings) as d: await d.fetch(url)``."""

    def __init__(self, settings: FetchSettings, *, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.allow = Allow.of(settings.allow_hosts, settings.allow_cidrs)
        self.bytes_downloaded = 0  # body bytes received, failed downloads included
        self.requests_sent = 0
        self._rng = rng or random.Random()
        self._session: aiohttp.ClientSession | None = None
        self._global: asyncio.Semaphore | None = None
        self._per_host = _HostSlots(settings.per_host_concurrency)

    async def start(self) -> None:
        """Build the session inside the running loop that will use it."""
        s = self.settings
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(self.allow),
            limit=s.concurrency,
            limit_per_host=s.per_host_concurrency,
            ttl_dns_cache=10,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": s.user_agent, "Accept": "image/*,video/*;q=0.9,*/*;q=0.5"},
            cookie_jar=aiohttp.DummyCookieJar(),  # no state carried between unrelated media
            trust_env=False,  # never route through an environment proxy past the guard
        )
        self._global = asyncio.Semaphore(s.concurrency)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Downloader:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def fetch(self, url: str) -> Download:
        """Download ``url``; raises :class:`FetchError` with a stable ``error_class``."""
        body, final, attempts = await self._guarded(_parse(url), None)
        return Download(body.data, redact_url(final), attempts, body.status, body.content_type)

    async def fetch_range(self, url: str, start: int, end: int) -> RangePart:
        """Bytes ``[start, end)`` of ``url`` with one HTTP Range request (every hop guarded).

        A 206 must name the asked start in ``Content-Range``; a 200 (Range ignored) returns the
        whole body, bounded by ``max_bytes``; a 416 raises ``http_416``.
        """
        if not 0 <= start < end:
            raise ValueError(f"need 0 <= start < end, got {start}, {end}")
        body, final, _ = await self._guarded(_parse(url), (start, end))
        if body.status != 206:
            return RangePart(body.data, 0, len(body.data), True, body.etag)
        first, total = _check_content_range(body, start, end, final)
        return RangePart(body.data, first, total, False, body.etag)

    async def _guarded(self, parsed: URL, span: Span | None) -> tuple[_Body, URL, int]:
        first = check_url(parsed, self.allow)
        if not first.allowed:
            raise _refusal(first.category, first.reason, parsed)
        async with self._slots(parsed.raw_host or ""):
            deadline = asyncio.get_running_loop().time() + self.settings.total_deadline_s
            return await self._with_retries(parsed, deadline, span)

    @asynccontextmanager
    async def _slots(self, host: str) -> AsyncIterator[None]:
        # Per-host first, so a crowd waiting for one host does not hold the global slots.
        if self._global is None:
            raise RuntimeError("Downloader.start() was not called")
        async with self._per_host.hold(host.lower()), self._global:
            yield

    async def _with_retries(self, url: URL, deadline: float, span: Span | None) -> tuple[_Body, URL, int]:
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            attempt += 1
            try:
                body, final = await self._follow(url, deadline, span)
                return body, final, attempt
            except FetchError as err:
                if not err.retriable:
                    raise
                if attempt > self.settings.retries:
                    raise _exhausted(err, attempt) from None
                delay = backoff_s(attempt, self.settings.backoff_base_s, self.settings.backoff_max_s, self._rng)
                if loop.time() + delay >= deadline:
                    raise _exhausted(err, attempt) from None
                logger.debug("retry %d of %s in %.2fs: %s", attempt, redact_url(url), delay, err.reason)
                await asyncio.sleep(delay)

    async def _follow(self, url: URL, deadline: float, span: Span | None) -> tuple[_Body, URL]:
        """One try of the redirect chain, every hop checked by the guard."""
        for _hop in range(self.settings.max_redirects + 1):
            decision = check_url(url, self.allow)
            if not decision.allowed:
                raise _refusal(decision.category, decision.reason, url)
            result = await self._request(url, deadline, span)
            if isinstance(result, URL):
                url = result
                continue
            return result, url
        raise FetchError("too_many_redirects", f"more than {self.settings.max_redirects} redirects")

    async def _request(self, url: URL, deadline: float, span: Span | None) -> URL | _Body:
        """One HTTP request: the next URL for a redirect, else (body, status, content type)."""
        if self._session is None:
            raise RuntimeError("Downloader.start() was not called")
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise FetchError("timeout", f"deadline of {self.settings.total_deadline_s}s exceeded")
        timeout = aiohttp.ClientTimeout(
            total=remaining, sock_connect=self.settings.connect_timeout_s, sock_read=self.settings.read_timeout_s
        )
        # identity: a range addresses the stored bytes, never a compressed rendering of them
        headers = {"Range": f"bytes={span[0]}-{span[1] - 1}", "Accept-Encoding": "identity"} if span else None
        self.requests_sent += 1
        try:
            async with self._session.get(url, allow_redirects=False, timeout=timeout, headers=headers) as resp:
                return await self._handle(url, resp, span)
        except AddressRefused as exc:
            raise FetchError("ssrf_refused", f"{redact_url(url)} refused: {exc.decision.reason}") from None
        except TimeoutError:
            raise FetchError("timeout", f"{redact_url(url)} timed out", retriable=True) from None
        except aiohttp.InvalidURL as exc:
            raise FetchError("bad_url", f"invalid URL: {type(exc).__name__}") from None
        except aiohttp.ClientResponseError as exc:
            raise FetchError("bad_response", f"{redact_url(url)}: {exc.message}") from None
        except aiohttp.ClientError as exc:
            kind = type(exc).__name__
            raise FetchError("connection_failed", f"{redact_url(url)}: {kind}", retriable=True) from None

    async def _handle(self, url: URL, resp: aiohttp.ClientResponse, span: Span | None) -> URL | _Body:
        status = resp.status
        if status in REDIRECT_STATUSES:
            location = resp.headers.get("Location")
            if not location:
                raise FetchError(f"http_{status}", f"redirect without Location from {redact_url(url)}")
            return url.join(URL(location))
        if status == 429 or status >= 500:
            cls = "http_429" if status == 429 else "http_5xx"
            raise FetchError(cls, f"HTTP {status} from {redact_url(url)}", retriable=True)
        if not 200 <= status < 300:
            raise FetchError(f"http_{status}", f"HTTP {status} from {redact_url(url)}")
        # A 206 may carry at most the asked bytes; a whole body (Range ignored) at most max_bytes.
        cap = span[1] - span[0] if span and status == 206 else self.settings.max_bytes
        data = await self._read_capped(url, resp, cap)
        if not data:
            raise FetchError("empty_body", f"{redact_url(url)} returned no bytes")
        h = resp.headers
        return _Body(data, status, h.get("Content-Type", ""), h.get("Content-Range", ""), h.get("ETag", ""))

    async def _read_capped(self, url: URL, resp: aiohttp.ClientResponse, cap: int) -> bytes:
        if resp.content_length is not None and resp.content_length > cap:
            raise FetchError("too_large", f"Content-Length {resp.content_length} over the {cap}-byte cap")
        buf = bytearray()
        async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
            self.bytes_downloaded += len(chunk)
            buf += chunk
            if len(buf) > cap:
                raise FetchError("too_large", f"{redact_url(url)} body over the {cap}-byte cap")
        return bytes(buf)


class _HostSlots:
    """One semaphore per host, dropped when nobody holds or waits for it (hosts are unbounded)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._slots: dict[str, tuple[asyncio.Semaphore, int]] = {}

    @asynccontextmanager
    async def hold(self, host: str) -> AsyncIterator[None]:
        sem, users = self._slots.get(host, (asyncio.Semaphore(self._limit), 0))
        self._slots[host] = (sem, users + 1)
        try:
            async with sem:
                yield
        finally:
            sem, users = self._slots[host]
            if users <= 1:
                del self._slots[host]
            else:
                self._slots[host] = (sem, users - 1)

    def __len__(self) -> int:
        return len(self._slots)


def _parse(url: str) -> URL:
    try:
        return URL(url)
    except (ValueError, TypeError) as exc:
        raise FetchError("bad_url", f"unparseable URL ({type(exc).__name__})") from None


def _check_content_range(body: _Body, start: int, end: int, url: URL) -> tuple[int, int | None]:
    """(first byte, total size or None) of a 206, checked against what was asked and received."""
    match = _CONTENT_RANGE.match(body.content_range)
    if match is None:
        raise FetchError("bad_response", f"206 from {redact_url(url)} without a usable Content-Range")
    first, last = int(match.group(1)), int(match.group(2))
    total = None if match.group(3) == "*" else int(match.group(3))
    if first != start or last < first or last >= end or len(body.data) != last - first + 1:
        got = f"{first}-{last} ({len(body.data)} bytes)"
        raise FetchError("bad_response", f"asked bytes {start}-{end - 1} of {redact_url(url)}, got {got}")
    if total is not None and last >= total:
        raise FetchError("bad_response", f"Content-Range of {redact_url(url)} ends past its size {total}")
    return first, total


def _refusal(category: str, reason: str, url: URL) -> FetchError:
    if category in ("bad_scheme", "bad_url"):
        return FetchError(category, reason)
    return FetchError("ssrf_refused", f"{redact_url(url)} refused: {reason}")
