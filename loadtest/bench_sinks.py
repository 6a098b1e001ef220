"""Each sink's absorb rate next to the embed stage's output rate, in one run (goal: sink >= 10x).

The sinks get the same polls: 128 vector batches of 1-30 rows (a scene vector plus objects),
512-d fp16, through ``split`` + ``write`` exactly as the sink runner calls them (decode, store,
record offsets, durable). The embed rate is the in-memory embed of real photos at batch 64,
one scene vector per frame, on this machine (the ceiling of the embed stage here).

    .venv/bin/mediavec dev up && .venv/bin/python -m loadtest.bench_sinks

Also the pieces :mod:`loadtest.bench_sinks_scale` shares: the sinks by name, their settings in
a scratch directory, and the polls of one worker that owns a share of the partitions.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from consumers.registry import SINK_ENCRYPTED, SINK_POSTGRES, SINK_QDRANT
from consumers.sink_encrypted.sink import EncryptedSink
from consumers.sink_postgres.sink import PostgresSink
from consumers.sink_qdrant.sink import QdrantSink
from devstack import stack
from devstack.settings import load_dev_settings
from loadtest.bench_postgres import Poll, make_polls, n_rows, scratch_database
from loadtest.bench_postgres import _batch as vector_batch
from mediavec.settings import Settings
from stores.encindex.keys import generate_key, write_key_file
from streams.sink_runner import StoreSink

__all__ = ["SINKS", "Poll", "make_sink", "scratch_settings", "server_request_us", "worker_polls"]

SINKS: dict[str, Callable[[Settings], StoreSink]] = {
    SINK_QDRANT.name: QdrantSink,
    SINK_POSTGRES.name: PostgresSink,
    SINK_ENCRYPTED.name: EncryptedSink,
}


def make_sink(name: str, settings: Settings) -> StoreSink:
    return SINKS[name](settings)


def scratch_settings(settings: Settings, data_dir: Path, key_file: Path) -> Settings:
    """``settings`` with embedded stores under ``data_dir`` and the encrypted index keyed by ``key_file``."""
    if not key_file.exists():
        write_key_file(key_file, generate_key())
    enc = settings.encindex.model_copy(update={"key_file": key_file, "key_env": None, "path": None})
    qdrant = settings.qdrant.model_copy(update={"path": None, "url": None})
    return settings.model_copy(update={"data_dir": data_dir, "encindex": enc, "qdrant": qdrant})


def worker_polls(
    topic: str, worker: int, workers: int, n_polls: int, batch: int, dim: int, partitions: int
) -> tuple[list[Poll], list[list[str]]]:
    """The polls of worker ``worker`` of ``workers``, which owns the partitions p with p % workers == worker.

    Each poll holds ``batch`` encoded vector batches (1-30 rows) spread over the worker's
    partitions, with the next offsets of all of them; media ids name the topic and the worker, so
    no two workers (or runs on other topics) write the same point. Returns the polls and the point
    ids of each poll.
    """
    from schemas import encode_vector_batch
    from streams.stage import InputRecord

    owned = [p for p in range(partitions) if p % workers == worker]
    if not owned:
        raise ValueError(f"worker {worker} of {workers} owns none of {partitions} partitions")
    rng = np.random.default_rng(worker)
    start_ms = int(time.time() * 1000)
    offset = dict.fromkeys(owned, 0)
    polls: list[Poll] = []
    ids: list[list[str]] = []
    for p in range(n_polls):
        records, poll_ids = [], []
        for i in range(batch):
            part = owned[i % len(owned)]
            media = f"{topic}-w{worker}-{p}-{i}"
            vb = vector_batch(rng, media, int(rng.integers(1, 31)), dim)
            poll_ids += [row.point_id for row in vb.rows]
            value = encode_vector_batch(vb)
            records.append(InputRecord(topic, part, offset[part], media.encode(), value, timestamp_ms=start_ms + p))
            offset[part] += 1
        polls.append((records, {(topic, q): offset[q] for q in owned}))
        ids.append(poll_ids)
    return polls, ids


def server_request_us(polls: list[Poll]) -> float:
    """CPU microseconds per vector that sink-qdrant spends on its upserts' bodies for a Qdrant server.

    The steps of ``ServerStore.upsert`` up to the wire (group, check, float lists, ``models.Batch``),
    and qdrant-client's REST encoding of it, without a server (none runs here): the share of a
    server write that the sink's own core pays, on top of decoding.
    """
    from qdrant_client import models
    from qdrant_client.http.api.points_api import jsonable_encoder

    from consumers.sink_qdrant.transform import points_from_batches
    from schemas import decode_vector_batch
    from stores.vectorstore.base import canonical_ids, check_batch

    decoded = [[decode_vector_batch(r.value) for r in records] for records, _ in polls]
    started, vectors = time.process_time(), 0
    for batches in decoded:
        for g in points_from_batches(batches).values():
            rows = check_batch(g.ids, g.vectors, g.payloads, g.dim).tolist()
            batch = models.Batch(ids=canonical_ids(g.ids), vectors=rows, payloads=g.payloads)
            jsonable_encoder(models.PointsBatch(batch=batch))
            vectors += len(g.ids)
    return (time.process_time() - started) / vectors * 1e6


def absorb_rate(sink: StoreSink, polls: list[Poll]) -> float:
    sink.start()
    try:
        t0 = time.perf_counter()
        for records, offsets in polls:
            good, bad = sink.split(records)
            assert not bad, bad[0][1].reason
            sink.write(good, offsets)
        return n_rows(polls) / (time.perf_counter() - t0)
    finally:
        sink.close()


def embed_rate(settings: Settings, n: int) -> tuple[float, str]:
    from consumers.embed.stage import embed_frames_in_memory  # torch: not in the scale benchmark's workers
    from loadtest.bench_embed import make_frames
    from models.clip import ClipEmbedder

    model = (
        settings.model.model_copy(update={"allow_random_weights": True})
        if settings.model.model_dir is None
        else settings.model
    )
    embedder = ClipEmbedder.load(model)
    frames = make_frames(settings, n)
    embed_frames_in_memory(embedder, frames[:16], 16)  # warm-up
    t0 = time.perf_counter()
    embed_frames_in_memory(embedder, frames, 64)
    return n / (time.perf_counter() - t0), embedder.model_id


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--polls", type=int, default=10)
    ap.add_argument("--frames", type=int, default=128)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    from loadtest.report import machine, write_section

    logging.basicConfig(level=logging.WARNING)
    base = load_dev_settings()
    stack.up(base)
    polls = make_polls(args.polls, 128, 512)
    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, scratch_database(base) as pg:
        s = scratch_settings(pg, Path(tmp), Path(tmp) / "index.key")
        for name, sink in SINKS.items():
            label = f"{name} (edge, embedded)" if name == SINK_QDRANT.name else name
            rates[label] = absorb_rate(sink(s), polls)
    embed, model = embed_rate(base, args.frames)
    rows = "".join(f"| {name} | {rate:,.0f} | {rate / embed:,.0f}x |\n" for name, rate in rates.items())
    body = (
        "## Sinks vs the embed stage (issue: exactly-once into three stores)\n\n"
        f"`python -m loadtest.bench_sinks` on {machine()}: {n_rows(polls):,} vectors in {args.polls} polls of 128 "
        "vector batches (1-30 rows, 512-d fp16), split + write as the runner calls them, durable.\n\n"
        f"| path | vectors/s | vs embed |\n| --- | ---: | ---: |\n"
        f"| embed stage output, in memory ({model}, batch 64, CPU) | {embed:,.1f} | 1x |\n{rows}\n"
        "Goal: every sink >= 10x the embed stage's output on the same machine.\n"
    )
    print(body)
    if not args.no_write:
        write_section("bench_sinks", body)


if __name__ == "__main__":
    main()
