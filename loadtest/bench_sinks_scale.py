"""Sinks at GPU rates (issue 19, part 4): each sink with 1..N worker processes on one machine.

Worker w of N owns the partitions p with p % N == w and writes pre-built polls of them into the
real store through ``split`` + ``write``, as the sink runner calls them (decode, store, record
offsets, durable). Workers start, build their polls, open their sink and write one poll (warm-up)
before the clock, which runs from all-released to all-done; CPU seconds are counted too (the
worker's threads and finished children, its PostgreSQL backend, and its split/write thread alone).
Every store is then read back: each vector exactly once (count and ids), the last poll's offsets.

Stores: sink-postgres, one database for all workers (each locks only its partitions' offset rows);
sink-qdrant (embedded) and sink-encrypted, one store directory per worker: an embedded store has
one writer process (a second is refused with StoreLockedError), so N workers are N stores, which
searches do not merge. The multi-writer Qdrant is a server by URL, which does not run here: for it,
the sink's side of a write (building qdrant-client's REST body) is measured without sending it.

    .venv/bin/mediavec dev up && .venv/bin/python -m loadtest.bench_sinks_scale   # ~4 minutes on 2 cores

Writes the "Sinks at GPU rates" section of BENCHMARKS.md (``--no-write`` to skip).
"""

from __future__ import annotations

import argparse
import logging
import math
import multiprocessing as mp
import os
import queue
import resource
import tempfile
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consumers.registry import SINK_POSTGRES, SINK_QDRANT
from loadtest.bench_sinks import SINKS, Poll, make_sink, scratch_settings, server_request_us, worker_polls
from mediavec.settings import Settings
from streams.offsets import Offsets

logger = logging.getLogger(__name__)

GOAL = 60_000  # vectors/s: twice the GPU stage's aim of 30,000 (issue 19)
# sink-postgres absorbs about five times what the embedded stores do: its runs get more polls, so that
# each lasts seconds rather than one.
POLL_FACTOR = {SINK_POSTGRES.name: 3}
WAIT_S = 600.0  # the longest a worker may take to get ready, or to finish


@dataclass(frozen=True)
class Job:
    """One worker process's share of a (sink, worker count) run."""

    sink: str
    settings: Settings
    topic: str
    worker: int
    workers: int
    polls: int  # timed polls, after one warm-up poll
    batch: int
    dim: int
    partitions: int


@dataclass(frozen=True)
class Written:
    """What one worker wrote: its timed vectors, every point id (warm-up included), its last offsets,
    and the CPU seconds the timed writes took in the worker and in its database server process."""

    timed_vectors: int
    ids: list[str]
    offsets: Offsets
    cpu_s: float
    server_cpu_s: float
    thread_cpu_s: float  # of the thread that calls split and write (the GIL's holder)


@dataclass(frozen=True)
class ScaleResult:
    sink: str
    workers: int
    vectors: int  # timed, all workers
    seconds: float  # wall clock from all released to all done
    stored: int  # vectors read back from the store(s), warm-up polls included
    cpu_s: float  # the workers' CPU seconds (their threads and finished child processes)
    server_cpu_s: float  # PostgreSQL's backends serving the workers (0 for the embedded stores)
    thread_cpu_s: float  # the workers' threads that call split and write

    @property
    def rate(self) -> float:
        return self.vectors / self.seconds

    @property
    def per_cpu_s(self) -> float:
        """Vectors per CPU second, store server included: the rate one busy core sustains."""
        return self.vectors / (self.cpu_s + self.server_cpu_s)

    @property
    def per_thread_cpu_s(self) -> float:
        """Vectors per CPU second of the sink's own thread: one worker's ceiling, given cores for the rest."""
        return self.vectors / self.thread_cpu_s


class NotExactlyOnce(AssertionError):
    """A store holds other than every written vector once, or other offsets than the last poll's."""


