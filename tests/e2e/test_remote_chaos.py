"""Exactly-once with a remote embedding provider: SIGKILLs while its calls are in flight.

fetch -> embed -> sink-qdrant and sink-postgres run as worker processes; the embed stage embeds
through the stand-in provider (devstack/standin_provider.py) on loopback, which answers with a
lognormal latency under a requests/s quota (so the stage always has calls out) and refuses a few
planted images by content policy. The embed worker is SIGKILLed again and again, each time while
the stand-in holds its requests in flight, and every other stage at least once; each worker is
restarted with the same instance id, as a supervisor would.

Afterwards Qdrant and PostgreSQL hold exactly the good media, once each, under the remote model's
ids, each scene vector equal (cosine >= 0.9999) to the stand-in model's own output for the JPEG the
stage sends (the 128 px q70 thumbnail of the frame fetch made); the DLQ holds exactly the planted
bad inputs once each, the refused images as ``provider_refused`` from the embed stage; and the API
key is in no worker log, no provider report and no dead letter.
"""

from __future__ import annotations

import io
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import SecretStr

from consumers.embed.stage import decode_image as decode_frame_jpeg
from devstack.mediaserver import Canary, MediaServer
from devstack.samples import sample_images
from devstack.standin_provider import StandinConfig, StandinProvider
from media.decode import decode_image
from mediavec.localworkers import LocalWorkers
from mediavec.progress import RunTracker
from mediavec.publish import new_run_id, publish
from mediavec.settings import Settings
from models.clip import ClipEmbedder
from models.remote.providers import thumbnail_jpeg
from models.remote.settings import RemoteSettings, remote_model_id
from models.settings import ModelSettings
from schemas import MediaRequest, decode_dead_letter
from streams.admin import ensure_topics
from streams.kafka import group_id
from streams.topics import topics
from tests.e2e.chaos import run_with_chaos
from tests.e2e.corpus import Corpus, build_corpus
from tests.e2e.test_chaos import _keep_alive_until
from tests.e2e.test_image_pipeline import _assert_postgres, _publish_invalid, _requests, stored_points
from tests.kafkautil import group_caught_up, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

STAGES = ["fetch", "embed", "sink-qdrant", "sink-postgres"]
SINKS = STAGES[2:]
MIN_KILLS = {"embed": 4, "fetch": 1, "sink-qdrant": 1, "sink-postgres": 1}
N_GOOD, N_REFUSED = 150, 4
MARKER = (255, 0, 255)  # the planted images are this colour; the content policy refuses it
# The provider's model: a random-weight ViT-S-32, twice as fast as ViT-B-32 on a CPU.
STANDIN_MODEL = ModelSettings(arch="ViT-S-32", allow_random_weights=True, device="cpu")


def refuse_marked(image: Image.Image) -> str | None:
    """The stand-in's content policy: a near-uniform image of the marker colour is refused."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    if np.abs(pixels - np.array(MARKER, dtype=np.float32)).mean() < 12:
        return "planted test image"
    return None


@pytest.fixture(scope="module")
def standin_model() -> ClipEmbedder:
    return ClipEmbedder.load(STANDIN_MODEL)


@pytest.fixture
def standin(standin_model: ClipEmbedder) -> Iterator[StandinProvider]:
    config = StandinConfig(
        api_key=f"sk-standin-{secrets.token_hex(16)}",  # unique: a needle no log holds by chance
        requests_per_s=2.0,  # at most 8 images/s: the kills come before the run can end
        latency_median_s=0.1,
        latency_p99_s=0.6,
        refuse_image=refuse_marked,
    )
    with StandinProvider(config, embedder=standin_model) as server:
        yield server


def remote_settings(settings: Settings, standin: StandinProvider) -> Settings:
    """The workers' settings: scene vectors through the stand-in, small requests, DEBUG logs."""
    assert standin.config.api_key is not None
    remote = RemoteSettings(
        url=standin.base_url,
        api_key=SecretStr(standin.config.api_key),
        batch_size=4,
        max_concurrency=8,
        timeout_s=10.0,
    )
    return settings.model_copy(
        update={
            "model": settings.model.model_copy(update={"provider": "remote"}),
            "remote": remote,
            "embed": settings.embed.model_copy(update={"spaces": ("scene",), "frames_per_batch": 16}),
            "log_level": "DEBUG",
        }
    )


