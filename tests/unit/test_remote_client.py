"""The remote embedder against the stand-in provider over loopback HTTP: real requests, real
quotas and faults, vectors computed by the random-weight ViT-B-32, compared with its own output.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydantic import SecretStr

from devstack.standin_provider import StandinConfig, StandinProvider
from models.clip import ClipEmbedder
from models.remote.client import ItemsRefused, ProviderUnavailable, RemoteEmbedder
from models.remote.providers import thumbnail_jpeg
from models.remote.settings import RemoteSettings
from tests.unit.test_search_spaces import PHOTOS, SKIMAGE_DATA
from tests.unit.test_standin_provider import embedder  # noqa: F401  (the module's model fixture)

KEY = "standin-key"


def photos() -> list[Image.Image]:
    out = []
    for name in PHOTOS:
        with Image.open(SKIMAGE_DATA / name) as im:
            out.append(im.convert("RGB"))
    return out


def remote(server: StandinProvider, **settings: Any) -> RemoteEmbedder:
    fields: dict[str, Any] = {"flavour": "nim", "url": server.base_url, "model": "standin", "api_key": SecretStr(KEY)}
    return RemoteEmbedder(RemoteSettings(**(fields | settings)))


def own(embedder: ClipEmbedder, images: list[Image.Image]) -> np.ndarray:  # noqa: F811
    """The model's vectors of the 128 px JPEGs the client sends."""
    decoded = [Image.open(io.BytesIO(thumbnail_jpeg(im, 128, 70))).convert("RGB") for im in images]
    return embedder.embed_images(decoded)


@pytest.fixture(scope="module")
def server(embedder: ClipEmbedder) -> Iterator[StandinProvider]:  # noqa: F811
    with StandinProvider(StandinConfig(shuffle_order=True), embedder) as running:
        yield running


def test_images_come_back_as_the_models_own_vectors_in_order(
    server: StandinProvider,
    embedder: ClipEmbedder,  # noqa: F811
) -> None:
    images = photos()
    with remote(server, batch_size=2) as client:
        got = client.embed_images(images)
        texts = client.embed_texts(["a red bus", "a cat"])
    want = own(embedder, images)
    assert got.shape == want.shape
    assert np.min(np.sum(got * want, axis=1)) >= 0.999  # unit rows: the dot is the cosine
    assert np.min(np.sum(texts * embedder.embed_texts(["a red bus", "a cat"]), axis=1)) >= 0.999


def test_a_quota_and_injected_faults_cost_retries_not_vectors(embedder: ClipEmbedder) -> None:  # noqa: F811
    config = StandinConfig(requests_per_s=20, max_concurrency=3, error_rate=0.2, seed=3)
    images = photos() * 4
    with StandinProvider(config, embedder) as busy, remote(busy, batch_size=1, max_retries=20) as client:
        result = client.embed(images=images)
        seen = busy.counters()
    assert not result.refused and all(v is not None for v in result.vectors)
    assert seen.errors_injected > 0 and seen.ok == len(images)
    assert result.requests == seen.requests - seen.unauthorized  # every try was one request
    want = own(embedder, images)
    assert np.min(np.sum(np.stack(result.vectors) * want, axis=1)) >= 0.999  # type: ignore[arg-type]


def test_only_the_inputs_the_provider_refuses_fail(server: StandinProvider) -> None:
    with remote(server, batch_size=4) as client:
        result = client.embed(texts=["a bus", "", "a cat", "a dog"])
        assert set(result.refused) == {1} and "non-empty" in result.refused[1]
        assert all(result.vectors[i] is not None for i in (0, 2, 3))
        with pytest.raises(ItemsRefused, match="#1"):
            client.embed_texts(["a bus", ""])


def test_a_refused_key_or_a_dead_provider_is_not_the_items_fault(server: StandinProvider) -> None:
    with remote(server, api_key=SecretStr("wrong"), max_retries=1) as client:
        with pytest.raises(ProviderUnavailable, match="HTTP 401") as refused:
            client.embed_texts(["a bus"])
        assert "wrong" not in str(refused.value)  # the key never reaches a message
    with StandinProvider(StandinConfig(error_rate=1.0), None) as down, remote(down, max_retries=2) as client:
        with pytest.raises(ProviderUnavailable, match="3 tries"):
            client.embed_texts(["a bus"])
        assert down.counters().requests == 3
