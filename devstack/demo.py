"""The demo: the whole pipeline on the bundled sample images, on this machine, with no Docker.

Starts the local stack, runs every stage as its own process, serves the sample images from a
local HTTP server, publishes them, follows the run to the end with a progress bar, then
searches the stored vectors by text and by image.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from consumers.registry import EMBED, FETCH, SINK_QDRANT
from devstack import stack
from devstack.mediaserver import MediaServer
from devstack.samples import sample_images
from devstack.settings import DevSettings
from mediavec.localworkers import LocalWorkers, follow
from mediavec.progress import RunTracker, describe
from mediavec.publish import new_run_id, publish
from mediavec.query_models import QueryModels
from mediavec.search import format_hits, random_weight_models, search
from schemas import MediaRequest
from stores.vectorstore import open_store
from streams.admin import ensure_topics

logger = logging.getLogger(__name__)
STAGES = (FETCH.name, EMBED.name, SINK_QDRANT.name)  # no PostgreSQL or index key in the demo
COLLECTION = "demo"


RANDOM_OK = ("model", "concept")  # CLIP-family weights cannot ship: see README, model weights


def demo_settings(settings: DevSettings) -> DevSettings:
    """The settings of the whole demo, its workers and its own searches alike: random weights are
    allowed for the open_clip models unless the environment says otherwise."""
    update = {
        group: getattr(settings, group).model_copy(update={"allow_random_weights": True})
        for group in RANDOM_OK
        if f"MEDIAVEC_{group.upper()}__ALLOW_RANDOM_WEIGHTS" not in os.environ
    }
    return settings.model_copy(update=update)


def worker_env() -> dict[str, str]:
    """What the demo's stage processes get on top of the settings: the local server allow-listed."""
    return {"MEDIAVEC_FETCH__ALLOW_CIDRS": json.dumps(["127.0.0.1/32"])}


def _drop_demo_collections(settings: DevSettings) -> None:
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


def run_demo(settings: DevSettings, *, query: str, keep_workers: bool = False) -> int:
    _quiet_logs()
    settings = demo_settings(settings)
    info = stack.up(settings)
    print(info.describe())
    ensure_topics(settings)
    images = sample_images(settings.data_dir / "samples")
    _drop_demo_collections(settings)
    workers = LocalWorkers(settings, settings.data_dir / "logs", "demo", worker_env()).start(STAGES)
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
            models = QueryModels(settings)
            tracker = RunTracker(settings, run_id, len(requests))
            first = len(requests) // 2
            try:
                # Half the photos, then the rest while the first are searched: search does not wait for ingest.
                publish(settings, requests[:first], total=len(requests))
                follow(tracker, workers, until=max(1, first // 2))
                publish(settings, requests[first:], total=len(requests))
                _search_while_ingesting(settings, query, models, tracker)
                follow(tracker, workers)
            finally:
                tracker.close()
            print(describe(run_id, tracker.progress))
        _print_searches(settings, query, images[0], models)  # the workers still hold the stores
    finally:
        if not keep_workers:
            workers.stop()
    print("the stack keeps running; `mediavec dev down` stops it")
    return 0


def _note_random_weights(settings: DevSettings) -> None:
    """Say so, before the first search, when a model runs on random weights."""
    logging.getLogger("models").setLevel(logging.ERROR)  # the notice below says it plainly
    random = random_weight_models(settings)
    if random:
        print(
            f"\nNOTE: {', '.join(random)} run on RANDOM WEIGHTS (none were found), so the rankings below are "
            "meaningless.\nGet real weights with `mediavec models pull` (on a machine with internet access; "
            "README, 'Model weights', says how to copy them from another), then run the demo again.\n"
        )


def _search_while_ingesting(settings: DevSettings, query: str, models: QueryModels, tracker: RunTracker) -> None:
    _note_random_weights(settings)
    stored = tracker.poll(0.1).stored
    hits = search(settings, text=query, collection=COLLECTION, limit=3, models=models)
    print(f'\nsearch --text "{query}" while ingest goes on ({stored} of {tracker.progress.total} stored so far):')
    print(format_hits(hits) + "\n")


def _print_searches(settings: DevSettings, query: str, image: Path, models: QueryModels) -> None:
    """The searches a user would run next, with every model they need loaded once for all three."""
    print(f'\nsearch --text "{query}":')
    print(format_hits(search(settings, text=query, collection=COLLECTION, limit=5, models=models)))
    print(f'\nsearch --text "{query}" --space all --per-space 3 (scenes, detected objects, grid patches, text):')
    every = search(settings, text=query, collection=COLLECTION, limit=12, space="all", per_space=3, models=models)
    print(format_hits(every))
    print(f"\nsearch --image {image.name}:")
    print(format_hits(search(settings, image=image, collection=COLLECTION, limit=5, models=models)))
