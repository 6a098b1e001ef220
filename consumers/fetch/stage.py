"""The fetch stage's transform: media requests in, one JPEG frame per image (or per sample of a
video segment) out.

The fetch worker's runner (:class:`streams.pipelined.PipelinedRunner`) calls :meth:`FetchStage.submit`
for each request as it is polled and :meth:`FetchStage.finish` for the finished ones it is about to
commit, so a slow download never holds the others; :meth:`FetchStage.process` does both for a whole
batch. Downloads run on a persistent asyncio loop in a dedicated thread, so the HTTP session and
its connection pool live on; decoding runs in a thread pool (Pillow and FFmpeg release the GIL
while they decode, resize and encode), or with ``fetch.decode_processes`` set, images decode in
child processes (:class:`media.decode_pool.DecodePool`), where a decoder crash takes one image.
Dedup claims happen in ``finish``, in commit order. Video requests take the path of
:mod:`consumers.fetch.video_fetch`: a segment's frames are one result, so the runner commits them
in one transaction. ``file://`` URLs are read only under ``fetch.allow_paths``.

An image's decode is chained to its download without a trip back through the loop: the
download's future hands the bytes to the decode pool, and the decode thread sets the future the
runner waits on. (Awaiting the decode on the loop woke the loop once more per image, and the
loop thread is the one every download waits for.)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from consumers.fetch.dedup import DUPLICATE, Duplicate, MemoryTable, SeenTable, claim, seen_before_download
from consumers.fetch.video_fetch import VideoFetched, VideoFetcher
from consumers.registry import FETCH
from consumers.settings import ConsumerSettings
from media.decode import DecodedImage, DecodeError, decode_image
from media.decode_pool import DecodePool
from media.download import Downloader, FetchError, public_url, redact_url
from media.video_source import is_file_url, read_local
from schemas.codec import SchemaError, decode_request, encode_frame
from schemas.models import Frame, MediaRequest
from streams import metrics
from streams.logctx import set_event
from streams.loopthread import LoopThread
from streams.stage import Failure, InputRecord, OutputRecord, Result, RetryBatch, TopicKey, dead_letter

logger = logging.getLogger(__name__)
T = TypeVar("T")


_Fetched = Failure | Duplicate | tuple[MediaRequest, DecodedImage] | tuple[InputRecord, VideoFetched]


class FetchStage:
    """Download and decode image requests and video segments into frames."""

    name = FETCH.name
    input_topic: TopicKey = FETCH.input

    def __init__(self, settings: ConsumerSettings, seen: SeenTable | None = None) -> None:
        self.settings = settings
        self.seen: SeenTable = seen if seen is not None else MemoryTable()
        self.outcomes: Counter[str] = Counter()  # "ok" or an error class -> count
        self._runner: LoopThread | None = None
        self._downloader: Downloader | None = None
        self._video: VideoFetcher | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._decoders: DecodePool | None = None  # fetch.decode_processes > 0: decode in child processes
        self._bytes_reported = 0
        self._uncommitted: list[tuple[str, dict[str, Any] | None]] = []  # seen-table writes of the open batch
        self._dlq_causes: list[str] = []  # dead letters inside results of the open batch (cut segments)

    @property
    def bytes_downloaded(self) -> int:
        return self._downloader.bytes_downloaded if self._downloader is not None else 0

    def start(self) -> None:
        self.seen.start()
        fetch = self.settings.fetch
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=fetch.decode_workers, thread_name_prefix="fetch-decode"
        )
        if fetch.decode_processes > 0:
            self._decoders = DecodePool(fetch, fetch.decode_processes)
        self._runner = LoopThread("fetch-loop")
        self._runner.start()
        self._downloader = Downloader(fetch)
        self._runner.run(self._downloader.start())
        self._video = VideoFetcher(fetch, self._downloader, self._executor)
        decoding = (
            f"{fetch.decode_processes} decode processes" if self._decoders else f"{fetch.decode_workers} decode threads"
        )
        logger.info("fetch stage started: concurrency %d, %s", fetch.concurrency, decoding)

    def process(self, batch: Sequence[InputRecord]) -> list[Result]:
        """The whole batch at once (the batch runner's contract): submit each, wait, finish."""
        if self._runner is None:
            raise RuntimeError("FetchStage.start() was not called")
        futures = [self.submit(record) for record in batch]
        try:
            fetched = [f.result() for f in futures]
        except (RuntimeError, concurrent.futures.CancelledError) as exc:
            raise RetryBatch(f"fetch event loop failed: {exc}") from exc
        return self.finish(list(zip(batch, fetched, strict=True)))

    def submit(self, record: InputRecord) -> concurrent.futures.Future[_Fetched]:
        """Start downloading and decoding one request on the stage's event loop."""
        runner = self._runner
        if runner is None:
            raise RuntimeError("FetchStage.start() was not called")
        if not runner.alive:
            raise RetryBatch("fetch event loop is not running")
        done: concurrent.futures.Future[_Fetched] = concurrent.futures.Future()
        runner.submit(self._process_one(record)).add_done_callback(lambda got: self._then_decode(got, done))
        return done

    def _then_decode(
        self, got: concurrent.futures.Future[_Fetched | _Downloaded], done: concurrent.futures.Future[_Fetched]
    ) -> None:
        """Where ``got`` finished (the loop thread): downloaded bytes go to the decode pool, the rest on to ``done``."""
        if got.cancelled():
            done.cancel()
            return
        exc = got.exception()
        if exc is not None:
            done.set_exception(exc)
            return
        item = got.result()
        if not isinstance(item, _Downloaded):
            done.set_result(item)
            return
        try:
            if self._executor is None:
                raise RuntimeError("FetchStage.close() was called")
            if self._decoders is not None:
                req = item.req
                self._decoders.submit(item.data).add_done_callback(lambda d: _from_child(req, d, done))
                return
            decoding = self._executor.submit(self._decode, item)
        except RuntimeError as err:  # the pool is shut down: the stage is closing
            done.set_exception(err)
            return
        decoding.add_done_callback(lambda d: _pass_on(d, done))

    def _decode(self, item: _Downloaded) -> _Fetched:
        req = item.req
        try:
            return req, decode_image(item.data, self.settings.fetch)
        except DecodeError as exc:
            return Failure(exc.error_class, exc.reason, media_id=req.media_id, details={"url": redact_url(req.url)})
        except Exception as exc:  # a bug must not take the batch down; the DLQ keeps the input
            return _internal_error(req, exc)

    def finish(self, done: Sequence[tuple[InputRecord, _Fetched]]) -> list[Result]:
        """Results for fetched requests, claimed in the order given: duplicates resolve deterministically."""
        self._dlq_causes.clear()
        results = [self._claim(record, item) for record, item in done]
        for result in results:
            self.outcomes[_outcome(result)] += 1
        downloaded = self.bytes_downloaded
        metrics.BYTES_DOWNLOADED.inc(downloaded - self._bytes_reported)
        self._bytes_reported = downloaded
        return results

    def committed(self) -> None:
        """The runner committed the last batch: its seen-table writes are now in the changelog."""
        self._uncommitted.clear()
        for cause in self._dlq_causes:  # the runner counts Failures; these dead letters ride in lists
            metrics.DLQ.labels(self.name, cause).inc()
        self._dlq_causes.clear()

    def aborted(self) -> None:
        """The runner aborted the last batch: take its seen-table writes back (it will be redone)."""
        for key, previous in reversed(self._uncommitted):
            self.seen.restore_local(key, previous)
        self._uncommitted.clear()
        self._dlq_causes.clear()

    def close(self) -> None:
        if self._runner is not None:
            if self._downloader is not None and self._runner.alive:
                self._runner.run(self._downloader.close())
            self._runner.stop()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        if self._decoders is not None:
            self._decoders.close()
        self._runner = self._downloader = self._executor = self._video = self._decoders = None
        self.seen.close()

    def _claim(self, record: InputRecord, item: _Fetched) -> Result:
        if isinstance(item, Failure):
            return item
        if isinstance(item, Duplicate):  # known before the download
            return item.skipped(record, self.name)
        if isinstance(item[1], VideoFetched):
            return self._claim_video(item[0], item[1])
        req, image = item
        seen = claim(self.seen, req, image.content_sha256, self._uncommitted)
        if isinstance(seen, Duplicate):
            return seen.skipped(record, self.name)
        frame = OutputRecord(topic="frames", key=req.media_id.encode(), value=encode_frame(_frame(req, image)))
        return [frame, *seen]

    def _claim_video(self, record: InputRecord, video: VideoFetched) -> Result:
        """The segment's frames and seen key; a segment cut short carries its dead letter instead."""
        seen = claim(self.seen, video.req, None, self._uncommitted, remember=video.failure is None)
        if isinstance(seen, Duplicate):
            return seen.skipped(record, self.name)
        if video.failure is None:
            return [*video.frames, *seen]
        self._dlq_causes.append(video.failure.error_class)
        self.outcomes[f"partial_{video.failure.error_class}"] += 1
        return [*video.frames, dead_letter(record, self.name, video.failure)]

    async def _process_one(self, record: InputRecord) -> _Fetched | _Downloaded:
        # This task's log lines (downloads, guard decisions, errors) name the event they are about.
        key = record.key.decode("utf-8", errors="replace") if record.key else ""
        set_event(key, record.topic, record.partition, record.offset)
        try:
            req = decode_request(record.value)
        except SchemaError as exc:
            return Failure("invalid_request", str(exc), media_id=key)
        set_event(req.media_id, record.topic, record.partition, record.offset)
        duplicate = seen_before_download(self.seen, req)
        if duplicate is not None:
            return duplicate
        if req.kind == "video":
            return await self._fetch_video(record, req)
        try:
            return _Downloaded(req, await self._download(req))
        except FetchError as exc:
            return Failure(exc.error_class, exc.reason, media_id=req.media_id, details={"url": redact_url(req.url)})
        except Exception as exc:  # a bug must not take the batch down; the DLQ keeps the input
            return _internal_error(req, exc)

    async def _fetch_video(self, record: InputRecord, req: MediaRequest) -> _Fetched:
        if self._video is None:
            raise RuntimeError("FetchStage.start() was not called")
        try:
            video = await self._video.fetch(req)
        except Exception as exc:  # a bug must not take the batch down; the DLQ keeps the input
            return _internal_error(req, exc)
        return video if isinstance(video, Failure) else (record, video)

    async def _download(self, req: MediaRequest) -> bytes:
        if self._downloader is None or self._executor is None:
            raise RuntimeError("FetchStage.start() was not called")
        fetch = self.settings.fetch
        if is_file_url(req.url):
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, read_local, req.url, fetch.allow_paths, fetch.max_bytes)
        return (await self._downloader.fetch(req.url)).data