def _worker(job: Job, out: Any, go: Any) -> None:
    """One sink worker process: build its polls, open the sink, warm up, say ready; on ``go`` write."""
    logging.basicConfig(level=logging.WARNING)
    try:
        args = (job.worker, job.workers, job.polls + 1, job.batch, job.dim, job.partitions)
        polls, ids = worker_polls(job.topic, *args)
        sink = make_sink(job.sink, job.settings)
        sink.start()
        try:
            _write(sink, polls[:1])
            out.put(("ready", job.worker, None))
            server = sink.conn.info.backend_pid if job.sink == SINK_POSTGRES.name else None  # type: ignore[attr-defined]
            if not go.wait(WAIT_S):
                raise TimeoutError("never released")
            cpu0, server0, thread0 = _cpu_s(), _process_cpu_s(server), time.thread_time()
            _write(sink, polls[1:])
            cpu, server_cpu = _cpu_s() - cpu0, _process_cpu_s(server) - server0
            thread_cpu = time.thread_time() - thread0
            timed = sum(len(poll_ids) for poll_ids in ids[1:])
            every_id = [i for poll_ids in ids for i in poll_ids]
            out.put(("done", job.worker, Written(timed, every_id, polls[-1][1], cpu, server_cpu, thread_cpu)))
        finally:
            sink.close()
    except BaseException:
        out.put(("error", job.worker, traceback.format_exc()))


def _write(sink: Any, polls: list[Poll]) -> None:
    for records, offsets in polls:
        good, bad = sink.split(records)
        if bad:
            raise RuntimeError(f"{len(bad)} records refused: {bad[0][1].reason}")
        sink.write(good, offsets)


def _cpu_s() -> float:
    """CPU seconds of this process's threads and of its children that finished (index builds)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _process_cpu_s(pid: int | None) -> float:
    """CPU seconds of another process on this machine (a PostgreSQL backend); 0 when unknown."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime, in ticks


def _await(out: Any, kind: str, n: int, procs: list[Any]) -> dict[int, Any]:
    """The next ``n`` messages of ``kind`` from the workers; a worker's error or death raises."""
    got: dict[int, Any] = {}
    deadline = time.monotonic() + WAIT_S
    while len(got) < n:
        try:
            what, worker, value = out.get(timeout=1.0)
        except queue.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"sink workers failed (exit codes {dead}) or timed out") from None
            continue
        if what == "error":
            raise RuntimeError(f"sink worker {worker} failed:\n{value}")
        if what == kind:
            got[worker] = value
    return got


def worker_settings(sink: str, settings: Settings, root: Path, workers: int, worker: int) -> Settings:
    """Where worker ``worker`` writes: the shared database, or an embedded store directory of its own."""
    key = root / "index.key"
    if sink == SINK_POSTGRES.name:
        return scratch_settings(settings, root / "postgres", key)
    return scratch_settings(settings, root / f"{sink}-{workers}w-{worker}", key)


def run_scale(
    settings: Settings,
    sink: str,
    workers: int,
    *,
    polls: int,
    batch: int,
    dim: int,
    partitions: int,
    root: Path,
    topic: str | None = None,
) -> ScaleResult:
    """``workers`` processes write ``polls`` timed polls between them into ``sink``'s store; checked after.

    ``topic`` names the records' topic (default: one of its own per run, so runs never share a point).
    """
    topic = topic or f"bench.vectors.{workers}w.{uuid.uuid4().hex[:8]}"
    per_worker = max(1, polls // workers)
    shape = (per_worker, batch, dim, partitions)
    jobs = [
        Job(sink, worker_settings(sink, settings, root, workers, w), topic, w, workers, *shape) for w in range(workers)
    ]
    ctx = mp.get_context("spawn")  # no Kafka client, store handle or thread state crosses a fork
    out, go = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_worker, args=(job, out, go), name=f"{sink}-{job.worker}") for job in jobs]
    for p in procs:
        p.start()
    try:
        _await(out, "ready", workers, procs)
        started = time.perf_counter()
        go.set()
        written = _await(out, "done", workers, procs)
        seconds = time.perf_counter() - started
    except BaseException:
        for p in procs:  # a worker failed: the others stop where they are, unreleased
            p.kill()
        raise
    finally:
        for p in procs:
            p.join(60)
            if p.is_alive():
                p.kill()
    stored = sum(check_exactly_once(sink, job, written[job.worker]) for job in jobs)
    done = written.values()
    cpu, server = sum(w.cpu_s for w in done), sum(w.server_cpu_s for w in done)
    vectors, thread = sum(w.timed_vectors for w in done), sum(w.thread_cpu_s for w in done)
    return ScaleResult(sink, workers, vectors, seconds, stored, cpu, server, thread)


