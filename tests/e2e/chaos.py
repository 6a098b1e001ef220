"""A chaos harness: stages as processes, killed with SIGKILL at random, the broker restarted.

Shared by the CI chaos test (short) and ``loadtest/chaos_long.py`` (long). Every worker that
dies, killed or by itself (a broker restart can make a worker exit on purpose), is restarted
with the same instance id, as a supervisor would.
"""

from __future__ import annotations

import logging
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from mediavec.localworkers import LocalWorkers
from mediavec.progress import RunTracker

logger = logging.getLogger(__name__)


@dataclass
class ChaosReport:
    kills: Counter[str] = field(default_factory=Counter)
    self_exits: Counter[str] = field(default_factory=Counter)
    broker_restarts: int = 0
    scaled_up: list[str] = field(default_factory=list)
    scaled_down: list[str] = field(default_factory=list)
    seconds: float = 0.0


def run_with_chaos(
    workers: LocalWorkers,
    tracker: RunTracker,
    *,
    stages: list[str],
    restart_broker: Callable[[], None] | None,
    kill_every_s: tuple[float, float] = (2.0, 5.0),
    broker_restart_at: float = 0.4,
    min_kills_per_stage: int = 2,
    timeout_s: float = 1500,
    seed: int = 1,
    extra: LocalWorkers | None = None,
    scale: tuple[str, ...] = (),
    scale_window: tuple[float, float] = (0.2, 0.6),
    min_kills: Mapping[str, int] | None = None,
    ready: Callable[[str], bool] | None = None,
) -> ChaosReport:
    """Kill random stages until the run is done (and every stage was killed often enough).

    With ``extra`` and ``scale``, second workers of those stages join the groups at the first
    fraction of the run and leave (SIGTERM) at the second: a rebalance each way, mid-run.
    ``restart_broker`` None: the broker stays up. ``min_kills`` sets each stage's own minimum
    (instead of ``min_kills_per_stage``) and the victim is drawn from the stages still under
    theirs. ``ready(stage)`` False puts a due kill off to a later poll (kill a worker only in the
    middle of something, e.g. while its remote calls are in flight).
    """
    rng = random.Random(seed)
    report = ChaosReport()
    start = time.monotonic()
    next_kill = start + rng.uniform(*kill_every_s)
    total = tracker.progress.total
    wanted = {s: min_kills_per_stage for s in stages} | dict(min_kills or {})
    broker_restarts = 0 if restart_broker is None else 1
    victim: str | None = None
    while True:
        prog = tracker.poll(0.5)
        _restart_dead(workers, report)
        now = time.monotonic()
        if now - start > timeout_s:
            raise AssertionError(f"chaos run stuck at {prog} after {report} (next to kill: {victim})")
        chaos_done = all(report.kills[s] >= wanted[s] for s in stages) and report.broker_restarts >= broker_restarts
        if prog.done >= total and chaos_done:
            break
        if extra is not None and scale:
            _scale(extra, scale, prog.done / total, scale_window, report)
        if restart_broker is not None and report.broker_restarts == 0 and prog.done >= broker_restart_at * total:
            logger.warning("chaos: restarting the broker")
            restart_broker()
            report.broker_restarts += 1
        elif now >= next_kill and not chaos_done:
            if victim is None:
                under = [s for s in stages if report.kills[s] < wanted[s]] if min_kills is not None else stages
                victim = rng.choice(under)
            if ready is not None and not ready(victim):
                continue
            logger.warning("chaos: SIGKILL %s at %d/%d", victim, prog.done, total)
            _kill_and_restart(workers, victim, report)
            victim, next_kill = None, now + rng.uniform(*kill_every_s)
    report.seconds = time.monotonic() - start
    return report


def _kill_and_restart(workers: LocalWorkers, stage: str, report: ChaosReport) -> None:
    workers.procs[stage].send_signal(signal.SIGKILL)
    workers.procs[stage].wait(30)
    workers.start([stage])
    report.kills[stage] += 1


def _scale(
    extra: LocalWorkers, stages: tuple[str, ...], progress: float, window: tuple[float, float], report: ChaosReport
) -> None:
    if not report.scaled_up and progress >= window[0]:
        logger.warning("chaos: second workers join: %s", stages)
        extra.start(stages)
        report.scaled_up = list(stages)
    elif report.scaled_up and not report.scaled_down and progress >= window[1]:
        logger.warning("chaos: second workers leave: %s", stages)
        extra.stop()
        report.scaled_down = list(stages)


def _restart_dead(workers: LocalWorkers, report: ChaosReport) -> None:
    for stage in workers.dead():
        logger.warning("chaos: %s exited by itself (%s); restarting", stage, workers.procs[stage].returncode)
        report.self_exits[stage] += 1
        workers.start([stage])
