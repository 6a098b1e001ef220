"""The fetch stage's transform: media requests in, one JPEG frame per image out.

The runner calls :meth:`FetchStage.process` from its own (synchronous) thread. Downloads run on a
persistent asyncio loop in a dedicated thread, so the HTTP session and its connection pool live
across batches; decoding runs in a thread pool (Pillow releases the GIL while it decodes,
resizes and encodes). Downloads and decodes of one batch overlap.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
from collections import Counter
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from yarl import URL

from consumers.fetch.decode import DecodedImage, DecodeError, decode_image
from consumers.fetch.dedup import MemoryTable, SeenTable, claim, seen_before_download
from consumers.fetch.download import Downloader, FetchError, redact_url
from schemas.codec import SchemaError, decode_request, encode_frame
from schemas.models import Frame, MediaRequest
from streams import metrics
from streams.settings import Settings
from streams.stage import Failure, InputRecord, OutputRecord, Result, RetryBatch, TopicKey

logger = logging.getLogger(__name__)
T = TypeVar("T")


class _LoopThread:
    """An asyncio loop running forever in a daemon thread; coroutines are submitted to it."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self.loop.is_running() and not self.loop.is_closed()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        if self.alive:
            self.run(_cancel_others())
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive() and not self.loop.is_closed():
            self.loop.close()


async def _cancel_others() -> None:
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _public_url(url: str) -> str:
    """The request URL without userinfo: credentials never travel into frames and stores."""
    try:
        return str(URL(url).with_user(None))
    except (ValueError, TypeError):
        return url


class FetchStage:
    """Download and decode image requests into frames (video requests come in a later issue)."""

    name = "fetch"
    input_topic: TopicKey = "requests"

    def __init__(self, settings: Settings, seen: SeenTable | None = None) -> None:
        self.settings = settings
        self.seen: SeenTable = seen if seen is not None else MemoryTable()
        self.outcomes: Counter[str] = Counter()  # "ok" or an error class -> count
        self._runner: _LoopThread | None = None
        self._downloader: Downloader | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._bytes_reported = 0
        self._uncommitted: list[tuple[str, dict[str, Any] | None]] = []  # seen-table writes of the open batch

    @property
    def bytes_downloaded(self) -> int:
        return self._downloader.bytes_downloaded if self._downloader is not None else 0

    def start(self) -> None:
        self.seen.start()
        fetch = self.settings.fetch
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=fetch.decode_workers, thread_name_prefix="fetch-decode"
        )
        self._runner = _LoopThread("fetch-loop")
        self._runner.start()
        self._downloader = Downloader(fetch)
        self._runner.run(self._downloader.start())
        logger.info("fetch stage started: concurrency %d, %d decode workers", fetch.concurrency, fetch.decode_workers)

    def process(self, batch: Sequence[InputRecord]) -> list[Result]:
        runner = self._runner
        if runner is None:
            raise RuntimeError("FetchStage.start() was not called")
        if not runner.alive:
            raise RetryBatch("fetch event loop is not running")
        try:
            results = runner.run(self._process_all(batch))
        except (RuntimeError, concurrent.futures.CancelledError) as exc:
            raise RetryBatch(f"fetch event loop failed: {exc}") from exc
        for result in results:
            self.outcomes[result.error_class if isinstance(result, Failure) else "ok"] += 1
        downloaded = self.bytes_downloaded
        metrics.BYTES_DOWNLOADED.inc(downloaded - self._bytes_reported)
        self._bytes_reported = downloaded
        return results

    def committed(self) -> None:
        """The runner committed the last batch: its seen-table writes are now in the changelog."""
        self._uncommitted.clear()

    def aborted(self) -> None:
        """The runner aborted the last batch: take its seen-table writes back (it will be redone)."""
        for key, previous in reversed(self._uncommitted):
            self.seen.restore_local(key, previous)
        self._uncommitted.clear()

    def close(self) -> None:
        if self._runner is not None:
            if self._downloader is not None and self._runner.alive:
                self._runner.run(self._downloader.close())
            self._runner.stop()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        self._runner = self._downloader = self._executor = None
        self.seen.close()

    async def _process_all(self, batch: Sequence[InputRecord]) -> list[Result]:
        fetched = await asyncio.gather(*(self._process_one(record) for record in batch))
        return [self._claim(item) for item in fetched]  # in input order: duplicates resolve deterministically

    def _claim(self, item: Failure | tuple[MediaRequest, DecodedImage]) -> Result:
        if isinstance(item, Failure):
            return item
        req, image = item
        seen = claim(self.seen, req, image.content_sha256, self._uncommitted)
        if isinstance(seen, Failure):
            return seen
        frame = OutputRecord(topic="frames", key=req.media_id.encode(), value=encode_frame(_frame(req, image)))
        return [frame, *seen]

    async def _process_one(self, record: InputRecord) -> Failure | tuple[MediaRequest, DecodedImage]:
        try:
            req = decode_request(record.value)
        except SchemaError as exc:
            key = record.key.decode("utf-8", errors="replace") if record.key else ""
            return Failure("invalid_request", str(exc), media_id=key)
        if req.kind != "image":
            return Failure("unsupported_kind", f"kind {req.kind!r} is not supported yet", media_id=req.media_id)
        duplicate = seen_before_download(self.seen, req)
        if duplicate is not None:
            return duplicate
        try:
            image = await self._fetch_and_decode(req)
        except (FetchError, DecodeError) as exc:
            return Failure(exc.error_class, exc.reason, media_id=req.media_id, details={"url": redact_url(req.url)})
        except Exception as exc:  # a bug must not take the batch down; the DLQ keeps the input
            logger.exception("fetch of %s failed unexpectedly", req.media_id)
            reason = f"unexpected {type(exc).__name__}"
            return Failure("fetch_internal_error", reason, media_id=req.media_id, details={"url": redact_url(req.url)})
        return req, image

    async def _fetch_and_decode(self, req: MediaRequest) -> DecodedImage:
        if self._downloader is None or self._executor is None:
            raise RuntimeError("FetchStage.start() was not called")
        download = await self._downloader.fetch(req.url)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, decode_image, download.data, self.settings.fetch)


def _frame(req: MediaRequest, image: DecodedImage) -> Frame:
    return Frame(
        media_id=req.media_id,
        frame_index=0,
        timestamp_s=0.0,
        source_url=_public_url(req.url),
        collection=req.collection,
        width=image.width,
        height=image.height,
        jpeg=image.jpeg,
        content_sha256=image.content_sha256,
        options_json=json.dumps(req.options, sort_keys=True, separators=(",", ":")),
        metadata=dict(req.metadata),
        run_id=req.run_id,
        published_at=req.published_at,
        frames_in_media=1,
    )