def check_exactly_once(sink: str, job: Job, written: Written) -> int:
    """Read worker ``job``'s vectors back: each exactly once, and its last offsets recorded. The count."""
    consumer = make_sink(sink, job.settings)
    owned = [p for p in range(job.partitions) if p % job.workers == job.worker]
    if sink == SINK_POSTGRES.name:
        ids, offsets = _postgres_ids(job.settings, job.topic, owned, consumer.consumer_name)  # type: ignore[attr-defined]
    else:
        ids, offsets = _store_ids(sink, job.settings, consumer.consumer_name, written.ids)  # type: ignore[attr-defined]
    if len(ids) != len(written.ids) or set(ids) != set(written.ids) or len(set(written.ids)) != len(written.ids):
        missing, extra = set(written.ids) - set(ids), len(ids) - len(set(ids) & set(written.ids))
        raise NotExactlyOnce(
            f"{sink} worker {job.worker}: {len(ids)} stored of {len(written.ids)} written, "
            f"{len(missing)} missing, {extra} extra"
        )
    mine = {tp: o for tp, o in offsets.items() if tp[0] == job.topic and tp[1] in owned}
    if mine != written.offsets:
        raise NotExactlyOnce(f"{sink} worker {job.worker}: offsets {mine}, expected {written.offsets}")
    return len(ids)


def _postgres_ids(settings: Settings, topic: str, partitions: list[int], consumer: str) -> tuple[list[str], Offsets]:
    """The worker's rows (one database holds every worker's: told apart by their source partitions)."""
    from stores.metadb import connect
    from stores.metadb import writer as db

    query = "SELECT point_id::text FROM frame_metadata WHERE source_topic = %s AND source_partition = ANY(%s)"
    with connect(settings) as conn:
        rows = conn.execute(query, (topic, partitions)).fetchall()
        return [r[0] for r in rows], db.load_offsets(conn, consumer)


def _store_ids(sink: str, settings: Settings, consumer: str, wanted: list[str]) -> tuple[list[str], Offsets]:
    """Every point of the worker's embedded store: counted per collection, the wanted ids looked up."""
    if sink == SINK_QDRANT.name:
        from stores.vectorstore import open_store

        store: Any = open_store(settings)
    else:
        from stores.encindex import open_encrypted_store

        store = open_encrypted_store(settings)
    try:
        found: list[str] = []
        for name in store.collections():
            held = [p.id for p in store.retrieve(name, wanted, with_vectors=False)]
            found += held + ["(unexpected)"] * (store.count(name) - len(held))
        return found, store.load_offsets(consumer)
    finally:
        store.close()


def worker_counts(partitions: int) -> list[int]:
    """1, 2, 4, ... up to twice the cores (what over-subscribing does too), within the partitions."""
    cores = os.cpu_count() or 1
    return [n for n in (2**i for i in range(8)) if n <= min(partitions, max(2, 2 * cores))]


INTRO = """## Sinks at GPU rates (issue 19, part 4)

`{cmd}` on {machine}: per sink and worker count, that many processes, each owning its share of \
{partitions} partitions, write polls of {batch} vector batches (1-30 rows, {dim}-d fp16) through split + write \
as the runner calls them, durable. Wall clock from all released (started, warmed) to all done; CPU seconds of \
the workers (their threads and finished index builds) + of their PostgreSQL backends; per sink-thread CPU s: vectors \
per CPU second of the thread that calls split and write, one worker's ceiling however many cores its store's \
threads get. Every vector was read back exactly once, with the last offsets. sink-qdrant (embedded) and \
sink-encrypted: one store directory per worker (an embedded store has one writer process).

| sink | workers | vectors | wall s | vectors/s | vs 1 worker | CPU s (workers + server) | vectors per CPU s \
| per sink-thread CPU s |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
"""


def report(
    results: list[ScaleResult], partitions: int, batch: int, dim: int, cmd: str, server_us: float | None = None
) -> str:
    from loadtest.report import machine

    cores = os.cpu_count() or 1
    one = {r.sink: r.rate for r in results if r.workers == 1}
    rows = [
        f"| {r.sink} | {r.workers} | {r.vectors:,} | {r.seconds:.2f} | {r.rate:,.0f} | "
        + (f"{r.rate / one[r.sink]:.2f}x" if r.sink in one else "-")
        + f" | {r.cpu_s:.1f} + {r.server_cpu_s:.1f} | {r.per_cpu_s:,.0f} | {r.per_thread_cpu_s:,.0f} |"
        for r in results
    ]
    intro = INTRO.format(cmd=cmd, machine=machine(), partitions=partitions, batch=batch, dim=dim)
    return (
        intro
        + "\n".join(rows)
        + "\n\n"
        + summary(results, cores)
        + "\n"
        + (_server_line(server_us) if server_us else "")
    )


