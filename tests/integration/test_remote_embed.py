"""The embed stage through a remote provider: ``mediavec run embed`` with ``MEDIAVEC_MODEL__PROVIDER=remote``,
against the real broker and the stand-in provider on loopback (its vectors come from a local model).

The worker is built by the registry from settings read out of the environment, as the CLI builds
it, and runs in this process (so the stage's Prometheus metrics and log records can be read).
Frames of real photos go onto the frames topic; what comes out is checked on the vectors topic
(read_committed) and the DLQ:

- every stored row is the stand-in model's own vector of exactly the JPEG the stage sent;
- a frame the provider's content policy refuses is one ``provider_refused`` dead letter, whether it
  shares its batch with good frames or arrives alone, and its batch mates are stored;
- an outage pauses the stage instead of filling the DLQ, and every frame lands exactly once after;
- the API key is in no log record, dead letter or provider report.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from prometheus_client import REGISTRY

import schemas
from consumers.embed.provider_report import reports_dir
from consumers.embed.stage import decode_image
from devstack.standin_provider import RANDOM_CLIP, StandinConfig, StandinProvider
from mediavec import workers
from mediavec.settings import Settings
from models.clip import ClipEmbedder
from models.remote.providers import thumbnail_jpeg
from models.summary import parse_summary_label
from schemas.models import DeadLetter, Frame, VectorBatch
from streams.admin import ensure_topics
from streams.kafka import group_id, producer
from streams.topics import topics
from tests.kafkautil import ThreadWorker, group_caught_up, read_topic, wait_for
from tests.unit.test_embed_stage import PHOTOS, cosine, jpeg_of, make_frame

pytestmark = pytest.mark.integration

KEY = "standin-key"
MODEL_ID = "remote/nim/nvidia:nvclip"  # remote/<flavour>/<model, / as :> of the default nvidia/nvclip
WIDTH = 512  # the stand-in's ViT-B-32; remote store_dim unset keeps the provider's width
RED = (255, 0, 0)


def _plain_red(image: Image.Image) -> str | None:
    """The stand-in's content policy: a plain red picture is refused (a JPEG of one stays within a few levels)."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    flat = float(pixels.std(axis=(0, 1)).max()) < 8
    return "a plain red image" if flat and np.allclose(pixels.mean(axis=(0, 1)), RED, atol=12) else None


def _red_frame(media_id: str) -> Frame:
    buf = io.BytesIO()
    Image.new("RGB", (320, 240), RED).save(buf, format="JPEG", quality=90)
    return make_frame(media_id, 0, buf.getvalue())


def _photo_frames(prefix: str, photos: tuple[Path, ...] = PHOTOS) -> list[Frame]:
    return [make_frame(f"{prefix}-{p.stem}", i, jpeg_of(p)) for i, p in enumerate(photos)]


@pytest.fixture(scope="module")
def clip() -> ClipEmbedder:
    """The model behind the stand-in, loaded once; expected vectors come from it too."""
    return ClipEmbedder.load(RANDOM_CLIP)


@pytest.fixture
def standin(clip: ClipEmbedder) -> Iterator[StandinProvider]:
    with StandinProvider(StandinConfig(api_key=KEY, refuse_image=_plain_red), clip) as running:
        yield running


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every log record of the worker, debug ones included (the provider client's reasons are debug)."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.INFO, logger="PIL")  # its chunk-by-chunk debug lines are noise here
    return caplog


def remote_settings(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, url: str, spaces: tuple[str, ...] = ("scene",), **env: str
) -> Settings:
    """The test's settings plus the remote provider's, read from the environment as ``mediavec run`` reads them."""
    wanted = {
        **settings.to_env(),
        "MEDIAVEC_MODEL__PROVIDER": "remote",
        "MEDIAVEC_REMOTE__URL": url,
        "MEDIAVEC_REMOTE__API_KEY": KEY,
        "MEDIAVEC_EMBED__SPACES": json.dumps(list(spaces)),
        "MEDIAVEC_TEXT__OCR": "false",
        **env,
    }
    for name, value in wanted.items():
        monkeypatch.setenv(name, value)
    return Settings()


def publish(settings: Settings, frames: list[Frame]) -> None:
    p = producer(settings)
    for frame in frames:
        p.produce(topics(settings).frames.name, key=frame.media_id.encode(), value=schemas.encode_frame(frame))
    assert p.flush(30) == 0


def vector_batches(settings: Settings) -> list[VectorBatch]:
    return [schemas.decode_vector_batch(m.value) for m in read_topic(settings, topics(settings).vectors.name)]


def dead_letter_values(settings: Settings) -> list[bytes]:
    return [m.value for m in read_topic(settings, topics(settings).dlq.name)]


def scene_rows(settings: Settings) -> Counter[tuple[str, int]]:
    """How many scene rows each frame (media id, frame index) has on the vectors topic."""
    return Counter((r.media_id, r.frame_index) for b in vector_batches(settings) for r in b.rows if r.space == "scene")


def all_stored(settings: Settings, frames: list[Frame]) -> bool:
    seen = scene_rows(settings)
    return all(seen[(f.media_id, f.frame_index)] for f in frames)


def caught_up(settings: Settings) -> bool:
    """The embed group has committed every frame produced so far."""
    return group_caught_up(settings, group_id(settings, "embed"), topics(settings).frames.name)


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name, {"stage": "embed"}) or 0.0