def plant_refused(root: Path, server: MediaServer, n: int) -> dict[str, str]:
    """``n`` marker-coloured images (each its own size, so no two are one content): media id -> URL."""
    urls = {}
    for i in range(n):
        name = f"marked{i}.png"
        Image.new("RGB", (200 + 9 * i, 150 + 5 * i), MARKER).save(root / name)
        urls[f"refused-{i}"] = server.url(name)
    return urls


@dataclass
class EmbedKills:
    """The chaos harness's gate for embed: kill it only while the stand-in holds its calls."""

    standin: StandinProvider
    workers: LocalWorkers
    in_flight: list[int] = field(default_factory=list)  # the stand-in's in-flight requests at each kill
    _pid: int = 0
    _requests_at_start: int = 0

    def __call__(self, stage: str) -> bool:
        if stage != "embed":
            return True
        pid, requests = self.workers.procs["embed"].pid, self.standin.counters().requests
        if pid != self._pid:  # a fresh worker: its calls are the requests from now on
            self._pid, self._requests_at_start = pid, requests
            return False
        in_flight = self.standin.in_flight
        if requests - self._requests_at_start < 2 or in_flight == 0:
            return False
        self.in_flight.append(in_flight)
        return True


def test_sigkills_during_remote_calls_store_each_good_media_once(
    e2e_settings: Settings, standin: StandinProvider, tmp_path: Path
) -> None:
    settings = remote_settings(e2e_settings, standin)
    root = tmp_path / "media"
    root.mkdir()
    with MediaServer(root) as server, Canary() as canary:
        corpus = build_corpus(root, sample_images(tmp_path / "samples"), server, canary, n_good=N_GOOD, n_flaky=4)
        refused = plant_refused(root, server, N_REFUSED)
        total = len(corpus.good) + len(refused) + len(corpus.bad) + len(corpus.invalid_json)
        ensure_topics(settings)
        run_id = new_run_id()
        tracker = RunTracker(settings, run_id, total)
        workers = LocalWorkers(settings, tmp_path / "logs", "remote-chaos").start(STAGES)
        gate = EmbedKills(standin, workers)
        try:
            publish(settings, _with_refused(_requests(corpus, run_id), refused, run_id), show_progress=False)
            _publish_invalid(settings, corpus, run_id)
            report = run_with_chaos(
                workers,
                tracker,
                stages=STAGES,
                restart_broker=None,
                kill_every_s=(1.0, 2.5),
                min_kills=MIN_KILLS,
                ready=gate,
                timeout_s=150,
            )
            _keep_alive_until(workers, lambda: _sinks_caught_up(settings), timeout_s=60)
        finally:
            tracker.close()
            workers.stop()
    assert report.kills["embed"] >= 4 and len(gate.in_flight) == report.kills["embed"]
    assert all(n > 0 for n in gate.in_flight)
    _assert_dlq(settings, corpus, refused)
    expected = _assert_qdrant(settings, corpus, standin)
    _assert_postgres(settings, expected)
    _assert_key_unseen(settings, standin, tmp_path / "logs")
    assert standin.counters().bad_requests >= N_REFUSED  # each refused alone at least once
    assert canary.hits == 0


def _with_refused(requests: list[MediaRequest], refused: dict[str, str], run_id: str) -> list[MediaRequest]:
    planted = [
        MediaRequest(media_id=m, url=u, collection="e2e", run_id=run_id, published_at=time.time())
        for m, u in refused.items()
    ]
    return sorted(requests + planted, key=lambda r: r.media_id)