def summary(results: list[ScaleResult], cores: int) -> str:
    """Per sink: the best aggregate, its rate per CPU second over all runs, the cores that reach the goal."""
    out = [
        f"Goal: {GOAL:,} vectors/s per sink on one machine (twice the GPU stage's aim); this machine has {cores} cores."
    ]
    for sink in dict.fromkeys(r.sink for r in results):
        runs = [r for r in results if r.sink == sink]
        best = max(runs, key=lambda r: r.rate)
        vectors = sum(r.vectors for r in runs)
        per_core = vectors / sum(r.cpu_s + r.server_cpu_s for r in runs)
        per_thread = vectors / sum(r.thread_cpu_s for r in runs)
        verdict = "reached" if best.rate >= GOAL else "not reached here"
        out.append(
            f"- {sink}: best {best.rate:,.0f} vectors/s ({_workers(best.workers)}), {verdict}; "
            f"{per_core:,.0f} vectors per CPU second, so {math.ceil(GOAL / per_core)} busy cores for {GOAL:,}; "
            f"one worker's ceiling {per_thread:,.0f}, so {_workers(math.ceil(GOAL / per_thread))} or more."
        )
    return "\n".join(out)


def _workers(n: int) -> str:
    return f"{n} worker{'s' * (n > 1)}"


def _server_line(us: float) -> str:
    return (
        f"- sink-qdrant to a Qdrant server (MEDIAVEC_QDRANT__URL; none runs here): building the upserts' "
        f"REST bodies alone costs the sink {us:.0f} µs of CPU per vector (qdrant-client), so one sink core "
        f"sends at most {1e6 / us:,.0f} vectors/s before decoding them: {math.ceil(GOAL * us / 1e6)} or more "
        "sink processes (of the vectors topic's partitions) for the goal, with the engine's work on the server.\n"
    )


def _sink_names(text: str) -> list[str]:
    names = text.split(",")
    unknown = [n for n in names if n not in SINKS]
    if unknown:
        raise argparse.ArgumentTypeError(f"no such sink {', '.join(unknown)} (sinks: {', '.join(SINKS)})")
    return names


def main() -> None:
    from devstack import stack
    from devstack.settings import load_dev_settings
    from loadtest.bench_postgres import scratch_database
    from loadtest.report import positive_int, positive_ints, write_section

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--polls", type=positive_int, default=48, help="timed polls per run, shared by its workers (x3 for postgres)"
    )
    ap.add_argument("--batch", type=positive_int, default=128, help="vector batch records per poll")
    ap.add_argument("--dim", type=positive_int, default=512)
    ap.add_argument("--partitions", type=positive_int, default=16, help="of the vectors topic (its default)")
    ap.add_argument("--workers", type=positive_ints, help="e.g. 1,2,4 (default: up to 2x cores)")
    ap.add_argument("--sinks", type=_sink_names, default=list(SINKS), help=f"comma-separated, of {','.join(SINKS)}")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    base = load_dev_settings()
    stack.up(base)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-sinks-scale-") as tmp, scratch_database(base) as pg:
        for sink in args.sinks:
            for n in args.workers or worker_counts(args.partitions):
                results.append(
                    run_scale(
                        pg,
                        sink,
                        n,
                        polls=args.polls * POLL_FACTOR.get(sink, 1),
                        batch=args.batch,
                        dim=args.dim,
                        partitions=args.partitions,
                        root=Path(tmp),
                    )
                )
                print(f"{sink} x{n}: {results[-1].rate:,.0f} vectors/s", flush=True)
    server_us = server_request_us(worker_polls("bench.vectors.server", 0, 1, 8, args.batch, args.dim, 1)[0])
    body = report(results, args.partitions, args.batch, args.dim, "python -m loadtest.bench_sinks_scale", server_us)
    print(body)
    if not args.no_write:
        write_section("bench_sinks_scale", body)


if __name__ == "__main__":
    main()
