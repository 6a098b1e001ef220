"""Real footage through fetch -> embed (every space) -> the three sinks, as separate worker processes.

- vtest.avi (a street with pedestrians), 12 s re-encoded to H.264 and published as 5 s video
  segments at 1 fps: every segment yields exactly the frames its sampling implies, and the
  segments tile the clip; pedestrians become object vectors whose boxes lie inside the frame;
- a quiet clip (a still, empty scene) yields far fewer vectors per frame than the busy street;
- face-api's group photos as images: a query with one person's face (cut out and enlarged, so
  not the stored pixels) finds the photo with that person ahead of the others;
- a frame with rendered text is found by a text query for that text (OCR -> text space);
- every store (Qdrant, the encrypted index, PostgreSQL) holds each published point once, per frame
  with its timestamp and space, one scene row and one thumbnail per frame in PostgreSQL, and every
  video frame's scene vector is the vision model's own output for that frame (footage_stores.py).

CLIP-family weights are random (none exist offline); the detector, faces and OCR are real.
"""

from __future__ import annotations

import shutil
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from consumers.embed.settings import EmbedSettings
from devstack.mediaserver import MediaServer
from devstack.testmedia import face_api_photos, static_clip, transcode, vtest_avi
from media.video_sampling import count_targets
from mediavec.localworkers import LocalWorkers
from mediavec.publish import publish
from mediavec.search import search
from mediavec.settings import Settings
from models.settings import ConceptSettings
from schemas import MediaRequest, decode_frame, decode_vector_batch
from schemas.spaces import ALL_SPACES
from stores.encindex.keys import generate_key, write_key_file
from streams.admin import ensure_topics
from streams.topics import topics
from tests.e2e import footage_stores
from tests.kafkautil import read_topic

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

CLIP_S, SEGMENT_S, FPS = 12.0, 5.0, 1.0
SIGN = "MEDIAVEC"
REPO = Path(__file__).resolve().parents[2]


def _sign(path: Path) -> Path:
    image = Image.new("RGB", (720, 240), "white")
    ImageDraw.Draw(image).text((60, 80), SIGN, fill="black", font=ImageFont.load_default(size=56))
    image.save(path, quality=95)
    return path


