"""Consumer lag and memory of every stage over time, sampled in a thread while the load runs.

Lag is :func:`mediavec.status.look`'s (end offset minus the group's committed offset, summed
over the stage's input partitions). Memory is each stage process's resident set size (RSS,
summed over its process tree) at every sample, and its peak (Linux ``VmHWM``: the kernel's
high-water mark, exact, not sampled) read at the end.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from mediavec.settings import Settings
from mediavec.status import look

logger = logging.getLogger(__name__)
MB = 1024 * 1024


@dataclass(frozen=True)
class Sample:
    at: float  # time.time()
    lag: dict[str, int]  # stage -> messages behind
    rss_mb: dict[str, float]  # stage (and "loadgen", "mediaserver") -> resident MB


def _tree(pid: int, children: bool = True) -> list[psutil.Process]:
    try:
        proc = psutil.Process(pid)
        return [proc, *proc.children(recursive=True)] if children else [proc]
    except psutil.NoSuchProcess:
        return []


def rss_mb(pid: int, children: bool = True) -> float:
    """Resident MB of ``pid`` (and its children) now; 0 for a process that is gone."""
    total = 0
    for proc in _tree(pid, children):
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / MB


def peak_rss_mb(pid: int, children: bool = True) -> float:
    """The kernel's high-water mark of resident memory (``VmHWM``), summed over ``pid``'s tree."""
    total_kb = 0
    for proc in _tree(pid, children):
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                total_kb += int(line.split()[1])
    return total_kb / 1024


@dataclass
class Monitor:
    """Samples every ``interval_s`` until stopped; ``pids`` maps a name (stage) to its process id.

    Names in ``alone`` are measured without their children (the load generator's children are
    the stages and the media server, measured on their own).
    """

    settings: Settings
    pids: dict[str, int]
    interval_s: float = 5.0
    alone: frozenset[str] = frozenset({"loadgen"})
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Monitor:
        self._thread = threading.Thread(target=self._run, name="load-monitor", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                self.samples.append(self.sample())
            except Exception:  # a failed look must not end the run; the gap shows in the series
                logger.exception("load monitor: sample failed")
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - began)))

    def sample(self) -> Sample:
        lag = {g.stage: g.lag for g in look(self.settings) if g.stage in self.pids}
        rss = {name: rss_mb(pid, name not in self.alone) for name, pid in self.pids.items()}
        return Sample(time.time(), lag, rss)

    def peaks(self) -> dict[str, float]:
        return {name: peak_rss_mb(pid, name not in self.alone) for name, pid in self.pids.items()}

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