def sent_jpeg(image: Image.Image) -> Image.Image:
    """What the stand-in decodes of an image the stage sends: a 128 px JPEG at quality 70."""
    return Image.open(io.BytesIO(thumbnail_jpeg(image, 128, 70))).convert("RGB")


def report_texts(settings: Settings) -> list[str]:
    return [p.read_text() for p in sorted(reports_dir(settings.data_dir).glob("*.json"))]


def assert_key_nowhere(logs: pytest.LogCaptureFixture, *texts: str | bytes) -> None:
    assert logs.records, "the worker's log records were captured"
    assert KEY not in logs.text
    for text in texts:
        assert KEY.encode() not in (text if isinstance(text, bytes) else text.encode())


def test_stored_vectors_are_the_providers_own_output(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    standin: StandinProvider,
    clip: ClipEmbedder,
    logs: pytest.LogCaptureFixture,
) -> None:
    ensure_topics(settings)
    frames = _photo_frames("photo")
    publish(settings, frames)
    remote = remote_settings(settings, monkeypatch, standin.base_url, ("scene", "object", "text"))
    with ThreadWorker(workers.build("embed", remote, instance="remote-vectors")):
        wait_for(lambda: all_stored(settings, frames), 120, "a scene row of every frame")
        # The worker reports its provider for `mediavec status` while it runs.
        wait_for(lambda: bool(report_texts(remote)), 30, "the provider report file")
        reports = report_texts(remote)
        report = json.loads(reports[0])
        assert report["provider"] == MODEL_ID and report["limit"] >= 1 and report["circuit"] == "closed"
        assert {"in_flight", "requests_per_s", "tokens_per_min", "throttled"} <= set(report)
    assert not report_texts(remote), "the report goes when the worker stops"

    images = {f.media_id: decode_image(f.jpeg) for f in frames}
    kinds: Counter[str] = Counter()
    for batch in vector_batches(settings):
        assert batch.model == MODEL_ID and batch.vectors.shape[1] == WIDTH and batch.vectors.dtype == np.float16
        for row, vector in zip(batch.rows, batch.vectors, strict=True):
            image = images[row.media_id]
            if row.space == "scene":
                want = clip.embed_images([sent_jpeg(image)])[0]
            elif row.space == "object":
                assert row.box is not None
                crop = image.crop(tuple(round(v) for v in row.box))  # type: ignore[arg-type]
                want = clip.embed_images([sent_jpeg(crop)])[0]
            else:
                assert row.space == "text" and row.label
                summary = parse_summary_label(row.label)  # a summary row holds its sentence's vector
                want = clip.embed_texts([summary[1] if summary else row.label])[0]
            assert cosine(vector, want) >= 0.999, (row.media_id, row.space, row.object_index)
            kinds[row.space] += 1
    assert kinds["scene"] == len(frames) and kinds["object"] > 0 and kinds["text"] > 0, kinds
    seen = standin.counters()
    assert seen.unauthorized == 0 and seen.ok > 0
    assert_key_nowhere(logs, *reports)


def test_a_refused_frame_is_one_dead_letter_and_its_batch_mates_are_stored(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, standin: StandinProvider, logs: pytest.LogCaptureFixture
) -> None:
    ensure_topics(settings)
    photos = _photo_frames("mate", PHOTOS[:3])
    red, lone = _red_frame("red-with-mates"), _red_frame("red-alone")
    publish(settings, [*photos[:2], red, photos[2]])  # all in before the worker starts: one batch, as a rule
    remote = remote_settings(settings, monkeypatch, standin.base_url)
    with ThreadWorker(workers.build("embed", remote, instance="remote-refusal")):
        wait_for(lambda: all_stored(settings, photos) and caught_up(settings), 120, "the first batch")
        # A refused frame alone in its batch: every frame of that batch failed, and still it is
        # the frame's refusal, not a fault of the model to retry.
        publish(settings, [lone])
        wait_for(lambda: caught_up(settings), 120, "the lone refused frame")
    raw = dead_letter_values(settings)
    letters = [schemas.decode_dead_letter(v) for v in raw]
    assert sorted(d.media_id for d in letters) == ["red-alone", "red-with-mates"]
    for letter in letters:
        assert letter.stage == "embed" and letter.error_class == "provider_refused", letter
        assert "the embedding provider refused it: HTTP 400" in letter.reason
        assert "refused by the content policy: a plain red image" in letter.reason
        assert letter.original_value == schemas.encode_frame(lone if letter.media_id == "red-alone" else red)
    assert set(scene_rows(settings)) == {(f.media_id, f.frame_index) for f in photos}
    assert all(n == 1 for n in scene_rows(settings).values())
    assert_key_nowhere(logs, *raw, *(_dead_letter_text(d) for d in letters))


