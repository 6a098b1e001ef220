"""Log lines about an event carry its media id and source offset, in text or JSON.

A stage or runner marks the event it is working on with :func:`event` (a context manager) or
:func:`set_event` (inside an asyncio task, whose context is its own); :class:`EventFilter` copies
the marks onto every log record made meanwhile, as ``media_id`` and ``source``
(``topic/partition@offset``). :func:`configure` installs the handler for a process: text lines end
in ``[media=... src=...]`` when an event is marked; ``json`` writes one JSON object per line with
``media_id``, ``topic``, ``partition`` and ``offset`` as fields, for log pipelines.
"""

from __future__ import annotations

import contextvars
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

_EVENT: contextvars.ContextVar[EventMark | None] = contextvars.ContextVar("mediavec_event", default=None)


@dataclass(frozen=True)
class EventMark:
    media_id: str
    topic: str = ""
    partition: int = -1
    offset: int = -1

    @property
    def source(self) -> str:
        return f"{self.topic}/{self.partition}@{self.offset}" if self.topic else ""


@contextmanager
def event(media_id: str, topic: str = "", partition: int = -1, offset: int = -1) -> Iterator[EventMark]:
    """Mark the event being handled for every log line inside the block."""
    mark = EventMark(media_id, topic, partition, offset)
    token = _EVENT.set(mark)
    try:
        yield mark
    finally:
        _EVENT.reset(token)


def set_event(media_id: str, topic: str = "", partition: int = -1, offset: int = -1) -> None:
    """Mark the event for the rest of the current context (an asyncio task has its own)."""
    _EVENT.set(EventMark(media_id, topic, partition, offset))


def current() -> EventMark | None:
    return _EVENT.get()


class EventFilter(logging.Filter):
    """Adds ``media_id`` and ``source`` (empty when no event is marked) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        mark = _EVENT.get()
        record.media_id = mark.media_id if mark is not None else ""
        record.source = mark.source if mark is not None else ""
        record.event_mark = mark
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        media, source = getattr(record, "media_id", ""), getattr(record, "source", "")
        if not (media or source):
            return line
        head, sep, rest = line.partition("\n")  # a traceback stays below the tagged first line
        return f"{head} [media={media or '-'} src={source or '-'}]{sep}{rest}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        mark = getattr(record, "event_mark", None)
        if isinstance(mark, EventMark):
            doc["media_id"] = mark.media_id
            if mark.topic:
                doc.update(topic=mark.topic, partition=mark.partition, offset=mark.offset)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def configure(level: int, fmt: str = "text") -> None:
    """The process's root handler: stderr, event marks on every line, text or JSON."""
    handler = logging.StreamHandler()
    handler.addFilter(EventFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
