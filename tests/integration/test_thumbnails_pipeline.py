"""A frame's thumbnail end to end: media.frames -> embed -> vectors -> sink-postgres -> read_thumbnail.

The embed and sink-postgres workers run as ``mediavec run <stage>`` builds them, against the real
broker and PostgreSQL; an image and a video frame go in, their thumbnails come out of the database.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image

from consumers.embed.stage import decode_image
from mediavec import workers
from mediavec.settings import Settings
from models.images import thumbnail_size
from schemas import encode_frame
from schemas.models import Frame
from stores.metadb import read_thumbnail
from streams.admin import ensure_topics
from streams.kafka import producer
from streams.topics import topics
from tests.kafkautil import ThreadWorker, wait_for
from tests.pgutil import sql
from tests.unit.test_embed_stage import PHOTOS, jpeg_of, make_frame

pytestmark = pytest.mark.integration


def test_the_thumbnail_of_every_frame_reaches_postgresql(settings: Settings) -> None:
    ensure_topics(settings)
    photo = make_frame("photo", 0, jpeg_of(PHOTOS[3]))
    video_frame = Frame(**{**make_frame("clip", 7, jpeg_of(PHOTOS[4])).__dict__, "timestamp_s": 3.5})
    frames = [photo, video_frame]
    p = producer(settings)
    for frame in frames:
        p.produce(topics(settings).frames.name, key=frame.media_id.encode(), value=encode_frame(frame))
    assert p.flush(30) == 0

    embed = ThreadWorker(workers.build("embed", settings, instance="thumbs-embed"))
    sink = ThreadWorker(workers.build("sink-postgres", settings, instance="thumbs-pg"))
    with embed, sink:
        wait_for(
            lambda: all(read_thumbnail(settings, f.media_id, f.frame_index) for f in frames), 180, "both thumbnails"
        )
    for frame in frames:
        thumb = read_thumbnail(settings, frame.media_id, frame.frame_index)
        assert thumb is not None
        size = decode_image(frame.jpeg).size
        assert (thumb.width, thumb.height) == size
        with Image.open(io.BytesIO(thumb.jpeg)) as image:
            assert image.format == "JPEG" and image.size == thumbnail_size(*size, 128) and max(image.size) == 128
    # One thumbnail per frame, beside the frame's metadata rows.
    assert sql(settings, "SELECT media_id, frame_index FROM frame_thumbnails ORDER BY media_id") == [
        ("clip", 7),
        ("photo", 0),
    ]
    assert sql(settings, "SELECT count(*) FROM frame_metadata WHERE space = 'scene'") == [(2,)]
    # The search service hands them out as hits link to them.
    from mediavec.service.app import ServiceServer
    from tests.unit.test_service import call

    with ServiceServer(settings) as server:
        got = call(server, "GET", "/v1/thumbnail?media_id=clip&frame_index=7")
        assert got.status == 200 and got.headers["Content-Type"] == "image/jpeg"
        stored = read_thumbnail(settings, "clip", 7)
        assert stored is not None and got.body == stored.jpeg
        assert (int(got.headers["X-Frame-Width"]), int(got.headers["X-Frame-Height"])) == (stored.width, stored.height)
        missing = call(server, "GET", "/v1/thumbnail?media_id=clip&frame_index=8")
        assert missing.status == 404 and "no thumbnail for frame 8" in missing.json()["error"]
