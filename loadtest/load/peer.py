"""The fetch stage next to img2dataset, on the same load server, the same URLs, the same concurrency.

Both download and resize the same planned media (clean: no planned failures, the profile's
latency and bandwidth) to at most 1024 px on the long side, JPEG quality 90:

- mediavec: W fetch worker processes through Kafka (requests topic -> frames topic,
  transactional), each with ``fetch.concurrency`` = ``fetch.per_host_concurrency`` = C / W,
  already warm; the clock runs from the first publish to the first look (every 50 ms) at which
  the fetch group has committed every request, which it does in the transaction that commits the
  request's frame (reading the frames themselves as they came, 100 kB each, took CPU from the
  workers; they are counted once the clock has stopped);
- img2dataset (its own venv, ``scripts/img2dataset-env.sh``): ``processes_count`` x
  ``thread_count`` = C, ``resize_mode keep_ratio_largest``, ``resize_only_if_bigger``, files
  output; timed by its own shard stats (first shard start to last shard end) and by wall clock
  (its interpreter and process pool start-up included).

The server reports the most requests it served at once during each run, so the concurrency is
checked, not assumed. img2dataset runs with no update check, wandb off and no proxy (:data:`I2D_ENV`).

Two busy cores make one run of either tool vary by 10 % or more, so the comparison is made in
rounds, one tool after the other in each, on new URLs each round (the fetch stage would skip a
URL it has seen); the ratio reported is the median of the rounds' ratios.
"""

from __future__ import annotations

import json
import logging
import math
import os
import statistics
import subprocess
import time
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

from confluent_kafka import TopicPartition

from consumers.registry import FETCH
from loadtest.load.drain import CommitClock, wait_members
from loadtest.load.harness import REPO, media_server, prepare_media
from loadtest.load.profile import LoadProfile, plan_media
from loadtest.load.publisher import MediaSet, publish_planned
from mediavec.localworkers import LocalWorkers
from mediavec.settings import Settings
from streams.admin import ensure_topics
from streams.kafka import consumer, group_id
from streams.topics import topics

