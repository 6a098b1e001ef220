"""The demo: the whole pipeline on the bundled sample images, on this machine, with no Docker.

Starts the local stack, runs every stage as its own process, serves the sample images from a
local HTTP server and the search service with its page, publishes the images, follows the run to
the end with a progress bar, then searches the stored vectors by text and by image. Run from a
terminal, it then keeps the page and the workers up until Ctrl-C.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from consumers.registry import EMBED, FETCH, SINK_POSTGRES, SINK_QDRANT
from devstack import stack
from devstack.mediaserver import MediaServer
from devstack.samples import sample_images
from devstack.settings import DevSettings
from mediavec.localworkers import LocalWorkers, follow
from mediavec.progress import RunTracker, describe
from mediavec.publish import new_run_id, publish
from mediavec.query_models import QueryModels
from mediavec.search import format_hits, random_weight_models, search
from mediavec.service.app import ServiceServer
from schemas import MediaRequest
from stores.vectorstore import open_store
from streams.admin import ensure_topics

logger = logging.getLogger(__name__)
STAGES = (FETCH.name, EMBED.name, SINK_QDRANT.name, SINK_POSTGRES.name)  # PostgreSQL keeps the thumbnails
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


def run_demo(settings: DevSettings, *, query: str, keep_workers: bool = False, wait: bool | None = None) -> int:
    """The demo; ``wait``: keep the page and the workers up until Ctrl-C (default: when run from a terminal)."""
    _quiet_logs()
    settings = demo_settings(settings)
    info = stack.up(settings)
    print(info.describe())
    ensure_topics(settings)
    images = sample_images(settings.data_dir / "samples")
    _drop_demo_collections(settings)
    workers = LocalWorkers(settings, settings.data_dir / "logs", "demo", worker_env()).start(STAGES)
    print(f"workers started ({', '.join(STAGES)}); logs in {settings.data_dir / 'logs'}")
    models = QueryModels(settings)
    try:
        with MediaServer(images[0].parent) as server, _search_page(settings, models) as page:
            print(f"search page: http://{page.host}:{page.port}/  (it answers while ingest goes on)")
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
            _check_page(page, query)
            if sys.stdin.isatty() if wait is None else wait:
                _serve_until_interrupted(page)
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


@contextmanager
def _search_page(settings: DevSettings, models: QueryModels) -> Iterator[ServiceServer]:
    """The search service and its page on the configured port or, when that one is taken, a free one."""
    page = ServiceServer(settings, models, port=settings.serve.port)
    try:
        page.start()
    except OSError:
        page.stop()
        page = ServiceServer(settings, models, port=0).start()
    try:
        yield page
    finally:
        page.stop()


def _check_page(page: ServiceServer, query: str) -> None:
    """Ask the service what the page asks: the page itself, a search, and the top hit's thumbnail."""
    html = _get(page, "GET", "/")
    found = json.loads(_get(page, "POST", "/v1/search", {"text": query, "collection": COLLECTION, "limit": 5}))["hits"]
    thumbs = [h["thumbnail_url"] for h in found if h.get("thumbnail_url")]
    jpegs = sum(_thumbnail(page, url).startswith(b"\xff\xd8") for url in thumbs)
    where = f"http://{page.host}:{page.port}/"
    print(f"\nsearch page {where} ({len(html)} bytes) answered: {len(found)} hits, {jpegs} thumbnails")


def _thumbnail(page: ServiceServer, url: str, wait_s: float = 60.0) -> bytes:
    """A hit's thumbnail; sink-postgres may still be a moment behind sink-qdrant, so wait a little."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return _get(page, "GET", url)
        except RuntimeError:
            if time.monotonic() > deadline:
                return b""
            time.sleep(0.5)


def _get(page: ServiceServer, method: str, path: str, doc: Any = None) -> bytes:
    conn = http.client.HTTPConnection(page.host, page.port, timeout=120)
    try:
        body = None if doc is None else json.dumps(doc)
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
        reply = conn.getresponse()
        data = reply.read()
        if reply.status != 200:
            raise RuntimeError(f"the search service answered {method} {path} with {reply.status}: {data[:200]!r}")
        return data
    finally:
        conn.close()


def _serve_until_interrupted(page: ServiceServer) -> None:
    """Keep the page (and the workers it reads through) up until Ctrl-C or SIGTERM."""
    print(f"\nthe search page stays up at http://{page.host}:{page.port}/ with the workers; Ctrl-C stops them")
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        print()
    finally:
        signal.signal(signal.SIGTERM, previous)