@dataclass(frozen=True)
class _Downloaded:
    """An image's bytes, on their way from the loop to the decode pool."""

    req: MediaRequest
    data: bytes


def _from_child(
    req: MediaRequest, decoding: concurrent.futures.Future[DecodedImage], done: concurrent.futures.Future[_Fetched]
) -> None:
    """A decode pool's answer as the thread pool's: a frame, a dead letter, or cancelled."""
    if decoding.cancelled():  # the pool was closed with it queued
        done.cancel()
        return
    exc = decoding.exception()
    if isinstance(exc, DecodeError):
        done.set_result(
            Failure(exc.error_class, exc.reason, media_id=req.media_id, details={"url": redact_url(req.url)})
        )
    elif exc is not None:  # a bug must not take the batch down; the DLQ keeps the input
        done.set_result(_internal_error(req, exc))
    else:
        done.set_result((req, decoding.result()))


def _pass_on(source: concurrent.futures.Future[T], target: concurrent.futures.Future[T]) -> None:
    if source.cancelled():  # the pool was shut down with it queued
        target.cancel()
        return
    exc = source.exception()
    if exc is not None:
        target.set_exception(exc)
    else:
        target.set_result(source.result())


def _outcome(result: Result) -> str:
    """What a result counts as: ``ok``, a failure's error class, or ``duplicate_media`` (skipped)."""
    if isinstance(result, Failure):
        return result.error_class
    return DUPLICATE if any(r.topic == "skipped" for r in result) else "ok"


def _internal_error(req: MediaRequest, exc: BaseException) -> Failure:
    logger.error("fetch of %s failed unexpectedly", req.media_id, exc_info=exc)
    reason = f"unexpected {type(exc).__name__}"
    return Failure("fetch_internal_error", reason, media_id=req.media_id, details={"url": redact_url(req.url)})


def _frame(req: MediaRequest, image: DecodedImage) -> Frame:
    return Frame(
        media_id=req.media_id,
        frame_index=0,
        timestamp_s=0.0,
        source_url=public_url(req.url),
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