def _face_query(photo: Path, tmp_path: Path) -> tuple[Path, tuple[float, float, float, float]]:
    """The largest face of ``photo``, cut out with its head and enlarged 1.4x: a new image of that person."""
    from models.faces import FaceEmbedder

    image = Image.open(photo).convert("RGB")
    face = max(FaceEmbedder.load().faces(image), key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
    x1, y1, x2, y2 = (int(v) for v in face.box)
    pad = (x2 - x1) // 2
    crop = image.crop((x1 - pad, y1 - pad, x2 + pad, y2 + pad))
    crop = crop.resize((int(crop.width * 1.4), int(crop.height * 1.4)), Image.Resampling.BICUBIC)
    query = tmp_path / "query-face.jpg"
    crop.save(query, quality=92)
    return query, face.box


def _requests(clips: dict[str, Path], server: MediaServer, images: list[str]) -> list[MediaRequest]:
    reqs = []
    for name, clip in clips.items():
        for k in range(int(np.ceil(CLIP_S / SEGMENT_S))):
            start, end = k * SEGMENT_S, min((k + 1) * SEGMENT_S, CLIP_S)
            reqs.append(
                MediaRequest(
                    media_id=name,
                    url=clip.resolve().as_uri(),
                    kind="video",
                    collection="footage",
                    start_s=start,
                    end_s=end,
                    sample_fps=FPS,
                    run_id="footage",
                    published_at=time.time(),
                )
            )
    for n in images:
        reqs.append(MediaRequest(media_id=Path(n).stem, url=server.url(n), collection="footage", run_id="footage"))
    return reqs


def test_footage_segments_objects_faces_text_and_quiet_vs_busy(settings: Settings, tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    busy = transcode(
        vtest_avi(REPO / ".mediavec" / "testmedia"),
        media / "street.mp4",
        "h264",
        gop=10,
        start_s=10.0,
        duration_s=CLIP_S,
    )
    quiet = static_clip(media / "still.mp4", seconds=CLIP_S)
    photos = face_api_photos(REPO / ".mediavec" / "testmedia")
    for p in photos:
        shutil.copy(p, media / p.name)
    _sign(media / "sign.jpg")
    images = [p.name for p in photos] + ["sign.jpg"]
    key_file = tmp_path / "index.key"  # the encrypted index's key
    write_key_file(key_file, generate_key())
    settings = settings.model_copy(
        update={
            "encindex": settings.encindex.model_copy(update={"key_file": key_file}),
            "embed": EmbedSettings(spaces=ALL_SPACES, frames_per_batch=8),
            "concept": ConceptSettings(allow_random_weights=True),
            "fetch": settings.fetch.model_copy(update={"allow_paths": (str(media),), "max_side": 640}),
        }
    )
    ensure_topics(settings)
    sinks = ["sink-qdrant", "sink-postgres", "sink-encrypted"]
    workers = LocalWorkers(settings, tmp_path / "logs", "footage").start(["fetch", "embed", *sinks])
    try:
        with MediaServer(media) as server:
            publish(settings, _requests({"street": busy, "still": quiet}, server, images), show_progress=False)
            footage_stores.wait_all_stages(settings)
    finally:
        workers.stop()

    assert not read_topic(settings, topics(settings).dlq.name), "no dead letters expected"
    frames = {
        (f.media_id, f.frame_index): f
        for f in map(decode_frame, (m.value for m in read_topic(settings, topics(settings).frames.name)))
    }
    rows = defaultdict(list)
    batches = [decode_vector_batch(m.value) for m in read_topic(settings, topics(settings).vectors.name)]
    for batch in batches:
        for row in batch.rows:
            rows[row.media_id, row.frame_index].append((batch.model, row))

    # Every store, per frame: ids, timestamps, spaces, vectors; PostgreSQL one scene row per frame.
    points = footage_stores.published(batches)
    footage_stores.assert_qdrant(settings, points)
    footage_stores.assert_encrypted(settings, points)
    footage_stores.assert_postgres(settings, points, frames)
    assert footage_stores.assert_scene_is_the_models_output(settings, points, frames, {"street", "still"}) == 2 * 12

    # Segments: exactly the frames the sampling implies, tiling the clip on one grid.
    for name in ("street", "still"):
        indices = sorted(i for m, i in frames if m == name)
        assert indices == list(range(count_targets(0.0, CLIP_S, FPS)))
        for k in range(3):
            start, end = k * SEGMENT_S, min((k + 1) * SEGMENT_S, CLIP_S)
            in_segment = [f for (m, _), f in frames.items() if m == name and start <= f.timestamp_s < end]
            assert len(in_segment) == count_targets(start, end, FPS)

    # Pedestrians: object vectors with boxes inside their frame.
    objects = [(key, r) for key, rs in rows.items() if key[0] == "street" for _, r in rs if r.space == "object"]
    assert len(objects) >= 12 and {r.label for _, r in objects} == {"person"}
    for key, r in objects:
        assert r.box is not None
        x1, y1, x2, y2 = r.box
        assert 0 <= x1 < x2 <= frames[key].width and 0 <= y1 < y2 <= frames[key].height

    # Quiet vs busy: the still yields little beyond its scene and grid vectors (18), the street many
    # more. The shipped person detector does see a faint "person" in the coffee still now and then
    # (an object row, its label and the frame's summary "A person.": 21 at most).
    def per_frame(name: str, space: str | None = None) -> float:
        counts = [sum(1 for _, r in rs if space in (None, r.space)) for (m, _), rs in rows.items() if m == name]
        return float(np.mean(counts))

    assert 18 <= per_frame("still") <= 21 and per_frame("street") > per_frame("still") + 3
    assert per_frame("street", "object") >= 3 * max(per_frame("still", "object"), 1.0)

    # Faces and OCR, searched in the stores through the same models.
    query, _ = _face_query(photos[0], tmp_path)
    hits = search(settings, image=query, collection="footage", space="face", limit=5)
    assert hits and hits[0].payload["media_id"] == photos[0].stem
    assert hits[0].score > max((h.score for h in hits if h.payload["media_id"] != photos[0].stem), default=0.0)
    hits = search(settings, text=SIGN, collection="footage", space="text", limit=3)
    assert hits[0].payload["media_id"] == "sign" and hits[0].payload["label"] == SIGN
