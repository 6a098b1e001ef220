"""Publishing a run's media requests: at a fixed rate, or as fast as the pipeline takes them.

At a fixed rate, request ``i`` is produced at ``start + i / rate`` (an open loop: a pipeline that
falls behind shows as lag and latency, never as a slower offer). As fast as possible is a closed
loop: a request is produced whenever fewer than ``max_in_flight`` published media are
unfinished, so the run measures the pipeline's capacity rather than the broker's intake.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from loadtest.load.profile import LoadProfile, PlannedMedia, plan_media
from loadtest.load.tracker import LoadTracker
from mediavec.publish import produce_request
from mediavec.settings import Settings
from schemas import MediaRequest
from streams.kafka import producer
from streams.topics import topics

logger = logging.getLogger(__name__)
COLLECTION = "load"


@dataclass(frozen=True)
class MediaSet:
    """The files on the load server: photos (JPEG) and an optional video with its length."""

    base_url: str
    images: list[str]
    video: str | None = None
    video_length_s: float = 0.0


def request_for(planned: PlannedMedia, media: MediaSet, run_id: str) -> MediaRequest:
    return MediaRequest(
        media_id=planned.media_id,
        url=media.base_url + planned.path,
        kind="video" if planned.kind == "video" else "image",
        collection=COLLECTION,
        start_s=planned.start_s,
        end_s=planned.end_s,
        sample_fps=planned.sample_fps,
        run_id=run_id,
        published_at=time.time(),
    )


@dataclass
class Publisher:
    """Publishes in a thread; :attr:`sent` counts the broker's acknowledgements."""

    settings: Settings
    tracker: LoadTracker
    profile: LoadProfile
    media: MediaSet
    run_id: str
    sent: int = 0
    errors: list[str] = field(default_factory=list)
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Publisher:
        self._thread = threading.Thread(target=self._run, name="load-publisher", daemon=True)
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)

    def _run(self) -> None:
        topic = topics(self.settings).requests.name
        p = producer(self.settings)

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is None:
                self.sent += 1
            else:
                self.errors.append(str(err))

        start, base = time.monotonic(), self.tracker.finished
        i = 0
        while self._wait_turn(i, start, base):
            planned = plan_media(
                self.profile, i, self.run_id, self.media.images, self.media.video, self.media.video_length_s
            )
            req = request_for(planned, self.media, self.run_id)
            self.tracker.expect(req.media_id, req.published_at, planned.fate)
            _produce(p, topic, req, on_delivery)
            i += 1
        left = p.flush(60)
        if left:
            self.errors.append(f"{left} requests not acknowledged")
        logger.info("published %d requests in %.1fs", i, time.monotonic() - start)

    def _wait_turn(self, i: int, start: float, base: int) -> bool:
        """Sleep until request ``i`` is due; False when the run's publishing is over."""
        prof = self.profile
        if prof.max_media is not None and i >= prof.max_media:
            return False
        while not self._stop.is_set():
            now = time.monotonic()
            if now - start >= prof.duration_s:
                return False
            if prof.rate is not None:
                due = start + i / prof.rate
                if now >= due:
                    return True
                self._stop.wait(min(due - now, 0.5))
            elif i - (self.tracker.finished - base) < prof.max_in_flight:
                return True
            else:
                self._stop.wait(0.01)
        return False


_produce = produce_request


def publish_planned(
    settings: Settings, planned: list[PlannedMedia], media: MediaSet, run_id: str, tracker: LoadTracker | None = None
) -> None:
    """Publish a fixed list at once (warm-up, the fetch comparison) and wait for the acks."""
    topic = topics(settings).requests.name
    p = producer(settings)
    errors: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    for item in planned:
        req = request_for(item, media, run_id)
        if tracker is not None:
            tracker.expect(req.media_id, req.published_at, item.fate)
        _produce(p, topic, req, on_delivery)
    left = p.flush(60)
    if left or errors:
        raise RuntimeError(f"{left + len(errors)} requests not acknowledged: {errors[:3]}")
