"""Stage workers as child processes on this machine (the demo, replays), and following a run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from tqdm import tqdm

from consumers import registry
from mediavec.progress import RunTracker
from mediavec.settings import Settings


class LocalWorkers:
    """One child process per stage, configured by ``settings`` through the environment."""

    def __init__(self, settings: Settings, log_dir: Path, instance: str, extra_env: dict[str, str] | None = None):
        self.env = {**os.environ, **settings.to_env(), **(extra_env or {})}
        self.log_dir = log_dir
        self.instance = instance
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, stages: Iterable[str]) -> LocalWorkers:
        names = [registry.stage(s).name for s in stages]  # an unknown stage fails here, before any start
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for stage in names:
            log = (self.log_dir / f"{stage}.log").open("ab")
            cmd = [sys.executable, "-m", "mediavec.cli", "run", stage, "--instance", self.instance]
            self.procs[stage] = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def dead(self) -> list[str]:
        return [s for s, p in self.procs.items() if p.poll() is not None]

    def stop(self, timeout_s: float = 60) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout_s)
            except subprocess.TimeoutExpired:
                p.kill()


def follow(
    tracker: RunTracker, workers: LocalWorkers, *, unit: str = "img", timeout_s: float = 3600, until: int | None = None
) -> None:
    """A live bar until the run is done (stored, skipped or failed), or ``until`` of it is: rate, success
    rate, ETA; fails if a worker dies."""
    total = tracker.progress.total
    goal = total if until is None else min(until, total)
    bar = tqdm(total=total, unit=unit, desc="stored", leave=goal >= total)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            prog = tracker.poll(1.0)
            bar.n = prog.done
            bar.set_postfix(
                stored=prog.stored, skipped=prog.skipped, failed=prog.failed, success=f"{prog.success_rate:.0%}"
            )
            bar.refresh()
            if prog.done >= goal:
                return
            if workers.dead():
                raise RuntimeError(f"worker(s) {workers.dead()} exited; see their logs in {workers.log_dir}")
        raise TimeoutError(f"run {tracker.run_id}: {tracker.progress.done}/{total} done after {timeout_s}s")
    finally:
        bar.close()
