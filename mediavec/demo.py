"""The demo: the whole pipeline on the bundled sample images, on this machine, with no Docker.

Starts the local stack, runs every stage as its own process, serves the sample images from a
local HTTP server, publishes them, follows the run to the end with a progress bar, then
searches the stored vectors by text and by image.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

from mediavec.devstack import stack
from mediavec.mediaserver import MediaServer
from mediavec.progress import RunTracker
from mediavec.publish import new_run_id, publish
from mediavec.samples import sample_images
from mediavec.search import format_hits, search
from mediavec.vectorstore import open_store
from schemas import MediaRequest
from streams.admin import ensure_topics
from streams.settings import Settings

logger = logging.getLogger(__name__)
STAGES = ("fetch", "embed", "sink-qdrant")
COLLECTION = "demo"


def worker_env(settings: Settings) -> dict[str, str]:
    """Environment of the stage processes: the demo's settings, the local server allow-listed."""
    env = dict(os.environ)
    env["MEDIAVEC_DATA_DIR"] = str(settings.data_dir.resolve())
    env["MEDIAVEC_FETCH__ALLOW_CIDRS"] = json.dumps(["127.0.0.1/32"])
    env.setdefault("MEDIAVEC_MODEL__ALLOW_RANDOM_WEIGHTS", "true")
    return env


def start_workers(settings: Settings, log_dir: Path) -> dict[str, subprocess.Popen[bytes]]:
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = {}
    for stage in STAGES:
        log = (log_dir / f"{stage}.log").open("ab")
        cmd = [sys.executable, "-m", "mediavec.cli", "run", stage, "--instance", "demo"]
        procs[stage] = subprocess.Popen(cmd, env=worker_env(settings), stdout=log, stderr=subprocess.STDOUT)
    return procs


def stop_workers(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs.values():
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()


def follow(
    settings: Settings,
    run_id: str,
    total: int,
    procs: dict[str, subprocess.Popen[bytes]],
    tracker: RunTracker,
    timeout_s: float = 1800,
) -> None:
    """A live bar: stored/total, images/s, success rate, ETA; fails fast if a worker dies."""
    bar = tqdm(total=total, unit="img", desc="stored")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        prog = tracker.poll(1.0)
        bar.n = prog.done
        bar.set_postfix(stored=prog.stored, failed=prog.failed, success=f"{prog.success_rate:.0%}")
        bar.refresh()
        if prog.done >= total:
            break
        dead = [s for s, p in procs.items() if p.poll() is not None]
        if dead:
            raise RuntimeError(f"worker(s) {dead} exited; see {settings.data_dir / 'logs'}")
    bar.close()
    if tracker.progress.done < total:
        raise TimeoutError(f"run {run_id}: {tracker.progress.done}/{total} done after {timeout_s}s")


def _drop_demo_collections(settings: Settings) -> None:
    """Start each demo from an empty demo collection (before the sink holds the store)."""
    with open_store(settings) as store:
        for name in store.collections():
            if name.startswith(f"{COLLECTION}__"):
                store.delete_collection(name)


def _quiet_logs() -> None:
    """The demo's own terminal shows progress and results; details go to the workers' log files."""
    logging.getLogger().setLevel(logging.WARNING)
    for name in ("aiohttp.access", "root", "librdkafka"):
        logging.getLogger(name).setLevel(logging.ERROR)


def run_demo(settings: Settings, *, query: str, keep_workers: bool = False) -> int:
    _quiet_logs()
    info = stack.up(settings)
    print(info.describe())
    ensure_topics(settings)
    images = sample_images(settings.data_dir / "samples")
    _drop_demo_collections(settings)
    procs = start_workers(settings, settings.data_dir / "logs")
    print(f"workers started ({', '.join(STAGES)}); logs in {settings.data_dir / 'logs'}")
    try:
        with MediaServer(images[0].parent) as server:
            run_id = new_run_id()
            requests = [
                MediaRequest(
                    media_id=f"demo-{p.stem}",  # stable across runs: a rerun overwrites
                    url=server.url(p.name),
                    collection=COLLECTION,
                    metadata={"file": p.name},
                    reprocess=True,  # each demo run processes the samples again
                    run_id=run_id,
                    published_at=time.time(),
                )
                for p in images
            ]
            tracker = RunTracker(settings, run_id, len(requests))
            publish(settings, requests, total=len(requests))
            follow(settings, run_id, len(requests), procs, tracker)
            prog = tracker.progress
            tracker.close()
            print(f"run {run_id}: {prog.stored} stored, {prog.failed} failed {prog.causes or ''}")
    finally:
        if not keep_workers:
            stop_workers(procs)
    _print_searches(settings, query, images[0])
    print("the stack keeps running; `mediavec dev down` stops it")
    return 0


def _print_searches(settings: Settings, query: str, image: Path) -> None:
    from mediavec.models.clip import ClipEmbedder

    logging.getLogger("mediavec.models").setLevel(logging.ERROR)  # the notice below says it plainly
    embedder = ClipEmbedder.load(settings.model.model_copy(update={"allow_random_weights": True}))
    if embedder.is_random:
        print(
            "\nNOTE: the embedding model runs on RANDOM WEIGHTS (none were found), so the rankings below are "
            "meaningless.\nSupply real weights as the README's 'Model weights' section says "
            "(MEDIAVEC_MODEL__MODEL_DIR or the Hugging Face hub cache), then run the demo again.\n"
        )
    print(f'search --text "{query}":')
    print(format_hits(search(settings, text=query, collection=COLLECTION, limit=5, embedder=embedder)))
    print(f"\nsearch --image {image.name}:")
    print(format_hits(search(settings, image=image, collection=COLLECTION, limit=5, embedder=embedder)))
