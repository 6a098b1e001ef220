"""Log lines about an event carry its media id and source offset (text and JSON), across asyncio tasks."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from streams import logctx

Captured = tuple[logging.Logger, io.StringIO, "logging.StreamHandler[io.StringIO]"]


@pytest.fixture
def captured() -> Iterator[Captured]:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.addFilter(logctx.EventFilter())
    log = logging.getLogger("test.logctx")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    yield log, buf, handler
    log.removeHandler(handler)


def test_text_lines_name_the_event_and_only_inside_it(captured: Captured) -> None:
    log, buf, handler = captured
    handler.setFormatter(logctx.TextFormatter())
    log.info("before")
    with logctx.event("cam7", "media.requests", 3, 1207):
        log.info("refused: %s", "private address")
    log.info("after")
    before, inside, after = buf.getvalue().splitlines()
    assert "[media=" not in before and "[media=" not in after
    assert inside.endswith("refused: private address [media=cam7 src=media.requests/3@1207]")


def test_json_lines_have_the_fields(captured: Captured) -> None:
    log, buf, handler = captured
    handler.setFormatter(logctx.JsonFormatter())
    with logctx.event("shop-4711", "media.frames", 0, 42):
        log.warning("frame %d undecodable", 7)
    doc = json.loads(buf.getvalue())
    assert doc["message"] == "frame 7 undecodable" and doc["level"] == "WARNING"
    assert (doc["media_id"], doc["topic"], doc["partition"], doc["offset"]) == ("shop-4711", "media.frames", 0, 42)


def test_each_asyncio_task_keeps_its_own_event(captured: Captured) -> None:
    log, buf, handler = captured
    handler.setFormatter(logctx.TextFormatter())

    async def one(media: str, offset: int) -> None:
        logctx.set_event(media, "media.requests", 0, offset)
        await asyncio.sleep(0.01 * (3 - offset))  # interleave the tasks
        log.info("downloaded")

    async def main() -> None:
        await asyncio.gather(*(one(f"m{i}", i) for i in range(3)))

    asyncio.run(main())
    tags = sorted(line.split("[", 1)[1] for line in buf.getvalue().splitlines())
    assert tags == [f"media=m{i} src=media.requests/0@{i}]" for i in range(3)]
    assert logctx.current() is None  # the tasks' marks did not leak into the caller