def _sinks_caught_up(settings: Settings) -> bool:
    vectors = topics(settings).vectors.name
    return all(group_caught_up(settings, group_id(settings, s), vectors) for s in SINKS)


def _assert_dlq(settings: Settings, corpus: Corpus, refused: dict[str, str]) -> None:
    """Each planted bad input once: fetch's failures from fetch, the refused images from embed."""
    letters = [decode_dead_letter(m.value) for m in read_topic(settings, topics(settings).dlq.name)]
    expected = (
        {m: cls for m, (_, cls) in corpus.bad.items()}
        | dict.fromkeys(corpus.invalid_json, "invalid_request")
        | dict.fromkeys(refused, "provider_refused")
    )
    assert {d.media_id: d.error_class for d in letters} == expected
    assert len(letters) == len(expected), "a bad input reached the DLQ twice"
    frames = topics(settings).frames.name
    for d in letters:
        if d.media_id in refused:
            assert d.stage == "embed" and d.source_topic == frames
            assert "the embedding provider refused it: HTTP 400" in d.reason and "planted test image" in d.reason
        else:
            assert d.stage == "fetch" and d.source_topic == topics(settings).requests.name
        assert d.original_value and d.source_offset >= 0


def _assert_qdrant(settings: Settings, corpus: Corpus, standin: StandinProvider) -> dict[str, tuple[str, np.ndarray]]:
    """Qdrant holds exactly the good media, once, each vector the stand-in's for the JPEG sent."""
    model = remote_model_id(settings.remote)
    ids, points = stored_points(settings, corpus, model)
    media = [ids[p.id] for p in points]
    want = _standin_vectors(settings, standin, [corpus.files[m] for m in media])
    got = np.stack([np.asarray(p.vector, dtype=np.float32) for p in points])
    assert got.shape == want.shape, "not stored at the provider's width"
    cos = (want * got).sum(1) / np.linalg.norm(want, axis=1) / np.linalg.norm(got, axis=1)
    # fp16 storage costs < 1e-6 of cosine; a JPEG of another quality or size already costs 1e-4 to 3e-3
    assert cos.min() >= 0.9999, f"worst cosine {cos.min():.5f} for {media[int(cos.argmin())]}"
    for p in points:
        assert p.payload is not None and p.payload["media_id"] == ids[p.id]
        assert p.payload["source_url"] == corpus.good[ids[p.id]] and p.payload["model"] == model
    return {p.id: (model, want[i]) for i, p in enumerate(points)}


def _standin_vectors(settings: Settings, standin: StandinProvider, files: list[Path]) -> np.ndarray:
    """The stand-in model's output for what the embed stage sends of each file: the frame fetch
    makes (at most ``max_side`` px), decoded as embed decodes it, as a 128 px q70 JPEG."""
    assert standin.embedder is not None
    r = settings.remote
    sent = []
    for path in files:
        frame = decode_frame_jpeg(decode_image(path.read_bytes(), settings.fetch).jpeg)
        jpeg = thumbnail_jpeg(frame, r.image_side, r.image_quality)
        sent.append(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    return np.asarray(standin.embedder.embed_images(sent), dtype=np.float32)


def _assert_key_unseen(settings: Settings, standin: StandinProvider, log_dir: Path) -> None:
    """The API key is in no worker log, no provider report and no dead letter."""
    key = (standin.config.api_key or "").encode()
    logs = {p.name: p.read_bytes() for p in log_dir.glob("*.log")}
    assert set(logs) == {f"{s}.log" for s in STAGES} and logs["embed.log"], "no worker logs to scan"
    assert [n for n, text in logs.items() if key in text] == []
    reports = list((settings.data_dir / "providers").glob("*.json"))
    assert reports, "the embed worker wrote no provider report"
    assert [p.name for p in reports if key in p.read_bytes()] == []
    letters = b"".join(m.value for m in read_topic(settings, topics(settings).dlq.name))
    assert key not in letters
