"""Publish media requests from a file: one URL per line, JSONL, or CSV with a ``url`` column."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from schemas import MediaRequest, encode_request
from streams.kafka import producer
from streams.settings import Settings
from streams.topics import topics

logger = logging.getLogger(__name__)


def media_id_for(url: str) -> str:
    """Stable id for a URL that came without one: the same URL always maps to the same media."""
    return "url-" + hashlib.sha256(url.encode()).hexdigest()[:24]


def read_requests(path: Path, *, collection: str, run_id: str, kind: str = "image") -> Iterator[MediaRequest]:
    """Requests from ``path``: plain URLs, JSON lines (url, media_id, metadata, ...), or CSV."""
    text = path.read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        return
    if lines[0].lstrip().startswith("{"):
        rows: Iterable[dict[str, Any]] = (json.loads(ln) for ln in lines)
    elif "," in lines[0] and "url" in [c.strip() for c in lines[0].split(",")]:
        rows = csv.DictReader(io.StringIO("\n".join(lines)))
    else:
        rows = ({"url": ln.strip()} for ln in lines)
    for row in rows:
        yield _request(dict(row), collection=collection, run_id=run_id, kind=kind)


def _request(row: dict[str, Any], *, collection: str, run_id: str, kind: str) -> MediaRequest:
    url = str(row.pop("url")).strip()
    known = {"media_id", "collection", "kind", "start_s", "end_s", "sample_fps", "options", "reprocess"}
    fields = {k: row.pop(k) for k in list(row) if k in known and row[k] not in (None, "")}
    metadata = {str(k): str(v) for k, v in (row.pop("metadata", None) or {}).items()}
    metadata.update({str(k): str(v) for k, v in row.items() if v not in (None, "")})
    return MediaRequest(
        media_id=str(fields.pop("media_id", media_id_for(url))),
        url=url,
        kind=fields.pop("kind", kind),
        collection=fields.pop("collection", collection),
        metadata=metadata,
        run_id=run_id,
        published_at=time.time(),
        **fields,
    )


def new_run_id() -> str:
    return time.strftime("run-%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def publish(
    settings: Settings, requests: Iterable[MediaRequest], *, total: int | None = None, show_progress: bool = True
) -> int:
    """Publish requests keyed by media id; returns how many the broker acknowledged."""
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
        raise RuntimeError(f"{left + len(failed)} requests not acknowledged: {failed[:3]}")
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
