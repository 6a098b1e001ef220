"""Start N worker processes of one stage and restart any that dies."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time

logger = logging.getLogger(__name__)


def worker_command(stage: str, instance: str) -> list[str]:
    return [sys.executable, "-m", "mediavec.cli", "run", stage, "--instance", instance]


def worker_env(base: dict[str, str], index: int) -> dict[str, str]:
    """Worker i serves its metrics on MEDIAVEC_METRICS_PORT + i (0 stays 0: no endpoint)."""
    env = dict(base)
    port = int(env.get("MEDIAVEC_METRICS_PORT", "0") or 0)
    if port:
        env["MEDIAVEC_METRICS_PORT"] = str(port + index)
    return env


def supervise(
    stage: str, n: int, *, instance: str | None = None, stagger_s: float = 2.0, env: dict[str, str] | None = None
) -> int:
    """Run ``n`` workers with stable instance ids ``<base>-<i>``; SIGTERM stops them all."""
    base = instance or socket.gethostname()
    procs: dict[int, subprocess.Popen[bytes]] = {}
    stopping = False

    def _stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    for i in range(n):
        procs[i] = subprocess.Popen(worker_command(stage, f"{base}-{i}"), env=worker_env(env or dict(os.environ), i))
        time.sleep(stagger_s)  # models load one at a time instead of all at once
    while not stopping:
        for i, p in list(procs.items()):
            if p.poll() is not None:
                logger.warning("%s worker %d exited with %s; restarting", stage, i, p.returncode)
                procs[i] = subprocess.Popen(
                    worker_command(stage, f"{base}-{i}"), env=worker_env(env or dict(os.environ), i)
                )
        time.sleep(1)
    for p in procs.values():
        p.terminate()
    for p in procs.values():
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
    return 0
