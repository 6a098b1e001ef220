"""One load run end to end: media server, stage workers, warm-up, publishing, tracking, report.

The stages run as real worker processes (:class:`~mediavec.localworkers.LocalWorkers`) against
the broker the settings name; the load server runs in its own process. Before the clock starts,
a few clean media go through every stage (``warmup_media``), so model loading and consumer group
joins are not counted as latency.

A long run hands a partial report to ``RunOptions.checkpoint`` every ``checkpoint_s`` (a soak
killed at its 80th minute still leaves 75 minutes of series), and an interrupt (Ctrl-C, SIGTERM)
stops publishing, drains what was published and reports it, marked partial.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import av
from PIL import Image

from consumers.registry import EMBED, FETCH, SINK_QDRANT
from devstack.samples import sample_images
from devstack.testmedia import vtest_avi
from loadtest.load.monitor import Monitor
from loadtest.load.profile import LoadProfile, plan_media
from loadtest.load.publisher import MediaSet, Publisher, publish_planned
from loadtest.load.summary import LoadReport, RunFacts, summarize
from loadtest.load.tracker import LoadTracker
from mediavec.localworkers import LocalWorkers
from mediavec.settings import Settings
from mediavec.status import look
from streams.admin import ensure_topics
from tests.e2e.corpus import loopback_fetch_settings

logger = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
STAGES = (FETCH.name, EMBED.name, SINK_QDRANT.name)


@dataclass(frozen=True)
class RunOptions:
    work_dir: Path  # media, worker logs
    mode: str = "run"
    stages: tuple[str, ...] = STAGES
    poll_s: float = 0.25
    monitor_s: float = 5.0
    drain_timeout_s: float = 600.0
    warmup_timeout_s: float = 300.0
    checkpoint: Callable[[LoadReport], None] | None = None  # handed a partial report every checkpoint_s
    checkpoint_s: float = 300.0


def load_settings_for(base: Settings, data_dir: Path, profile: LoadProfile) -> Settings:
    """``base`` with topics of their own, loopback fetching, the profile's spaces, and random
    weights when no model directory is configured (the compute is the same as real weights)."""
    model = (
        base.model if base.model.model_dir is not None else base.model.model_copy(update={"allow_random_weights": True})
    )
    return base.model_copy(
        update={
            "data_dir": data_dir,
            "topics": base.topics.model_copy(update={"prefix": f"{base.topics.prefix}load-{uuid.uuid4().hex[:6]}."}),
            "fetch": loopback_fetch_settings(),
            "model": model,
            "embed": base.embed.model_copy(update={"spaces": tuple(profile.spaces)}),
        }
    )


def prepare_media(root: Path, with_video: bool) -> tuple[list[str], str | None, float]:
    """The sample photos as JPEGs in ``root`` (and vtest.avi when asked): names, video, its length."""
    root.mkdir(parents=True, exist_ok=True)
    names = []
    for src in sample_images(root / "originals"):
        name = f"{src.stem}.jpg"
        Image.open(src).convert("RGB").save(root / name, "JPEG", quality=90)
        names.append(name)
    if not with_video:
        return names, None, 0.0
    clip = vtest_avi(REPO / ".mediavec" / "testmedia")
    copy = root / clip.name
    if not copy.exists():  # the server serves only files under its root, so no symlink
        try:
            os.link(clip, copy)
        except OSError:
            shutil.copyfile(clip, copy)
    with av.open(str(clip)) as container:
        length = float(container.duration or 0) / av.time_base
    return names, clip.name, length


@contextmanager
def media_server(root: Path) -> Iterator[tuple[str, int]]:
    """The load server in a child process: (base URL, pid)."""
    cmd = [sys.executable, "-m", "loadtest.load.server", str(root)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip() if proc.stdout else ""
        if not line.startswith("http://127."):
            raise RuntimeError(f"the load media server did not start (said {line!r})")
        yield line, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait(
    tracker: LoadTracker,
    workers: LocalWorkers,
    opts: RunOptions,
    timeout_s: float,
    busy: Publisher | None = None,
    tick: Callable[[], None] | None = None,
) -> None:
    """Poll until no media is unfinished (and ``busy`` publisher is done); fail if a worker dies.

    ``tick`` runs after every poll."""
    deadline = time.monotonic() + timeout_s
    while True:
        tracker.poll(opts.poll_s)
        if tick is not None:
            tick()
        publishing = busy is not None and busy.alive
        if not publishing and tracker.unfinished() == 0:
            return
        if workers.dead():
            raise RuntimeError(f"worker(s) {workers.dead()} exited; see their logs in {workers.log_dir}")
        if publishing:
            deadline = time.monotonic() + timeout_s  # the drain timeout starts after the last publish
        elif time.monotonic() > deadline:
            logger.warning("%d media unfinished after a %.0fs drain", tracker.unfinished(), timeout_s)
            return


def _warm_up(
    settings: Settings,
    tracker: LoadTracker,
    workers: LocalWorkers,
    media: MediaSet,
    profile: LoadProfile,
    opts: RunOptions,
) -> None:
    clean = replace(profile, failures={}, video_share=0.0)
    planned = [plan_media(clean, i, "warmup", media.images, None) for i in range(profile.warmup_media)]
    publish_planned(settings, planned, media, "warmup", tracker)
    _wait(tracker, workers, opts, opts.warmup_timeout_s)
    logger.info("warm-up: %d media through every stage", len(planned))


class _Checkpoints:
    """Calls ``opts.checkpoint`` with a partial report every ``opts.checkpoint_s``; a failure is logged."""

    def __init__(self, opts: RunOptions, facts: Callable[[], RunFacts], started: float) -> None:
        self.opts, self.facts, self.started = opts, facts, started
        self.last = time.monotonic()

    def __call__(self) -> None:
        if self.opts.checkpoint is None or time.monotonic() - self.last < self.opts.checkpoint_s:
            return
        self.last = time.monotonic()
        try:
            report = summarize(self.facts())
            report.partial = f"checkpoint {time.time() - self.started:.0f} s into the run"
            self.opts.checkpoint(report)
        except Exception:  # a checkpoint must never end the run it records
            logger.exception("load checkpoint failed")


def run_load(settings: Settings, profile: LoadProfile, opts: RunOptions) -> LoadReport:
    """Run the profile's load through the stages and summarize it."""
    ensure_topics(settings)
    images, video, length = prepare_media(opts.work_dir / "media", profile.video_share > 0)
    run_id = time.strftime("load-%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4]
    interrupted = ""
    with media_server(opts.work_dir / "media") as (url, server_pid):
        media = MediaSet(url, images, video, length)
        tracker = LoadTracker(settings, sink=opts.stages[-1])
        workers = LocalWorkers(settings, opts.work_dir / "logs", "load").start(opts.stages)
        monitor: Monitor | None = None
        measured_from = time.time()

        def facts(peaks: dict[str, float], final_lag: dict[str, int]) -> RunFacts:
            return RunFacts(
                run_id=run_id,
                mode=opts.mode,
                profile=profile.to_dict(),
                fixed_rate=profile.rate is not None,
                media={k: m for k, m in tracker.outcomes().items() if not k.startswith("warmup-")},
                stored=[s for s in tracker.stored if s.at >= measured_from],
                samples=list(monitor.samples) if monitor else [],
                peak_rss_mb=peaks,
                final_lag=final_lag,
                poll_s=opts.poll_s,
                monitor_s=opts.monitor_s,
            )

        def now() -> RunFacts:
            last_lag = dict(monitor.samples[-1].lag) if monitor and monitor.samples else {}
            return facts(monitor.peaks() if monitor else {}, last_lag)

        try:
            _warm_up(settings, tracker, workers, media, profile, opts)
            measured_from = time.time()
            pids = {s: p.pid for s, p in workers.procs.items()} | {"mediaserver": server_pid, "loadgen": os.getpid()}
            monitor = Monitor(settings, pids, opts.monitor_s).start()
            publisher = Publisher(settings, tracker, profile, media, run_id).start()
            try:
                _wait(
                    tracker,
                    workers,
                    opts,
                    opts.drain_timeout_s,
                    busy=publisher,
                    tick=_Checkpoints(opts, now, measured_from),
                )
            except KeyboardInterrupt:
                interrupted = (
                    f"interrupted {time.time() - measured_from:.0f} s into the run; what was published was drained"
                )
                logger.warning("interrupted: publishing stops, draining what was published (interrupt again to quit)")
                publisher.stop()
                _wait(tracker, workers, opts, opts.drain_timeout_s)
            publisher.stop()
            if publisher.errors:
                raise RuntimeError(f"publishing failed: {publisher.errors[:3]}")
            monitor.stop()
            final_lag = {g.stage: g.lag for g in look(settings) if g.stage in opts.stages}
            peaks = monitor.peaks()
        finally:
            if monitor is not None:
                monitor.stop()
            tracker.close()
            workers.stop()
    report = summarize(facts(peaks, final_lag))
    report.partial = interrupted
    return report
