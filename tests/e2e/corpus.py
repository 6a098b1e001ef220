"""A corpus of real photos and their variants, plus planted bad inputs, served locally."""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

from devstack.mediaserver import Canary, MediaServer, write_pixel_bomb
from media.settings import FetchSettings


def loopback_fetch_settings() -> FetchSettings:
    """Fetch settings for the local media server: 127.0.0.1 allowed, timeouts that tolerate a busy machine."""
    return FetchSettings(
        allow_cidrs=("127.0.0.1/32",),
        connect_timeout_s=2.0,
        read_timeout_s=2.5,
        total_deadline_s=10.0,
        retries=2,
        backoff_base_s=0.05,
        per_host_concurrency=16,
        concurrency=32,
        max_pixels=40_000_000,
    )


@dataclass
class Corpus:
    good: dict[str, str] = field(default_factory=dict)  # media id -> URL
    files: dict[str, Path] = field(default_factory=dict)  # media id -> local file of a good one
    flaky: dict[str, str] = field(default_factory=dict)  # media id -> path on the server (fails once)
    bad: dict[str, tuple[str, str]] = field(default_factory=dict)  # media id -> (URL, expected error class)
    invalid_json: dict[str, bytes] = field(default_factory=dict)  # media id -> raw request bytes


def _variant(im: Image.Image, rng: random.Random) -> Image.Image:
    im = im.copy()
    scale = rng.uniform(0.35, 1.0)
    im = im.resize((max(32, int(im.width * scale)), max(32, int(im.height * scale))))
    if rng.random() < 0.5:
        im = ImageOps.mirror(im)
    if rng.random() < 0.3:
        im = im.rotate(rng.choice([90, 180, 270]), expand=True)
    if rng.random() < 0.5:
        w, h = im.size
        box = (rng.randint(0, w // 5), rng.randint(0, h // 5), w - rng.randint(0, w // 5), h - rng.randint(0, h // 5))
        im = im.crop(box)
    im = ImageEnhance.Color(im).enhance(rng.uniform(0.3, 1.6))
    if rng.random() < 0.15:
        im = ImageOps.grayscale(im).convert("RGB")
    im.thumbnail((640, 640))
    return im


def _save(im: Image.Image, path: Path, fmt: str) -> None:
    if fmt == "JPEG":
        im.convert("RGB").save(path, "JPEG", quality=88)
    elif fmt == "PNG":
        im.save(path, "PNG")
    else:
        im.convert("RGB").save(path, "WEBP", quality=85)


def build_corpus(
    root: Path, samples: list[Path], server: MediaServer, canary: Canary, n_good: int = 210, n_flaky: int = 12
) -> Corpus:
    rng = random.Random(7)
    root.mkdir(parents=True, exist_ok=True)
    corpus = Corpus()
    bases = [Image.open(p).convert("RGB") for p in samples]
    for i in range(n_good):
        fmt = ["JPEG", "PNG", "WEBP"][i % 3]
        name = f"img{i:04d}.{ {'JPEG': 'jpg', 'PNG': 'png', 'WEBP': 'webp'}[fmt] }".replace(" ", "")
        _save(_variant(bases[i % len(bases)], rng), root / name, fmt)
        media = f"good-{i:04d}"
        corpus.files[media] = root / name
        if i < n_flaky:
            corpus.flaky[media] = f"/flaky/1/{name}"
            corpus.good[media] = server.url(corpus.flaky[media])
        else:
            corpus.good[media] = server.url(name)
    _plant_bad(root, bases[0], server, canary, corpus)
    return corpus


def _plant_bad(root: Path, base: Image.Image, server: MediaServer, canary: Canary, corpus: Corpus) -> None:
    buf = io.BytesIO()
    base.save(buf, "JPEG", quality=90)
    jpeg = buf.getvalue()
    for i in range(4):
        (root / f"truncated{i}.jpg").write_bytes(jpeg[: len(jpeg) * (i + 1) // 6])
        corpus.bad[f"bad-truncated-{i}"] = (server.url(f"truncated{i}.jpg"), "truncated_image")
    for i in range(2):
        write_pixel_bomb(root / f"bomb{i}.png")
        corpus.bad[f"bad-bomb-{i}"] = (server.url(f"bomb{i}.png"), "pixel_bomb")
    for i in range(5):
        corpus.bad[f"bad-404-{i}"] = (server.url(f"/status/404/missing{i}.jpg"), "http_404")
    for i in range(3):
        corpus.bad[f"bad-timeout-{i}"] = (server.url("/slow/30/img0000.jpg"), "timeout")
    for i in range(3):
        corpus.bad[f"bad-half-body-{i}"] = (server.url("/truncated/img0000.jpg"), "truncated_image")
    for i in range(4):
        corpus.bad[f"bad-html-{i}"] = (server.url(f"/html/page{i}.jpg"), "not_an_image")
    for i in range(3):
        corpus.bad[f"bad-empty-{i}"] = (server.url(f"/empty/e{i}.jpg"), "empty_body")
    for i in range(3):
        corpus.bad[f"bad-redirect-{i}"] = (server.url(f"/redirect?to={canary.url(f'/secret{i}.jpg')}"), "ssrf_refused")
    for i, url in enumerate(["ftp://127.0.0.1/a.jpg", "file:///etc/hostname", "gopher://127.0.0.1:70/1"]):
        corpus.bad[f"bad-scheme-{i}"] = (url, "bad_scheme")
    for i in range(2):
        corpus.invalid_json[f"bad-invalid-{i}"] = (
            f'{{"schema_version":1,"media_id":"bad-invalid-{i}","kind":"image","url":"http://127.0.0.1/x",'
            f'"run_id":"RUN","colour":"red"}}'
        ).encode()
