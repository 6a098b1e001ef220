"""The remote provider wired in: the embed stage's frames and refusals, its outage signal, the
stored vectors searched with the same provider, and what ``mediavec status`` shows of it.

The stand-in provider runs on loopback with the random-weight ViT-B-32; the stage is built from
settings as ``mediavec run embed`` builds it (``MEDIAVEC_MODEL__PROVIDER=remote``).
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import schemas
from consumers.embed.provider_report import ProviderReporter, read_reports
from consumers.embed.stage import EmbedStage
from consumers.settings import ConsumerSettings
from consumers.sink_qdrant.sink import QdrantSink
from devstack.standin_provider import RANDOM_CLIP, StandinConfig, StandinProvider
from mediavec import cli
from mediavec.cli_errors import explain
from mediavec.search import search
from mediavec.settings import Settings, load_settings
from mediavec.status import render, render_providers
from models.clip import ClipEmbedder
from models.images import thumbnail_jpeg
from models.pull import hub_models, remote_roles
from models.remote.client import RemoteEmbedder
from models.remote.settings import ProviderSettingsError
from models.settings import ModelsSettings
from schemas.models import Frame, VectorBatch
from stores.vectorstore.base import UnknownCollectionError
from streams.stage import Failure, InputRecord, StageUnavailable
from tests.unit.test_search_spaces import PHOTOS, SKIMAGE_DATA, _write

KEY = "standin-key-for-wiring"


def _red(image: Image.Image) -> str | None:
    r, g, b = np.asarray(image, dtype=np.float32).mean(axis=(0, 1))
    return "an all-red picture" if r > 200 and g < 60 and b < 60 else None


@dataclass
class Remote:
    provider: StandinProvider
    embedder: ClipEmbedder

    def env(self, data_dir: Path) -> dict[str, object]:
        """The settings a user sets: the provider, where it is, the key."""
        return {
            "data_dir": data_dir,
            "model": {"provider": "remote"},
            "remote": {"url": self.provider.base_url, "api_key": KEY, "max_retries": 1, "timeout_s": 5},
            "embed": {"spaces": ["scene", "object", "text"], "thumbnail_side": 0},
            "text": {"ocr": False},
        }


@pytest.fixture(scope="module")
def remote() -> Iterator[Remote]:
    embedder = ClipEmbedder.load(RANDOM_CLIP)
    provider = StandinProvider(StandinConfig(api_key=KEY, refuse_image=_red), embedder=embedder).start()
    try:
        yield Remote(provider, embedder)
    finally:
        provider.stop()


def _photo(name: str) -> Image.Image:
    with Image.open(SKIMAGE_DATA / name) as im:
        return im.convert("RGB").resize((320, 240))


def _record(i: int, image: Image.Image) -> InputRecord:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=95)
    frame = Frame(
        media_id=f"m{i}",
        frame_index=0,
        timestamp_s=0.0,
        jpeg=buf.getvalue(),
        source_url=f"https://example.invalid/{i}.jpg",
        collection="remote",
        width=image.width,
        height=image.height,
        content_sha256=f"{i:064x}",
    )
    return InputRecord("t.frames", 0, i, frame.media_id.encode(), schemas.encode_frame(frame))


def _batches(results: list[object]) -> list[VectorBatch]:
    return [schemas.decode_vector_batch(o.value) for r in results if isinstance(r, list) for o in r]


def test_frames_embed_through_the_provider_and_a_refusal_is_that_frames_dead_letter(
    remote: Remote, tmp_path: Path
) -> None:
    settings = ConsumerSettings.model_validate(remote.env(tmp_path))
    stage = EmbedStage(settings)
    stage.start()
    try:
        images = [_photo(PHOTOS[0]), Image.new("RGB", (200, 150), (250, 10, 10)), _photo(PHOTOS[1])]
        results = stage.process([_record(i, im) for i, im in enumerate(images)])
    finally:
        stage.close()
    refused = results[1]
    assert isinstance(refused, Failure) and refused.error_class == "provider_refused"
    assert "refused by the content policy: an all-red picture" in refused.reason and KEY not in refused.reason
    batches = _batches(results)
    assert {b.model for b in batches} == {"remote/nim/nvidia:nvclip"}
    scenes = {b.rows[0].media_id: b.vectors[0] for b in batches if b.rows[0].space == "scene"}
    assert set(scenes) == {"m0", "m2"}
    for i in (0, 2):  # the stored row is the model's own vector of the JPEG the stage sent
        sent = Image.open(io.BytesIO(thumbnail_jpeg(images[i], 128, 70))).convert("RGB")
        expected = remote.embedder.embed_images([sent])[0].astype(np.float32)
        got = scenes[f"m{i}"].astype(np.float32)
        assert got.shape == expected.shape == (512,)  # the provider's width: no truncation by default
        assert float(got @ expected / np.linalg.norm(got) / np.linalg.norm(expected)) >= 0.999


def test_a_provider_that_cannot_be_reached_pauses_the_stage_instead_of_failing_frames(tmp_path: Path) -> None:
    with StandinProvider(StandinConfig(api_key=KEY), embedder=ClipEmbedder.load(RANDOM_CLIP)) as gone:
        url = gone.base_url  # a loopback port nobody listens on once it stops
    settings = ConsumerSettings.model_validate(
        {**Remote(gone, gone.embedder).env(tmp_path), "remote": {"url": url, "api_key": KEY, "max_retries": 0}}
    )
    stage = EmbedStage(settings)
    stage.start()
    try:
        with pytest.raises(StageUnavailable, match="embedding provider unavailable") as down:
            stage.process([_record(0, _photo(PHOTOS[2]))])
        assert down.value.wait(0.5) is False  # the runner keeps waiting: nothing is dead-lettered
        assert KEY not in str(down.value)
    finally:
        stage.close()


def test_what_the_provider_stored_is_searched_through_the_same_provider(
    remote: Remote, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings.model_validate(remote.env(tmp_path))
    stage = EmbedStage(ConsumerSettings.model_validate(remote.env(tmp_path)))
    stage.start()
    try:
        photos = [_photo(name) for name in PHOTOS[:4]]
        batches = _batches(stage.process([_record(i, im) for i, im in enumerate(photos)]))
    finally:
        stage.close()
    _write(QdrantSink(settings), batches)
    before = remote.provider.counters().requests
    hits = search(settings, image=photos[2], collection="remote", limit=3)
    assert hits[0].payload["media_id"] == "m2" and hits[0].score > 0.99
    assert remote.provider.counters().requests > before  # the query went to the provider
    # `mediavec search` as a stranger runs it with the provider gone: one line, exit 1, no traceback
    photo = tmp_path / "query.jpg"
    photos[2].save(photo)
    env = {"MEDIAVEC_DATA_DIR": str(tmp_path), "MEDIAVEC_MODEL__PROVIDER": "remote", "MEDIAVEC_REMOTE__API_KEY": KEY,
           "MEDIAVEC_REMOTE__URL": "http://127.0.0.1:9", "MEDIAVEC_REMOTE__MAX_RETRIES": "0"}  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        load_settings.cache_clear()
        assert cli.main(["search", "--image", str(photo), "--collection", "remote"]) == 1
        load_settings.cache_clear()
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        err[-1].startswith("mediavec: embedding provider: ") and "Traceback" not in "".join(err) and KEY not in err[-1]
    )
    # another provider model has its own collection: nothing of this one is searched with it
    other_remote = {"url": remote.provider.base_url, "model": "o/m"}
    other = Settings.model_validate({**remote.env(tmp_path), "remote": other_remote})
    with pytest.raises(UnknownCollectionError, match=r"looked for remote__remote\.nim\.o-m"):
        search(other, image=photos[2], collection="remote")


def test_status_shows_the_limit_and_the_quota_in_use(remote: Remote, tmp_path: Path) -> None:
    settings = ModelsSettings.model_validate(
        {"remote": {"url": remote.provider.base_url, "api_key": KEY, "requests_per_s": 50, "tokens_per_min": 10**6}}
    )
    with RemoteEmbedder(settings.remote) as embedder:
        embedder.embed_texts(["a cat", "a dog", "a bus"])
        reporter = ProviderReporter(embedder, tmp_path)
        reporter.write()
        text = reporter.path.read_text()
        assert KEY not in text
        reports = read_reports(tmp_path)
    assert len(reports) == 1 and reports[0]["limit"] >= 1 and reports[0]["circuit"] == "closed"
    assert reports[0]["quota_requests_per_s"] == 50 and reports[0]["requests"] >= 1
    lines = render_providers(reports)
    assert "remote/nim/nvidia:nvclip" in lines[2] and "/50.0" in lines[2] and "closed" in lines[2]
    assert render([], None, reports).splitlines()[-1] == lines[-1]
    stale = {**reports[0], "at": time.time() - 3600}
    reporter.path.write_text(json.dumps(stale))
    assert read_reports(tmp_path) == []  # a worker gone for an hour is not listed
    assert render_providers([]) == []


def test_the_provider_setting_and_the_stored_width() -> None:
    local = ModelsSettings()
    assert local.provider_of("vision") == local.provider_of("concept") == "local"
    assert local.store_dim_of("vision") == 256
    remote = ModelsSettings.model_validate({"model": {"provider": "remote"}})
    assert remote.provider_of("concept") == "remote" and remote.store_dim_of("vision") is None
    mixed = ModelsSettings.model_validate({"model": {"provider": "remote"}, "concept": {"provider": "local"}})
    assert mixed.provider_of("concept") == "local" and mixed.store_dim_of("concept") == mixed.concept.store_dim
    # `mediavec models pull` fetches only what runs here
    assert [m.settings.arch for m in hub_models(mixed)] == [mixed.concept.arch] and remote_roles(mixed) == ["vision"]
    assert len(hub_models(local)) == 2 and remote_roles(local) == []


def test_a_text_only_api_for_the_image_spaces_is_refused_at_start() -> None:
    from models.bundle import EmbedModels

    settings = ModelsSettings.model_validate({"model": {"provider": "remote"}, "remote": {"flavour": "tei"}})
    with pytest.raises(ProviderSettingsError, match="the tei API embeds text only, and the vision model makes") as bad:
        EmbedModels.load(settings, ["scene", "object"])
    told = explain(bad.value, None)
    assert told is not None and told.status == 2 and "invalid settings" in told.line()
