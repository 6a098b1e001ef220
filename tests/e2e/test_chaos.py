"""Exactly-once under faults: >= 500 media; every stage SIGKILLed again and again, the broker
restarted, second workers joining and leaving mid-run.

Afterwards the store holds exactly the good media (count, ids, vectors equal to the model's own
output), nothing twice, and the DLQ holds exactly the planted bad inputs, once each.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from devstack import stack as devstack
from devstack.mediaserver import Canary, MediaServer
from devstack.samples import sample_images
from devstack.settings import DevSettings
from mediavec.localworkers import LocalWorkers
from mediavec.progress import RunTracker
from mediavec.publish import new_run_id, publish
from mediavec.settings import Settings
from streams.admin import ensure_topics
from tests.e2e.chaos import run_with_chaos
from tests.e2e.corpus import build_corpus
from tests.e2e.test_image_pipeline import _assert_dlq, _assert_stores, _publish_invalid, _requests
from tests.kafkautil import group_caught_up

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

STAGES = ["fetch", "embed", "sink-qdrant", "sink-postgres", "sink-encrypted"]


def _caught_up(settings: Settings) -> bool:
    from streams.kafka import group_id
    from streams.topics import topics

    return all(group_caught_up(settings, group_id(settings, s), topics(settings).vectors.name) for s in STAGES[2:])


def _keep_alive_until(workers: LocalWorkers, done: Callable[[], bool], timeout_s: float = 300) -> None:
    """Let every sink catch up, restarting any worker that exits, as a supervisor would."""
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "sinks did not catch up"
        for stage in workers.dead():
            workers.start([stage])
        time.sleep(1)


def _restart_broker(stack_settings: DevSettings) -> None:
    devstack.restart_kafka(stack_settings, kill=True)


def test_chaos_kills_and_a_broker_restart_change_nothing(
    e2e_settings: Settings, stack_settings: DevSettings, tmp_path: Path
) -> None:
    settings = e2e_settings
    root = tmp_path / "media"
    root.mkdir()
    with MediaServer(root) as server, Canary() as canary:
        corpus = build_corpus(root, sample_images(tmp_path / "samples"), server, canary, n_good=470, n_flaky=20)
        total = len(corpus.good) + len(corpus.bad) + len(corpus.invalid_json)
        assert total >= 500
        ensure_topics(settings)
        run_id = new_run_id()
        tracker = RunTracker(settings, run_id, total)
        workers = LocalWorkers(settings, tmp_path / "logs", "chaos").start(STAGES)
        extra = LocalWorkers(settings, tmp_path / "logs-b", "chaos-b")  # joins and leaves mid-run
        try:
            publish(settings, _requests(corpus, run_id), show_progress=False)
            _publish_invalid(settings, corpus, run_id)
            report = run_with_chaos(
                workers,
                tracker,
                stages=STAGES,
                restart_broker=functools.partial(_restart_broker, stack_settings),
                extra=extra,
                scale=("embed", "sink-postgres"),
            )
            _keep_alive_until(workers, lambda: _caught_up(settings))
        finally:
            tracker.close()
            extra.stop()
            workers.stop()
        assert sum(report.kills.values()) >= 6 and report.broker_restarts == 1
        assert report.scaled_up == report.scaled_down == ["embed", "sink-postgres"]
        _assert_dlq(settings, corpus)
        _assert_stores(settings, corpus)
        assert canary.hits == 0