def _dead_letter_text(letter: DeadLetter) -> str:
    headers = " ".join(f"{h.key}={h.value!r}" for h in letter.original_headers)
    return f"{letter.reason} {letter.details} {letter.original_key!r} {headers}"


def test_an_outage_pauses_the_stage_and_every_frame_lands_once_after(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, clip: ClipEmbedder, logs: pytest.LogCaptureFixture
) -> None:
    ensure_topics(settings)
    before, during = _photo_frames("before", PHOTOS[:2]), _photo_frames("during", PHOTOS[2:])
    pauses = metric("mediavec_stage_pauses_total")
    first = StandinProvider(StandinConfig(api_key=KEY), clip).start()
    port, reports = first.port, []
    remote = remote_settings(settings, monkeypatch, first.base_url, MEDIAVEC_REMOTE__MAX_RETRIES="1")
    try:
        with ThreadWorker(workers.build("embed", remote, instance="remote-outage")):
            publish(settings, before)
            wait_for(lambda: all_stored(settings, before), 120, "the frames sent before the outage")
            first.stop()  # the provider goes away: connections refused
            publish(settings, during)
            wait_for(lambda: metric("mediavec_stage_paused") == 1, 60, "the stage to pause")
            wait_for(lambda: _circuit(remote) in ("open", "half_open"), 30, "the report to show the open circuit")
            reports = report_texts(remote)
            assert metric("mediavec_stage_pauses_total") > pauses
            assert not dead_letter_values(settings), "an outage is no frame's fault"
            assert not any(key[0].startswith("during") for key in scene_rows(settings))
            # back on the same address (the worker's URL); the port was free a moment ago
            with StandinProvider(StandinConfig(api_key=KEY), clip, port=port) as back:
                wait_for(lambda: all_stored(settings, during), 120, "the frames sent during the outage")
                assert back.counters().ok > 0
            assert metric("mediavec_stage_paused") == 0
    finally:
        first.stop()
    assert scene_rows(settings) == Counter({(f.media_id, f.frame_index): 1 for f in [*before, *during]})
    assert not dead_letter_values(settings)
    assert "pausing consumption until the service is back" in logs.text
    assert_key_nowhere(logs, *reports)


def _circuit(settings: Settings) -> str | None:
    texts = report_texts(settings)
    return json.loads(texts[0]).get("circuit") if texts else None


def test_a_refused_key_pauses_the_stage_with_paced_probes_and_a_fixed_key_resumes(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, standin: StandinProvider, logs: pytest.LogCaptureFixture
) -> None:
    ensure_topics(settings)
    frames = _photo_frames("key", PHOTOS[:2])
    publish(settings, frames)
    wrong = "not-the-key-" + "x" * 20
    remote = remote_settings(settings, monkeypatch, standin.base_url, MEDIAVEC_REMOTE__API_KEY=wrong)
    with ThreadWorker(workers.build("embed", remote, instance="remote-key")):
        wait_for(lambda: metric("mediavec_stage_paused") == 1, 60, "the stage to pause")
        start, refused = time.monotonic(), standin.counters().unauthorized
        wait_for(lambda: standin.counters().unauthorized >= refused + 3, 60, "three probes")
        probes, elapsed = standin.counters().unauthorized - refused, time.monotonic() - start
        # 1 s, 2 s, 4 s apart: a probe refused at once does not make the next one come sooner
        assert probes <= 2 + elapsed, (probes, elapsed)
        assert not dead_letter_values(settings) and not scene_rows(settings)
    assert "the provider refused the API key" in logs.text
    remote = remote_settings(settings, monkeypatch, standin.base_url)  # the right key: the same frames land
    with ThreadWorker(workers.build("embed", remote, instance="remote-key")):
        wait_for(lambda: all_stored(settings, frames), 120, "the frames once the key is right")
    assert not dead_letter_values(settings)
    assert wrong not in logs.text
    assert_key_nowhere(logs)
