"""``mediavec run embed --workers-per-gpu N`` on a machine without a GPU: N CPU workers, each with its
share of the cores, stable instance ids, a killed worker restarted, and a warning when the input
topic has fewer partitions than workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from mediavec.settings import Settings
from streams.admin import ensure_topics
from streams.settings import TopicSettings
from tests.kafkautil import wait_for

REPO = Path(__file__).resolve().parents[2]


def _workers(supervisor: psutil.Process) -> dict[str, psutil.Process]:
    """The supervisor's live worker processes by instance id."""
    out = {}
    for child in supervisor.children():
        try:
            cmd = child.cmdline()
        except psutil.NoSuchProcess:
            continue
        if "--instance" in cmd and child.status() != psutil.STATUS_ZOMBIE:
            out[cmd[cmd.index("--instance") + 1]] = child
    return out


def _pid(supervisor: psutil.Process, instance: str) -> int | None:
    worker = _workers(supervisor).get(instance)
    return worker.pid if worker is not None else None


def test_cpu_workers_are_planned_pinned_restarted_and_partitions_checked(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"topics": TopicSettings(prefix=settings.topics.prefix, frames_partitions=1)})
    ensure_topics(settings)
    env = {**os.environ, **settings.to_env(), "CUDA_VISIBLE_DEVICES": "", "MEDIAVEC_METRICS_PORT": "0"}
    log = (tmp_path / "supervisor.log").open("w+")
    cmd = [sys.executable, "-m", "mediavec.cli", "run", "embed", "--workers-per-gpu", "2", "--stagger", "0.2"]
    proc = subprocess.Popen([*cmd, "--instance", "wpg"], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        supervisor = psutil.Process(proc.pid)
        wait_for(lambda: set(_workers(supervisor)) == {"wpg-0", "wpg-1"}, 60, "two workers")
        workers = _workers(supervisor)
        for w in workers.values():
            worker_env = w.environ()
            assert worker_env["CUDA_VISIBLE_DEVICES"] == ""
            assert worker_env["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))
        killed = workers["wpg-1"].pid
        os.kill(killed, signal.SIGKILL)
        wait_for(lambda: _pid(supervisor, "wpg-1") not in (None, killed), 60, "the killed worker to come back")
        assert _workers(supervisor)["wpg-0"].pid == workers["wpg-0"].pid  # the other one was left alone
        seen = [w.pid for w in _workers(supervisor).values()]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
    log.seek(0)
    output = log.read()
    assert "embed: 2 workers on cpu" in output
    assert "1 partitions for 2 workers: 1 will sit idle" in output
    assert "exited with -9; restarting" in output
    survivors = [p for p in seen if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert survivors == [], "SIGTERM to the supervisor stops every worker"
