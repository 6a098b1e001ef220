"""Media-level idempotency: the same URL or the same content, in one collection, is processed once.

Keys live in a table the fetch stage reads and extends: ``<collection>|url|<sha256 of URL>`` and
``<collection>|sha256|<content hash>``, each mapping to the media id that was processed. The
segments of one video share URL and media id, so a video request's URL key hashes the segment
too (``<url>#t=<start>,<end>@<fps>``) and it has no content key. New keys
leave the stage as ordinary outputs to the ``seen`` topic, inside the same transaction as the
frames, so the table changes exactly when the frames commit (see streams.table.GlobalTable). A
request with ``reprocess: true`` is processed whatever the table says. A duplicate is not a
failure, and not dropped silently either: it leaves as an ordinary output to the ``skipped`` topic
(a record in the dead letter's schema, error class ``duplicate_media``, naming the media it
repeats in its reason and in ``details["duplicate_of"]``), in the same transaction as the frames.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from consumers.registry import FETCH
from consumers.settings import ConsumerSettings
from media.download import redact_url
from schemas.models import Header, MediaRequest
from streams.kvtable import LocalTable, remove_orphans
from streams.stage import Failure, InputRecord, OutputRecord, dead_letter

DUPLICATE = "duplicate_media"  # the error class of a skipped record, as `mediavec dlq list --skipped` shows it


class SeenTable(Protocol):
    headers: tuple[Header, ...]  # to put on the records of its changelog

    def start(self) -> None: ...

    def close(self) -> None: ...

    def get(self, key: str) -> dict[str, Any] | None: ...

    def get_many(self, keys: list[str]) -> list[dict[str, Any] | None]: ...

    def put_many_local(self, items: list[tuple[str, dict[str, Any]]]) -> None: ...

    def restore_local(self, key: str, previous: dict[str, Any] | None) -> None: ...


MemoryTable = LocalTable  # the table of one process, with no changelog (single worker, unit tests)


def table_file(settings: ConsumerSettings) -> Path | None:
    """A new file for a worker's table (None: keep it in memory); files no worker holds are removed first."""
    f = settings.fetch
    if f.seen_table == "memory":
        return None
    folder = f.seen_table_dir or settings.data_dir / FETCH.name  # the stage's own folder
    remove_orphans(folder, "seen-*.sqlite")
    return folder / f"seen-{os.getpid()}-{secrets.token_hex(4)}.sqlite"  # the pid is for a person reading the folder


def url_key(req: MediaRequest) -> str:
    """The key of the URL (image) or of the URL's segment (video)."""
    ident = req.url if req.kind == "image" else f"{req.url}#{segment_text(req)}"
    return f"{req.collection}|url|{hashlib.sha256(ident.encode()).hexdigest()}"


def segment_text(req: MediaRequest) -> str:
    """``t=<start>,<end>@<fps>``: start 0 when unset; an unset end or rate stays empty (the defaults)."""
    return f"t={_num(req.start_s or 0.0)},{_num(req.end_s)}@{_num(req.sample_fps)}"


def _num(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def content_key(collection: str, content_sha256: str) -> str:
    return f"{collection}|sha256|{content_sha256}"


@dataclass(frozen=True)
class Duplicate:
    """A request for media already processed in its collection: skipped, never a failure."""

    req: MediaRequest
    earlier: str  # the media id it repeats
    what: str  # "the same URL", "the same content"

    @property
    def reason(self) -> str:
        return (
            f"{self.what} was already processed as media {self.earlier!r} in collection {self.req.collection!r}; "
            "publish with reprocess=true to process it again"
        )

    def skipped(self, record: InputRecord, stage: str) -> list[OutputRecord]:
        """The stage's output for it: one record on the skipped topic, with the original event."""
        details = {"duplicate_of": self.earlier, "url": redact_url(self.req.url)}
        letter = dead_letter(record, stage, Failure(DUPLICATE, self.reason, self.req.media_id, details))
        return [replace(letter, topic="skipped")]


def seen_before_download(table: SeenTable, req: MediaRequest) -> Duplicate | None:
    """A request whose URL was already processed: skip it before spending a download."""
    if req.reprocess:
        return None
    prev = table.get(url_key(req))
    if prev is None:
        return None
    return _duplicate(req, prev, "the same URL")


def claim(
    table: SeenTable,
    req: MediaRequest,
    content_sha256: str | None,
    undo: list[tuple[str, dict[str, Any] | None]],
    *,
    remember: bool = True,
) -> Duplicate | list[OutputRecord]:
    """Record this media as processed, or say which earlier media it duplicates.

    Called in input order for one batch, so two copies inside a batch resolve deterministically.
    Each local write is appended to ``undo`` (key, previous value), so the caller can take the
    writes back if the batch's transaction aborts. ``content_sha256`` None (video) checks the URL
    key alone; ``remember=False`` only checks (a segment cut short is not marked processed, so a
    redrive of its dead letter runs it again).
    """
    keys = {"URL": url_key(req)}
    if content_sha256 is not None:
        keys["content"] = content_key(req.collection, content_sha256)
    # read once, together: the check and the undo both need them
    previous = dict(zip(keys.values(), table.get_many(list(keys.values())), strict=True))
    if not req.reprocess:
        for what, key in keys.items():
            prev = previous[key]
            if prev is not None:
                return _duplicate(req, prev, f"the same {what}")
    if not remember:
        return []
    value = {"media_id": req.media_id, "at": time.time()}
    undo.extend((key, previous[key]) for key in keys.values())
    table.put_many_local([(key, value) for key in keys.values()])
    packed = json.dumps(value, separators=(",", ":")).encode()
    return [OutputRecord("seen", key.encode(), packed, table.headers) for key in keys.values()]


def _duplicate(req: MediaRequest, prev: dict[str, Any], what: str) -> Duplicate:
    return Duplicate(req, str(prev.get("media_id")), what)