logger = logging.getLogger(__name__)
# Loopback only: albumentations checks PyPI for updates on import unless told not to (seen with
# strace: a DNS query and a connection to pypi.org:443); wandb stays off.
I2D_ENV = {"NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "disabled", "WANDB_SILENT": "true"}


@dataclass(frozen=True)
class FetchRun:
    """The fetch stage with ``workers`` processes on one round's media."""

    workers: int
    ok: int
    seconds: float
    max_concurrent: int

    @property
    def per_s(self) -> float:
        return self.ok / self.seconds


@dataclass(frozen=True)
class PeerRound:
    """One round: the fetch stage (with each number of workers), then img2dataset, on the same planned media."""

    fetch: list[FetchRun]
    i2d_ok: int
    i2d_window_s: float  # first shard start to last shard end
    i2d_wall_s: float
    i2d_max_concurrent: int

    @property
    def i2d_per_s(self) -> float:
        return self.i2d_ok / self.i2d_window_s

    def ratio(self, workers: int) -> float:
        return next(f.per_s for f in self.fetch if f.workers == workers) / self.i2d_per_s


@dataclass(frozen=True)
class PeerResult:
    media: int
    concurrency: int
    rounds: list[PeerRound]
    i2d_processes: int
    i2d_threads: int
    i2d_version: str
    fetch_workers: tuple[int, ...] = (1,)
    bound_per_s: float = 0.0  # what the plan allows a client that costs nothing: see plan_bound

    def ratio(self, workers: int) -> float:
        """The median of the rounds' ratios."""
        return statistics.median(r.ratio(workers) for r in self.rounds)

    def fetch_per_s(self, workers: int) -> float:
        return statistics.median(f.per_s for r in self.rounds for f in r.fetch if f.workers == workers)

    @property
    def i2d_per_s(self) -> float:
        return statistics.median(r.i2d_per_s for r in self.rounds)


def plan_bound(profile: LoadProfile, n: int, images: list[str], sizes: dict[str, int], concurrency: int) -> float:
    """The most media/s any client can fetch with ``concurrency`` requests open: ``concurrency`` over
    the mean time the server takes per media (its planned delay, then its body at the bandwidth)."""
    total = 0.0
    for i in range(n):
        planned = plan_media(profile, i, "bound", images, None)
        size = sizes[images[i % len(images)]]
        total += planned.delay_s + (size / profile.bandwidth_bps if profile.bandwidth_bps > 0 else 0.0)
    return concurrency / (total / n) if total > 0 else float("inf")


def _server_stats(base_url: str, reset: bool = False) -> int:
    """The most requests the load server served at once (since the last reset)."""
    url = f"{base_url}/_stats" + ("?reset=1" if reset else "")
    with urllib.request.urlopen(url, timeout=10) as resp:  # the loopback load server
        return int(json.load(resp)["max_concurrent"])


def img2dataset_venv() -> Path:
    """Build or reuse .venv-img2dataset (PyPI on first use) and return its path."""
    out = subprocess.run([str(REPO / "scripts" / "img2dataset-env.sh")], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def _frames_seen(settings: Settings, run_id: str, n: int, timeout_s: float) -> tuple[int, float]:
    """Read the frames topic until ``n`` frames of ``run_id`` arrived: (frames, time.time() of the last)."""
    name = topics(settings).frames.name
    c = consumer(settings, f"{settings.topics.prefix}mediavec.peer-reader")
    parts = c.list_topics(name, timeout=10).topics[name].partitions
    c.assign([TopicPartition(name, p, c.get_watermark_offsets(TopicPartition(name, p), timeout=10)[0]) for p in parts])
    seen, last, deadline = 0, 0.0, time.monotonic() + timeout_s
    prefix = f"{run_id}-".encode()
    try:
        while seen < n and time.monotonic() < deadline:
            for msg in c.consume(500, timeout=0.2):
                if msg.error() is None and (msg.key() or b"").startswith(prefix):
                    seen, last = seen + 1, time.time()
    finally:
        c.close()
    return seen, last


def fetch_rate(
    settings: Settings,
    media: MediaSet,
    profile: LoadProfile,
    n: int,
    work: Path,
    processes: int = 1,
    run_id: str = "peer",
) -> tuple[int, float, int]:
    """(frames fetched, seconds, server's max concurrent) for ``n`` media through warm fetch workers.

    Each run has topics and a consumer group of its own: a worker of an earlier run with more
    workers stays a static member of its group for a session timeout after it stops.
    """
    prefix = f"{settings.topics.prefix}{run_id}."
    settings = settings.model_copy(update={"topics": settings.topics.model_copy(update={"prefix": prefix})})
    ensure_topics(settings)
    logs = work / "logs" / run_id
    workers = [LocalWorkers(settings, logs / f"peer{i}", f"peer{i}").start([FETCH.name]) for i in range(processes)]
    clock = CommitClock(settings, group_id(settings, FETCH.name), topics(settings).requests, {})
    try:
        dead = lambda: [name for w in workers for name in w.dead()]  # noqa: E731
        wait_members(clock, processes, dead=dead, timeout_s=120)
        warmup = f"{run_id}warmup"
        count = profile.warmup_media * processes
        warm = [plan_media(profile, i, warmup, media.images, None) for i in range(count)]
        publish_planned(settings, warm, media, warmup)
        if _frames_seen(settings, warmup, len(warm), 300)[0] < len(warm):
            raise RuntimeError(f"the fetch workers did not warm up; see {logs}")
        planned = [plan_media(profile, i, run_id, media.images, None) for i in range(n)]
        _server_stats(media.base_url, reset=True)
        start = time.monotonic()
        publish_planned(settings, planned, media, run_id)
        end = _all_committed(clock, start + 600)
        max_concurrent = _server_stats(media.base_url)
        ok, _ = _frames_seen(settings, run_id, n, 60)
        return ok, end - start, max_concurrent
    finally:
        clock.close()
        for w in workers:
            w.stop()


def _all_committed(clock: CommitClock, deadline: float) -> float:
    """time.monotonic() of the first look at which the group committed every request published so far."""
    target = clock.published()
    while time.monotonic() < deadline:
        if clock.committed() >= target:
            return time.monotonic()
        time.sleep(0.05)
    raise TimeoutError(f"the fetch group committed {clock.committed()} of {target} requests in time")


def i2d_rate(
    venv: Path, urls: list[str], concurrency: int, processes: int, timeout_s: float, out: Path
) -> dict[str, float]:
    """Run img2dataset over ``urls``: successes, window_s (shard stats), wall_s."""
    (out / "urls.txt").parent.mkdir(parents=True, exist_ok=True)
    (out / "urls.txt").write_text("\n".join(urls) + "\n")
    threads = max(1, concurrency // processes)
    cmd = [
        str(venv / "bin" / "img2dataset"),
        f"--url_list={out / 'urls.txt'}",
        f"--output_folder={out / 'images'}",
        "--input_format=txt",
        "--output_format=files",
        f"--processes_count={processes}",
        f"--thread_count={threads}",
        f"--number_sample_per_shard={math.ceil(len(urls) / processes)}",
        "--image_size=1024",
        "--resize_mode=keep_ratio_largest",
        "--resize_only_if_bigger=True",
        "--encode_quality=90",
        "--encode_format=jpg",
        f"--timeout={int(timeout_s)}",
        "--retries=2",
        "--enable_wandb=False",
        "--extract_exif=False",
    ]
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(I2D_ENV)
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, env=env, capture_output=True, cwd=out)
    wall = time.monotonic() - t0
    stats = [json.loads(p.read_text()) for p in (out / "images").glob("*_stats.json")]
    if not stats:
        raise RuntimeError(f"img2dataset wrote no shard stats under {out / 'images'}")
    window = max(s["end_time"] for s in stats) - min(s["start_time"] for s in stats)
    return {"ok": sum(s["successes"] for s in stats), "window_s": window, "wall_s": wall, "threads": threads}


def compare(
    settings: Settings,
    profile: LoadProfile,
    n: int,
    concurrency: int,
    processes: int,
    work: Path,
    fetch_workers: tuple[int, ...] = (1,),
    rounds: int = 3,
) -> PeerResult:
    """Both tools on the same planned media, ``rounds`` times: the fetch stage first (its workers warmed up)."""
    clean = replace(profile, failures={}, video_share=0.0)
    venv = img2dataset_venv()
    version = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import importlib.metadata as m; print(m.version('img2dataset'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    images, _, _ = prepare_media(work / "media", with_video=False)
    sizes = {name: (work / "media" / name).stat().st_size for name in images}
    bound = plan_bound(clean, n, images, sizes, concurrency)
    done: list[PeerRound] = []
    threads = max(1, concurrency // processes)
    with media_server(work / "media") as (url, _pid):
        media = MediaSet(url, images)
        for r in range(1, rounds + 1):
            runs = []
            for w in fetch_workers:
                each = max(1, concurrency // w)
                fetch = settings.fetch.model_copy(update={"concurrency": each, "per_host_concurrency": each})
                run_id = f"peer{r}w{w}r"  # "peer1w2r-", never a prefix of another run's ids
                ok, seconds, conc = fetch_rate(
                    settings.model_copy(update={"fetch": fetch}), media, clean, n, work, w, run_id
                )
                runs.append(FetchRun(w, ok, seconds, conc))
            run_id = f"peer{r}i2dr"
            urls = [url + plan_media(clean, i, run_id, images, None).path for i in range(n)]
            _server_stats(url, reset=True)
            deadline = settings.fetch.total_deadline_s
            i2d = i2d_rate(venv, urls, concurrency, processes, deadline, work / "img2dataset" / run_id)
            done.append(PeerRound(runs, int(i2d["ok"]), i2d["window_s"], i2d["wall_s"], _server_stats(url)))
            fetched = ", ".join(f"{f.workers} worker(s) {f.per_s:.1f}/s" for f in runs)
            logger.info("round %d: fetch stage %s; img2dataset %.1f/s", r, fetched, done[-1].i2d_per_s)
    return PeerResult(n, concurrency, done, processes, threads, version, tuple(fetch_workers), bound)
