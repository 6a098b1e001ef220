"""Build and run one stage worker: the registry's entry for the stage, started in this process."""

from __future__ import annotations

import logging
import os
import signal
import threading

from consumers.registry import Runner, stage
from mediavec.settings import Settings
from streams import metrics
from streams.admin import ensure_topics
from streams.errors import ClientHung
from streams.registry import use_registry

logger = logging.getLogger(__name__)

EXIT_HUNG = 75  # EX_TEMPFAIL: a stuck Kafka client; start the worker again

__all__ = ["Runner", "build", "run_worker"]


def build(name: str, settings: Settings, instance: str | None = None) -> Runner:
    """The runner of stage ``name`` (consumers.registry); heavy parts are built later, in the runner's start."""
    return stage(name).build(settings, instance)


def run_worker(name: str, settings: Settings, instance: str | None = None) -> None:
    """Run one worker in this process until SIGTERM or SIGINT."""
    spec = stage(name)
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        logger.info("%s: signal %d, stopping after the current batch", spec.name, signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    metrics.serve(settings.metrics_port)
    ensure_topics(settings)
    use_registry(settings)  # here, not first in a stage's own thread: a registry that is down is one line
    try:
        spec.build(settings, instance).run(stop)
    except ClientHung as exc:
        # Exit now: the interpreter's shutdown would wait on the stuck client's threads.
        logger.error("%s: %s; exiting so that the worker is started afresh", spec.name, exc)
        logging.shutdown()
        os._exit(EXIT_HUNG)
