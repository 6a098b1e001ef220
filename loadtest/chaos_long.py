"""The long chaos run: many media, every stage SIGKILLed again and again, the broker restarted.

Same harness and the same checks as tests/e2e/test_chaos.py (exactly the good media in Qdrant,
the encrypted index and PostgreSQL, vectors equal to the model's own output, the DLQ holding
exactly the planted bad inputs once each), at a size CI cannot afford. Counts go to
BENCHMARKS.md. Runs against the local dev stack (restarted once by the run itself):

    .venv/bin/mediavec dev up && .venv/bin/python -m loadtest.chaos_long --good 1500
"""

from __future__ import annotations

import argparse
import functools
import logging
import tempfile
import uuid
from pathlib import Path

from devstack import stack
from devstack.mediaserver import Canary, MediaServer
from devstack.samples import sample_images
from devstack.settings import DevSettings, load_dev_settings
from loadtest.bench_postgres import scratch_database
from loadtest.report import machine, write_section
from mediavec.localworkers import LocalWorkers
from mediavec.progress import RunTracker
from mediavec.publish import new_run_id, publish
from mediavec.settings import Settings
from stores.encindex.keys import generate_key, write_key_file
from streams.admin import ensure_topics
from tests.e2e.chaos import run_with_chaos
from tests.e2e.corpus import build_corpus, loopback_fetch_settings
from tests.e2e.test_chaos import STAGES, _caught_up, _keep_alive_until
from tests.e2e.test_image_pipeline import _assert_dlq, _assert_stores, _publish_invalid, _requests


def chaos_settings(base: Settings, tmp: Path) -> Settings:
    key = tmp / "index.key"
    write_key_file(key, generate_key())
    return base.model_copy(
        update={
            "data_dir": tmp,
            "topics": base.topics.model_copy(update={"prefix": f"chaos-{uuid.uuid4().hex[:6]}."}),
            "kafka": base.kafka.model_copy(update={"session_timeout_ms": 10_000}),
            "fetch": loopback_fetch_settings(),
            "model": base.model.model_copy(update={"allow_random_weights": True}),
            "encindex": base.encindex.model_copy(update={"key_file": key}),
        }
    )


def _restart_broker(base: DevSettings) -> None:
    stack.restart_kafka(base, kill=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--good", type=int, default=1500)
    ap.add_argument("--min-kills", type=int, default=4, help="kills per stage at least")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    base = load_dev_settings()
    stack.up(base)
    with tempfile.TemporaryDirectory() as tmp, scratch_database(base) as pg:
        settings = chaos_settings(pg, Path(tmp))
        root = Path(tmp) / "media"
        root.mkdir()
        with MediaServer(root) as server, Canary() as canary:
            corpus = build_corpus(
                root, sample_images(Path(tmp) / "samples"), server, canary, n_good=args.good, n_flaky=50
            )
            total = len(corpus.good) + len(corpus.bad) + len(corpus.invalid_json)
            ensure_topics(settings)
            run_id = new_run_id()
            tracker = RunTracker(settings, run_id, total)
            workers = LocalWorkers(settings, Path(tmp) / "logs", "chaos").start(STAGES)
            try:
                publish(settings, _requests(corpus, run_id), show_progress=False)
                _publish_invalid(settings, corpus, run_id)
                report = run_with_chaos(
                    workers,
                    tracker,
                    stages=STAGES,
                    min_kills_per_stage=args.min_kills,
                    restart_broker=functools.partial(_restart_broker, base),
                    timeout_s=7200,
                )
                _keep_alive_until(workers, lambda: _caught_up(settings), timeout_s=900)
            finally:
                tracker.close()
                workers.stop()
            _assert_dlq(settings, corpus)
            _assert_stores(settings, corpus)
            assert canary.hits == 0
    kills = ", ".join(f"{s} {n}" for s, n in sorted(report.kills.items()))
    exits = ", ".join(f"{s} {n}" for s, n in sorted(report.self_exits.items())) or "none"
    body = (
        "## Long chaos run (issue: exactly-once into three stores)\n\n"
        f"`python -m loadtest.chaos_long --good {args.good}` on {machine()}.\n\n"
        f"- media: {total} ({len(corpus.good)} good, {total - len(corpus.good)} planted bad, "
        "50 failing once with a 500)\n"
        f"- SIGKILLs: {sum(report.kills.values())} ({kills}); broker restarts (SIGKILL): {report.broker_restarts}; "
        f"workers that exited by themselves and were restarted: {exits}\n"
        f"- result: Qdrant, the encrypted index and PostgreSQL each hold exactly the {len(corpus.good)} good media "
        "(ids, vectors cos >= 0.999 to the model's own output), no duplicates; the DLQ holds exactly the "
        f"{total - len(corpus.good)} planted bad inputs, once each; the 127.0.0.2 canary was never reached\n"
        f"- duration: {report.seconds:.0f} s until every request was stored or dead-lettered\n"
    )
    print(body)
    if not args.no_write:
        write_section("chaos_long", body)


if __name__ == "__main__":
    main()
