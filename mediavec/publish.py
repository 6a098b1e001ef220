"""Publish media requests to the requests topic, keyed by media id.

Reading them from a file (and refusing its bad lines first) is :mod:`mediavec.publish_file`.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

from mediavec.settings import Settings
from schemas import MediaRequest, encode_request
from streams.kafka import producer
from streams.topics import topics

logger = logging.getLogger(__name__)


def media_id_for(url: str) -> str:
    """Stable id for a URL that came without one: the same URL always maps to the same media."""
    return "url-" + hashlib.sha256(url.encode()).hexdigest()[:24]


class PublishError(RuntimeError):
    """Some requests were not acknowledged by the broker (the text says how many, and why)."""


def new_run_id() -> str:
    return time.strftime("run-%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def publish(
    settings: Settings, requests: Iterable[MediaRequest], *, total: int | None = None, show_progress: bool = True
) -> int:
    """Publish requests keyed by media id; returns how many the broker acknowledged (all, or PublishError)."""
    topic = topics(settings).requests.name
    p = producer(settings)
    acked = 0
    failed: list[str] = []
    bar = tqdm(total=total, unit="req", desc="published", disable=not show_progress)

    def on_delivery(err: Any, msg: Any) -> None:
        nonlocal acked
        if err is None:
            acked += 1
            bar.update(1)
        else:
            failed.append(str(err))

    for req in requests:
        produce_request(p, topic, req, on_delivery)
    left = p.flush(60)
    bar.close()
    if left or failed:
        raise PublishError(f"{left + len(failed)} requests not acknowledged by Kafka: {'; '.join(failed[:3])}")
    return acked


def produce_request(p: Any, topic: str, req: MediaRequest, on_delivery: Any = None) -> None:
    """Produce one request keyed by media id, waiting (serving callbacks) while the local queue is full."""
    value = encode_request(req)
    while True:
        try:
            p.produce(topic, key=req.media_id.encode(), value=value, on_delivery=on_delivery)
            break
        except BufferError:
            p.poll(0.05)
    p.poll(0)
