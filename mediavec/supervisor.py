"""Start worker processes of one stage, pinned to GPUs when there are any, and restart any that dies.

``mediavec run embed --workers-per-gpu 4`` plans 4 workers per visible GPU, each with
``CUDA_VISIBLE_DEVICES`` set to its GPU (the process sees one device and loads its models there
once); on a machine without a GPU it plans the same number of CPU workers, each with its share of
the cores. Workers start a few seconds apart so their model loads do not all hit the disk and
the GPU at once. Each worker has a stable instance id ``<base>-<i>`` (static group membership:
a restarted worker takes its partitions straight back) and its own metrics port.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

from consumers import registry

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSpec:
    """One planned worker: its index and the environment it gets on top of the supervisor's."""

    index: int
    env: dict[str, str] = field(default_factory=dict)
    device: str = "cpu"  # "cuda:<visible id>" or "cpu", for the log


def worker_command(stage: str, instance: str) -> list[str]:
    return [sys.executable, "-m", "mediavec.cli", "run", stage, "--instance", instance]


def worker_env(base: dict[str, str], index: int) -> dict[str, str]:
    """Worker i serves its metrics on MEDIAVEC_METRICS_PORT + i (0 stays 0: no endpoint)."""
    env = dict(base)
    port = int(env.get("MEDIAVEC_METRICS_PORT", "0") or 0)
    if port:
        env["MEDIAVEC_METRICS_PORT"] = str(port + index)
    return env


def visible_gpus(env: dict[str, str] | None = None) -> list[str]:
    """GPU ids this process may use: CUDA_VISIBLE_DEVICES when set, else what nvidia-smi lists."""
    env = dict(os.environ) if env is None else env
    if "CUDA_VISIBLE_DEVICES" in env:
        return [g.strip() for g in env["CUDA_VISIBLE_DEVICES"].split(",") if g.strip() and g.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        logger.warning("nvidia-smi failed; planning CPU workers")
        return []
    return [str(i) for i, line in enumerate(listing.splitlines()) if line.startswith("GPU ")]


def plan_workers(gpus: list[str], per_gpu: int, cpu_count: int | None = None) -> list[WorkerSpec]:
    """``per_gpu`` workers on each GPU; without a GPU, ``per_gpu`` CPU workers sharing the cores."""
    if per_gpu < 1:
        raise ValueError(f"workers per GPU must be at least 1, got {per_gpu}")
    if gpus:
        return [
            WorkerSpec(g * per_gpu + w, {"CUDA_VISIBLE_DEVICES": gpu}, f"cuda:{gpu}")
            for g, gpu in enumerate(gpus)
            for w in range(per_gpu)
        ]
    threads = str(max(1, (cpu_count or os.cpu_count() or 1) // per_gpu))
    cpu_env = {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    return [WorkerSpec(i, dict(cpu_env)) for i in range(per_gpu)]


def plain_workers(n: int) -> list[WorkerSpec]:
    """``n`` workers with the supervisor's own environment."""
    return [WorkerSpec(i) for i in range(n)]


def partition_shortfall(partitions: int, workers: int) -> str | None:
    """A warning when a topic has fewer partitions than the consumers planned for it."""
    if partitions >= workers:
        return None
    return (
        f"the input topic has {partitions} partitions for {workers} workers: {workers - partitions} will sit idle; "
        "add partitions (kafka-topics --alter --partitions N, and MEDIAVEC_TOPICS__*_PARTITIONS for new topics)"
    )


class _Workers:
    """The running processes, started and restarted from their specs."""

    def __init__(self, stage: str, base: str, env: dict[str, str]) -> None:
        self.stage, self.base, self.env = stage, base, env
        self.procs: dict[int, tuple[WorkerSpec, subprocess.Popen[bytes]]] = {}
        self.restarts = 0

    def start(self, spec: WorkerSpec) -> None:
        env = worker_env({**self.env, **spec.env}, spec.index)
        proc = subprocess.Popen(worker_command(self.stage, f"{self.base}-{spec.index}"), env=env)
        self.procs[spec.index] = (spec, proc)
        logger.info("%s worker %d started (pid %d, %s)", self.stage, spec.index, proc.pid, spec.device)

    def restart_dead(self) -> None:
        for spec, proc in list(self.procs.values()):
            if proc.poll() is not None:
                logger.warning("%s worker %d exited with %s; restarting", self.stage, spec.index, proc.returncode)
                self.restarts += 1
                self.start(spec)

    def stop(self) -> None:
        for _, p in self.procs.values():
            p.terminate()
        for _, p in self.procs.values():
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()


def supervise(
    stage: str,
    specs: int | list[WorkerSpec],
    *,
    instance: str | None = None,
    stagger_s: float = 2.0,
    env: dict[str, str] | None = None,
) -> int:
    """Run the planned workers with stable instance ids ``<base>-<i>``; SIGTERM stops them all.

    An unknown stage is a ValueError here, not workers that die and are restarted forever.
    """
    registry.stage(stage)
    plan = plain_workers(specs) if isinstance(specs, int) else specs
    workers = _Workers(stage, instance or socket.gethostname(), env or dict(os.environ))
    stopping = False

    def _stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    for spec in plan:
        if stopping:
            break
        workers.start(spec)
        time.sleep(stagger_s)  # models load one at a time instead of all at once
    while not stopping:
        workers.restart_dead()
        time.sleep(1)
    workers.stop()
    return 0
