"""The remote embedder against the image-pipeline seed's design, at one quota, over real HTTP.

The stand-in provider (``devstack/standin_provider.py``) runs on loopback with a requests/s quota,
a latency that looks like a hosted API's (a median and a lognormal tail), and vectors from the
random-weight ViT-B-32. Against it, in one run and with the same images (128 px JPEGs, one image a
request, so that images/s compare with the quota directly):

* ``seed``: the seed's design: a fixed semaphore of 5 API calls, no retries (a 429 or 5xx loses
  the image), no reading of rate-limit headers;
* ``adaptive``: :class:`models.remote.client.RemoteEmbedder` with no quota configured: its
  adaptive limit and the provider's ``Retry-After`` / ``x-ratelimit-*`` headers alone;
* ``adaptive + quota``: the same with the plan's requests/s configured (what the README asks).

Figures: images/s and that as a share of the quota, 429s per 1,000 requests, success rate.

    python -m loadtest.bench_remote --images 300 --rps 5
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from PIL import Image
from pydantic import SecretStr

from devstack.standin_provider import StandinConfig, StandinProvider
from loadtest.report import machine, write_section
from models.remote.client import RemoteEmbedder
from models.remote.providers import ProviderApi, data_url, thumbnail_jpeg
from models.remote.settings import RemoteSettings

KEY = "bench-key"
SEED_CONCURRENCY = 5  # the seed's API semaphore (it also had 10 for downloads, not measured here)


@dataclass
class Arm:
    name: str
    images: int
    stored: int
    seconds: float
    requests: int
    rate_limited: int

    @property
    def per_s(self) -> float:
        return self.stored / self.seconds if self.seconds else 0.0

    def row(self, rps: float) -> str:
        per_1000 = 1000 * self.rate_limited / self.requests if self.requests else 0.0
        return (
            f"| {self.name} | {self.stored:,} of {self.images:,} | {self.seconds:.1f} | {self.per_s:.2f} | "
            f"{self.per_s / rps:.2f} | {per_1000:.0f} | {100 * self.stored / self.images:.2f}% |"
        )


def sample_images(n: int) -> list[Image.Image]:
    """``n`` distinct small photos: scikit-image's, shifted so that each is its own input."""
    from skimage import data

    base = [Image.fromarray(getattr(data, name)()).convert("RGB") for name in ("astronaut", "coffee", "chelsea")]
    return [base[i % 3].rotate(i % 360) for i in range(n)]


async def _seed(url: str, images: list[Image.Image]) -> tuple[int, int]:
    """The seed: a semaphore of 5, one image a request, no retries; (stored, requests)."""
    api = ProviderApi("nim", "standin")
    gate = asyncio.Semaphore(SEED_CONCURRENCY)
    headers = {"Authorization": f"Bearer {KEY}"}

    async def one(session: aiohttp.ClientSession, image: Image.Image) -> bool:
        request = api.build_request([data_url(thumbnail_jpeg(image, 128, 70))])
        async with gate, session.post(url + request.path, json=request.body, headers=headers) as reply:
            await reply.read()
            return reply.status == 200

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        done = await asyncio.gather(*(one(session, im) for im in images))
    return sum(done), len(images)


def run_arm(name: str, server: StandinProvider, images: list[Image.Image], rps: float | None) -> Arm:
    server.reset_counters()
    started = time.perf_counter()
    if name == "seed":
        stored, _ = asyncio.run(_seed(server.base_url, images))
    else:
        settings = RemoteSettings(
            flavour="nim", url=server.base_url, model="standin", api_key=SecretStr(KEY),
            batch_size=1, requests_per_s=rps, max_retries=10,
        )  # fmt: skip
        with RemoteEmbedder(settings) as client:
            result = client.embed(images=images)
        stored = sum(v is not None for v in result.vectors)
    seconds = time.perf_counter() - started
    seen = server.counters()
    return Arm(name, len(images), stored, seconds, seen.requests, seen.rate_limited + seen.concurrency_refusals)


def bench(n: int, rps: float, latency_s: float, p99_s: float, log: Any = print) -> list[Arm]:
    images = sample_images(n)
    config = StandinConfig(api_key=KEY, requests_per_s=rps, latency_median_s=latency_s, latency_p99_s=p99_s, seed=1)
    arms = []
    with StandinProvider(config) as server:
        for name, quota in (("seed", None), ("adaptive", None), ("adaptive + quota", rps)):
            arm = run_arm(name, server, images, quota)
            log(arm.row(rps))
            arms.append(arm)
            time.sleep(1.5)  # the provider's bucket refills between arms
    return arms


def section(arms: list[Arm], n: int, rps: float, latency_s: float, p99_s: float, command: str) -> str:
    lines = [
        "## Remote embedding at a provider's quota: the seed's design against mediavec's (issue 17)",
        "",
        f"`{command}` on {machine()}: the stand-in provider on loopback with a quota of {rps:g} requests/s "
        f"(a one-second bucket), latency median {latency_s:g} s and p99 {p99_s:g} s, vectors from the "
        f"random-weight ViT-B-32; {n:,} images, each a 128 px JPEG at quality 70, one a request. `seed`: a fixed "
        "semaphore of 5 API calls, no retries, no rate-limit headers; `adaptive`: `RemoteEmbedder`, no quota "
        "configured (its limit and the provider's headers alone); `adaptive + quota`: the same with the "
        "plan's requests/s configured. 429s include refusals over the provider's concurrency cap. "
        "`images/s` is images stored per second of that design's own run: the seed's run is short because it "
        "drops every image the provider throttles, so read its rate together with its success rate.",
        "",
        "| design | stored | seconds | images/s | share of quota | 429s per 1,000 requests | success |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *(a.row(rps) for a in arms),
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--rps", type=float, default=5.0)
    p.add_argument("--latency", type=float, default=0.5, help="median seconds per request")
    p.add_argument("--p99", type=float, default=2.0, help="p99 seconds per request")
    p.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    a = p.parse_args()
    arms = bench(a.images, a.rps, a.latency, a.p99)
    command = f"python -m loadtest.bench_remote --images {a.images} --rps {a.rps:g}"
    text = section(arms, a.images, a.rps, a.latency, a.p99, command)
    print(text)
    if not a.no_write:
        write_section("bench_remote", text)


if __name__ == "__main__":
    main()
