"""Build and run one stage worker: the glue between a stage's transform and its runner."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Protocol

from mediavec.settings import Settings
from streams import metrics
from streams.admin import ensure_topics
from streams.sink_runner import StoreSink

logger = logging.getLogger(__name__)

STAGES = ("fetch", "embed", "sink-qdrant", "sink-postgres", "sink-encrypted")


class Runner(Protocol):
    def run(self, stop: threading.Event) -> None: ...


def build(stage: str, settings: Settings, instance: str | None = None) -> Runner:
    """The runner for ``stage``; heavy parts are built later, in the runner's start."""
    from streams.runner import TransactionalRunner
    from streams.sink_runner import StoreSinkRunner

    if stage == "fetch":
        from consumers.fetch.dedup import table_file
        from consumers.fetch.stage import FetchStage
        from streams.pipelined import PipelinedRunner
        from streams.table import GlobalTable
        from streams.topics import topics

        f = settings.fetch
        seen = GlobalTable(settings, topics(settings).seen.name, table_file(settings))
        return PipelinedRunner(
            settings,
            FetchStage(settings, seen),
            max_in_flight=f.max_in_flight,
            commit_size=f.concurrency,
            commit_interval_s=f.commit_interval_s,
            instance=instance,
        )
    if stage == "embed":
        from consumers.embed.stage import EmbedStage

        e = settings.embed
        return TransactionalRunner(
            settings,
            EmbedStage(settings),
            batch_size=e.frames_per_batch,
            batch_deadline_s=e.batch_deadline_s,
            instance=instance,
        )
    if stage in SINKS:
        s = settings.sink
        return StoreSinkRunner(
            settings,
            _sink(stage, settings),
            batch_size=s.batch_size,
            batch_deadline_s=s.batch_deadline_s,
            instance=instance,
        )
    raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")


SINKS = ("sink-qdrant", "sink-postgres", "sink-encrypted")


def _sink(stage: str, settings: Settings) -> StoreSink:
    if stage == "sink-qdrant":
        from consumers.sink_qdrant.sink import QdrantSink

        return QdrantSink(settings)
    if stage == "sink-postgres":
        from consumers.sink_postgres.sink import PostgresSink

        return PostgresSink(settings)
    from consumers.sink_encrypted.sink import EncryptedSink

    return EncryptedSink(settings)


def run_worker(stage: str, settings: Settings, instance: str | None = None) -> None:
    """Run one worker in this process until SIGTERM or SIGINT."""
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        logger.info("%s: signal %d, stopping after the current batch", stage, signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    metrics.serve(settings.metrics_port)
    ensure_topics(settings)
    build(stage, settings, instance).run(stop)
