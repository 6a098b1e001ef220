"""Build and run one stage worker: the registry's entry for the stage, started in this process."""

from __future__ import annotations

import logging
import signal
import threading

from consumers.registry import Runner, stage
from mediavec.settings import Settings
from streams import metrics
from streams.admin import ensure_topics

logger = logging.getLogger(__name__)

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
    spec.build(settings, instance).run(stop)
