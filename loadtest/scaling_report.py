"""The scaling curve's figures and its BENCHMARKS.md section: a table of k -> items/s, and the limit seen."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from consumers.registry import EMBED, FETCH

UNITS = {FETCH.name: "media/s", EMBED.name: "frames/s"}
LINEAR = 0.8  # speed-up / k at or above this: still scaling
BUSY = 0.85  # machine CPU share at or above this: the cores are the limit
ONE_CORE = 0.9  # a single-threaded process (the load server) at this many cores is saturated
NOT_QUIET = 0.5  # cores busy outside the run above which the verdict says the machine was shared


@dataclass(frozen=True)
class Point:
    """One stage drained by ``workers`` processes."""

    stage: str
    workers: int
    partitions: int  # of the stage's input topic
    items: int  # inputs published before the workers started
    outputs: int  # counted afterwards: frames (fetch), vector batches (embed)
    dead_letters: int
    window_items: int  # inputs committed inside the timed window
    seconds: float
    machine_busy: float  # share of all cores busy in the window
    cores: dict[str, float] = field(default_factory=dict)  # role -> cores used in the window
    note: str = ""  # the window's caveat, when it has one

    @property
    def rate(self) -> float:
        return self.window_items / self.seconds if self.seconds > 0 else 0.0


def speedup(point: Point, points: Sequence[Point]) -> float | None:
    """Rate against the same stage's run with one worker (None without one)."""
    one = next((p for p in points if p.stage == point.stage and p.workers == 1), None)
    return point.rate / one.rate if one is not None and one.rate > 0 else None


def limit(stage: str, points: Sequence[Point], cpus: int) -> str:
    """One line naming what limited ``stage`` at its largest k, from the speed-up and the CPU figures."""
    mine = sorted((p for p in points if p.stage == stage), key=lambda p: p.workers)
    if not mine:
        return f"{stage}: not measured"
    top = mine[-1]
    up = speedup(top, points)
    got = f"{up:.2f}x at k={top.workers}" if up is not None else f"{top.rate:.1f} {UNITS[stage]} at k={top.workers}"
    busy = f"machine {top.machine_busy:.0%} busy of {cpus} cores"
    if others(top, cpus) >= NOT_QUIET:
        busy += f", {others(top, cpus):.1f} of them by other processes: not a quiet machine"
    if top.workers > top.partitions:
        return f"{stage}: {got}: the partitions ({top.partitions}): {top.workers - top.partitions} workers idle"
    if up is not None and up >= LINEAR * top.workers:
        return f"{stage}: {got}, {up / top.workers:.0%} of linear: no limit reached up to k={top.workers} ({busy})"
    if top.machine_busy >= BUSY:
        return f"{stage}: {got}: the cores ({busy})"
    server = top.cores.get("load server", 0.0)
    if server >= ONE_CORE:
        return f"{stage}: {got}: the load server (one process, {server:.2f} cores; {busy})"
    broker = top.cores.get("broker")
    if broker is not None:
        return (
            f"{stage}: {got}: not the cores ({busy}); the broker used {broker:.2f} cores: likely the broker "
            "or the group's balance over the partitions"
        )
    return f"{stage}: {got}: not the cores ({busy}); the broker's CPU is not known (--no-stack)"


def others(p: Point, cpus: int) -> float:
    """Cores the machine spent on processes outside the run (the broker too, when it is not the run's own)."""
    return max(0.0, p.machine_busy * cpus - sum(p.cores.values()))


def _cores(p: Point, cpus: int) -> str:
    order = ("workers", "broker", "load server", "harness")
    used = [f"{role} {p.cores[role]:.2f}" for role in order if role in p.cores]
    return ", ".join([*used, f"other {others(p, cpus):.2f}"])


def summary(points: Sequence[Point]) -> list[str]:
    """k -> each stage's rate, speed-up and the machine's CPU use: the curve itself."""
    stages = list(dict.fromkeys(p.stage for p in sorted(points, key=lambda p: p.stage != FETCH.name)))
    head = "| k (processes) | " + " | ".join(f"{s} {UNITS[s]} | speed-up | machine CPU" for s in stages) + " |"
    rows = [head, "| ---: |" + " ---: | ---: | ---: |" * len(stages)]
    by = {(p.stage, p.workers): p for p in points}
    for k in sorted({p.workers for p in points}):
        cells = []
        for s in stages:
            p = by.get((s, k))
            up = speedup(p, points) if p is not None else None
            cells += ["-", "-", "-"] if p is None else [f"**{p.rate:.1f}**", _times(up), f"{p.machine_busy:.0%}"]
        rows.append(f"| {k} | " + " | ".join(cells) + " |")
    return rows


def _times(up: float | None) -> str:
    return f"{up:.2f}x" if up is not None else "-"


def details(points: Sequence[Point], cpus: int) -> list[str]:
    """Per measurement: inputs, the timed part, and the cores each process group used."""
    rows = [
        "| stage | k | inputs | timed | seconds | items/s "
        "| cores used: workers, broker, load server, harness, other processes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for p in sorted(points, key=lambda p: (p.stage != FETCH.name, p.workers)):
        mark = f" ({p.note})" if p.note else ""
        rows.append(
            f"| {p.stage} | {p.workers} | {p.items:,} | {p.window_items:,}{mark} | {p.seconds:.1f} | "
            f"{p.rate:.1f} {UNITS[p.stage]} | {_cores(p, cpus)} |"
        )
    return rows


def problems(points: Sequence[Point]) -> list[str]:
    """Runs whose outputs do not match their inputs (an embed input gives one vector batch: scene only)."""
    return [
        f"{p.stage} k={p.workers}: {p.outputs:,} outputs and {p.dead_letters:,} dead letters for {p.items:,} inputs"
        for p in points
        if p.outputs != p.items or p.dead_letters
    ]


def section(points: Sequence[Point], command: str, machine: str, cpus: int, broker: str) -> str:
    lines = [
        "## Scaling curve: fetch and embed against worker processes (issue 18)",
        "",
        f"`{command}` on {machine}; {broker}. Each measurement drains topics of its own with k worker "
        "processes. Fetch: distinct photos from the loopback load server (no added latency, no bandwidth "
        "cap, the load test's fetch settings in each process), published in one burst once the k workers "
        "joined, downloaded and decoded to frames. Embed: real JPEG frames produced beforehand, through a "
        "**no-op model** (`loadtest.noop_embed`: constant unit vectors, no preprocessing, no forward pass), "
        "everything else real (batches, decode, thumbnails, fp16 packing, Avro, transactions). Timed by the "
        "group's committed offsets over the steady part of the drain: from the first look with all k "
        "members and 10 % of the inputs committed to the first look with 90 % (start-up, joins, the "
        "pipeline filling and the idle tail left out); the CPU figures cover the same window.",
        "",
        *summary(points),
        "",
        "Limit seen:",
        "",
        *(f"- {limit(stage, points, cpus)}" for stage in dict.fromkeys(p.stage for p in points)),
        "",
        *details(points, cpus),
    ]
    bad = problems(points)
    if bad:
        lines += ["", "Outputs not as expected: " + "; ".join(bad) + "."]
    return "\n".join(lines) + "\n"
