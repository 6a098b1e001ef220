"""Where one fetch and one embed worker spend their CPU: py-spy samples, grouped by phase.

Runs :mod:`loadtest.scaling`'s measurements at one worker process (the fetch stage on the
loopback load server's photos; the embed stage with the no-op model of :mod:`loadtest.noop_embed`,
so the pipeline's own work is all there is) on a broker of its own, with ``py-spy record``
attached to the worker for its whole life. Idle threads are not sampled, so the shares are of the
CPU the worker used. Each sample is put in the first phase (:data:`FETCH_PHASES`,
:data:`EMBED_PHASES`) one of its frames belongs to, from the leaf up; what matches none is "other".

    .venv/bin/python -m loadtest.profile_workers                 # about 2 minutes on 2 cores
    .venv/bin/python -m loadtest.profile_workers --stages embed --frames 4000 --no-write

Writes the "Worker profiles" section of BENCHMARKS.md (``--no-write`` to skip) with the rate
of each run; ``--raw DIR`` keeps py-spy's collapsed stacks for a flame graph.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import psutil

from consumers.registry import EMBED, FETCH
from loadtest.bench_embed import make_frames
from loadtest.load.harness import media_server, prepare_media
from loadtest.load.publisher import MediaSet
from loadtest.report import machine, positive_int, write_section
from loadtest.scaling import FRAME_POOL, Plan, Run, measure_embed, measure_fetch, own_broker, run_settings
from mediavec.settings import load_settings

logger = logging.getLogger(__name__)
SECTION = "worker_profiles"
Phases = tuple[tuple[str, tuple[str, ...]], ...]
_KAFKA_OUT = (
    "TransactionalLoop._produce",
    "TransactionalLoop._commit",
    "TransactionalLoop._abort",
    "streams/errors.py",
)
Shares = list[tuple[str, float]]
# (phase, substrings of a frame "function (file:line)"), most specific first: a sample counts once.
FETCH_PHASES: Phases = (
    ("decode: source JPEG read as is (1/8 scale)", ("_verify (media/decode.py",)),
    ("decode: re-encode JPEG", ("_encode_jpeg (media/decode.py",)),
    ("decode: resize to the bound", ("_bound (media/decode.py",)),
    ("decode: full decode, orientation, colour", ("decode_image (media/decode.py",)),
    ("download (aiohttp, address guard)", ("media/download.py",)),
    ("dedup table (seen keys)", ("consumers/fetch/dedup.py", "streams/table.py", "streams/kvtable.py")),
    ("Avro encode", ("schemas/codec.py",)),
    ("produce, commit (librdkafka, transactions)", _KAFKA_OUT),
    ("event loop, thread hand-offs", ("asyncio/", "concurrent/futures", "streams/loopthread.py")),
    (
        "poll, batching (runner)",
        ("PipelinedRunner._poll", "PipelinedRunner._add", "PipelinedRunner._apply_backpressure"),
    ),
)
START_UP = "start-up (imports, building the worker)"
WAITING = "waiting"  # a thread blocked on a lock, a queue or a selector: idle, though py-spy sampled it
_WAITS = (
    "Condition.wait",
    "Event.wait",
    "EpollSelector.select",
    "_worker (concurrent/futures/thread.py:81)",  # a pool thread's queue.get
    "GlobalTable._follow (streams/table.py",  # the seen table's follower inside consume(timeout=0.2)
)
EMBED_PHASES: Phases = (
    ("no-op model", ("NoopEmbedder.embed", "NoopEmbedder.preprocess")),
    ("thumbnail JPEG", ("thumbnail_jpeg",)),
    ("JPEG decode", ("decode_scaled (consumers/embed/stage.py",)),
    ("Avro decode (frames)", ("decode_frame",)),
    ("Avro encode, fp16 packing (vectors)", ("encode_vector_batch", "VectorWriter.")),
    ("batch assembly (pipeline, queues)", ("consumers/embed/pipeline.py", "consumers/embed/queues.py")),
    ("produce, commit (librdkafka, transactions)", _KAFKA_OUT),
    ("poll, batching (runner)", ("streams/batching.py",)),
)


@dataclass(frozen=True)
class Profile:
    stage: str
    rate: float  # items/s over the drain's steady window
    items: int
    samples: int
    phases: Shares  # (phase, share of samples), largest first, "other" last
    top: Shares  # (function, share of samples as the leaf)


class Spy:
    """``py-spy record`` attached to the first child process whose command line holds ``marker``."""

    def __init__(self, marker: str, out: Path) -> None:
        self.marker, self.out = marker, out
        self._thread = threading.Thread(target=self._run, name="py-spy", daemon=True)
        self.error: str | None = None

    def __enter__(self) -> Spy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(60)

    def _run(self) -> None:
        pid = self._find(deadline=time.monotonic() + 120)
        if pid is None:
            self.error = f"no worker process matching {self.marker!r} started"
            return
        cmd = [_py_spy(), "record", "--pid", str(pid), "--format", "raw", "--rate", "100", "-o", str(self.out)]
        done = subprocess.run(cmd, capture_output=True, text=True)  # returns when the worker exits
        if not self.out.exists():
            self.error = f"py-spy wrote nothing: {done.stderr.strip()[-300:]}"

    def _find(self, deadline: float) -> int | None:
        me = psutil.Process()
        while time.monotonic() < deadline:
            for child in me.children(recursive=True):
                try:
                    if self.marker in " ".join(child.cmdline()):
                        return child.pid
                except psutil.Error:
                    continue
            time.sleep(0.05)
        return None


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise RuntimeError("py-spy is not installed (it is a dev dependency: pip install -e '.[dev]')")
    return found


def grouped(raw: Path, phases: Phases) -> tuple[int, Shares, Shares]:
    """(samples after start-up, phase shares, leaf function shares) of py-spy's collapsed stacks.

    Start-up (imports, building the stage) is left out: it is paid once per process, not per item;
    so are samples of threads that were only waiting (py-spy takes some of them for busy).
    """
    by_phase: Counter[str] = Counter()
    by_leaf: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")[1:]  # the first is the thread
        phase = _phase(frames, phases)
        by_phase[phase] += int(count)
        if phase not in (START_UP, WAITING):
            by_leaf[frames[-1] if frames else "?"] += int(count)
    by_phase.pop(START_UP, None)
    by_phase.pop(WAITING, None)
    total = sum(by_phase.values())
    if total == 0:
        raise RuntimeError(f"py-spy recorded no samples after start-up in {raw}")
    shares = sorted(((p, c / total) for p, c in by_phase.items() if p != "other"), key=lambda x: -x[1])
    shares.append(("other", by_phase["other"] / total))
    return total, shares, [(f, c / total) for f, c in by_leaf.most_common(8)]


def _phase(frames: list[str], phases: Phases) -> str:
    if any(f.startswith(("_find_and_load", "build (", "EmbedStage.start", "FetchStage.start")) for f in frames):
        return START_UP
    if frames and frames[-1].startswith(_WAITS):
        return WAITING
    for frame in reversed(frames):  # the leaf first: the innermost phase wins
        for name, needles in phases:
            if any(needle in frame for needle in needles):
                return name
    return "other"


def profile(stage: str, args: argparse.Namespace, work: Path) -> Profile:
    """One worker of ``stage`` drained under py-spy on a broker of its own."""
    raw = work / f"{stage}.txt"
    plan = Plan(workers=(1,), stages=(stage,), media_per_worker=args.media, frames_per_worker=args.frames)
    with own_broker(work / "broker") as (conn, pid):
        run = Run(run_settings(load_settings(), conn, work / "data"), plan, work, broker_pid=pid)
        marker = "run fetch" if stage == FETCH.name else "loadtest.noop_embed"
        with Spy(marker, raw) as spy:
            if stage == FETCH.name:
                images, _, _ = prepare_media(work / "media", with_video=False)
                with media_server(work / "media") as (url, server_pid):
                    point = measure_fetch(run, 1, MediaSet(url, images), server_pid)
            else:
                point = measure_embed(run, 1, make_frames(run.settings, FRAME_POOL))
    if spy.error:
        raise RuntimeError(spy.error)
    samples, phases, top = grouped(raw, FETCH_PHASES if stage == FETCH.name else EMBED_PHASES)
    if args.raw:
        args.raw.mkdir(parents=True, exist_ok=True)
        shutil.copy(raw, args.raw / raw.name)
    return Profile(stage, point.rate, point.items, samples, phases, top)


def section(profiles: list[Profile], command: str) -> str:
    lines = [
        "## Worker profiles: where one fetch and one embed worker spend their CPU (issue 19)\n",
        f"`{command}` on {machine()}: one worker process each, on a broker of its own; py-spy at 100 Hz, "
        "idle threads and start-up not counted, so shares are of the CPU the worker used on its items. "
        "The embed worker runs the "
        "no-op model (`loadtest.noop_embed`): everything but the forward pass is real.\n",
    ]
    for p in profiles:
        unit = "media/s" if p.stage == FETCH.name else "frames/s"
        lines += [
            f"**{p.stage}**: {p.rate:,.1f} {unit} ({p.items:,} items, {p.samples:,} samples)\n",
            "| phase | share of the worker's CPU |\n| --- | ---: |",
            *(f"| {name} | {share:.1%} |" for name, share in p.phases),
            "",
            "Hottest functions (self time): " + "; ".join(f"`{f}` {s:.1%}" for f, s in p.top[:5]) + "\n",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stages", nargs="+", choices=(FETCH.name, EMBED.name), default=[FETCH.name, EMBED.name])
    ap.add_argument("--media", type=positive_int, default=3000, help="fetch: requests drained")
    ap.add_argument("--frames", type=positive_int, default=8000, help="embed: frames drained")
    ap.add_argument("--raw", type=Path, help="keep py-spy's collapsed stacks here")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = ap.parse_args(argv)
    if not args.no_write and set(args.stages) != {FETCH.name, EMBED.name}:
        # the section holds both profiles: writing one would drop the other
        ap.error("--stages: BENCHMARKS.md keeps both stages' profiles in one section; profile both or add --no-write")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        with tempfile.TemporaryDirectory(prefix="mediavec-profile-") as tmp:
            profiles = [profile(stage, args, Path(tmp) / stage) for stage in args.stages]
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    command = "python -m loadtest.profile_workers " + " ".join(sys.argv[1:] if argv is None else argv)
    body = section(profiles, command.strip())
    print(body)
    if not args.no_write:
        write_section(SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
