"""Encrypted index (cyborgdb-core) write rate through EncryptedSink.write, and shard training time.

1. Sink write rate: frames of 512-d fp16 vectors (a scene and three objects each) encoded as
   the embed stage publishes them, through ``split`` and ``EncryptedSink.write`` as the runner
   calls them, 128 vectors per write (decode, group by space, look ids up in every shard,
   upsert, fsync, save offsets), into a fresh store;
   once with the default shard capacity and once with small shards, where every write also
   looks its ids up in the sealed shards. Baselines in the same run: the raw engine upsert of the
   same vectors and payload bytes (no sink, no lookups, no offsets), and QdrantSink.write.
2. Training: a shard of ``--train-n`` vectors trained on the trainer thread (seconds from start
   to done), alone, then again while the store takes writes (their rate, during and after).

    .venv/bin/python -m loadtest.bench_encindex [--n 51200] [--batch 128] [--dim 512] [--train-n 50000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from consumers.sink_encrypted.sink import EncryptedSink
from consumers.sink_qdrant.sink import QdrantSink
from loadtest.report import machine, write_section
from mediavec.settings import Settings
from schemas import VectorBatch, VectorRow, encode_vector_batch, point_id
from schemas.spaces import SpaceName
from stores.encindex import EncIndexSettings, generate_key, write_key_file
from stores.encindex.config import FREE_TIER_CAP
from stores.encindex.shards import Shard, open_client
from stores.encindex.store import EncryptedStore
from streams.stage import InputRecord

MODEL = "open_clip/bench/random"
ROWS: tuple[SpaceName, ...] = ("scene", "object", "object", "object")


def _records(n: int, dim: int, seed: int = 0) -> list[InputRecord]:
    """n vectors as frame events: one scene and three objects per frame."""
    rng = np.random.default_rng(seed)
    out = []
    for f in range(n // len(ROWS)):
        media = f"bench-{seed}-{f // 8}"
        rows = tuple(
            VectorRow(point_id(MODEL, media, f % 8, space, k), space, media, f % 8, 0.5 * f, k, (0.1, 0.1, 0.6, 0.6))
            for k, space in enumerate(ROWS)
        )
        v = rng.standard_normal((len(ROWS), dim)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        batch = VectorBatch(MODEL, v.astype(np.float16), rows, f"http://127.0.0.1/{media}.mp4", "bench")
        out.append(InputRecord("vectors", 0, f, media.encode(), encode_vector_batch(batch)))
    return out


def _write_all(sink: EncryptedSink | QdrantSink, records: list[InputRecord], per_write: int) -> float:
    """Vectors per second through split + write, as the runner calls them, per_write vectors per call."""
    step = per_write // len(ROWS)
    start = time.perf_counter()
    for lo in range(0, len(records), step):
        good, bad = sink.split(records[lo : lo + step])
        if bad:
            raise SystemExit(f"the sink refused {len(bad)} records: {bad[0][1].reason}")
        sink.write(good, {("vectors", 0): records[min(lo + step, len(records)) - 1].offset + 1})
    return len(records) * len(ROWS) / (time.perf_counter() - start)


def bench_sink(records: list[InputRecord], per_write: int, capacity: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory(prefix="mediavec-bench-") as tmp:
        key_file = Path(tmp) / "index.key"
        write_key_file(key_file, generate_key())
        # No training here (part 2 measures it): the write rate alone.
        enc = EncIndexSettings(key_file=key_file, shard_capacity=capacity, train_min=FREE_TIER_CAP)
        sink = EncryptedSink(Settings(data_dir=Path(tmp)), enc)
        sink.start()
        try:
            rate = _write_all(sink, records, per_write)
            shards = sum(len(sink.store.shards(c)) for c in sink.store.collections())
        finally:
            sink.close()
    return rate, shards


def bench_qdrant(records: list[InputRecord], per_write: int) -> float:
    with tempfile.TemporaryDirectory(prefix="mediavec-bench-") as tmp:
        sink = QdrantSink(Settings(data_dir=Path(tmp)))
        sink.start()
        try:
            return _write_all(sink, records, per_write)
        finally:
            sink.close()


def bench_engine(n: int, dim: int, per_write: int) -> float:
    """The raw engine: upserts of per_write vectors with sink-sized JSON payloads."""
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    ids = [point_id(MODEL, "raw", i, "scene") for i in range(n)]
    payload = json.dumps({"media_id": "raw", "source_url": "http://127.0.0.1/raw.mp4", "space": "scene"}).encode()
    with tempfile.TemporaryDirectory(prefix="mediavec-bench-") as tmp:
        client = open_client(tmp, 0)
        key = generate_key()
        shard = Shard.create(client, "raw", dim, key)
        start = time.perf_counter()
        for lo in range(0, n, per_write):
            chunk = ids[lo : lo + per_write]
            shard.upsert(chunk, vectors[lo : lo + per_write], [payload] * len(chunk))
        return n / (time.perf_counter() - start)


def bench_training(n: int, dim: int, per_write: int, write: bool) -> tuple[float, float, float]:
    """(seconds to train a shard of n vectors on the trainer thread, store write rate meanwhile, after).

    With ``write`` False nothing else runs during the training, and both rates are 0.
    """
    rng = np.random.default_rng(2)
    with tempfile.TemporaryDirectory(prefix="mediavec-bench-") as tmp:
        store = EncryptedStore(Path(tmp), generate_key(), EncIndexSettings(train_min=n))
        try:
            store.ensure_collection("bench", dim)
            for lo in range(0, n, 4096):
                m = min(4096, n - lo)
                v = rng.standard_normal((m, dim)).astype(np.float16)
                store.upsert("bench", [point_id(MODEL, "t", lo + i, "scene") for i in range(m)], v, [{}] * m)
            if store.trainer.wait_started(60) is None:
                raise SystemExit("training did not start")
            start = time.perf_counter()
            during = _writes_while(store, dim, per_write, lambda: store.trainer.current is not None) if write else 0.0
            store.wait_for_training(3600)
            trained_s = time.perf_counter() - start
            if store.shards("bench")[0].training_state != "trained":
                raise SystemExit("the shard did not train")
            deadline = time.perf_counter() + 5
            after = _writes_while(store, dim, per_write, lambda: time.perf_counter() < deadline) if write else 0.0
        finally:
            store.close()
    return trained_s, during, after


def _writes_while(store: EncryptedStore, dim: int, per_write: int, cond: Callable[[], bool]) -> float:
    rng = np.random.default_rng(3)
    written, start, k = 0, time.perf_counter(), 0
    while cond():
        v = rng.standard_normal((per_write, dim)).astype(np.float16)
        ids = [point_id(MODEL, "w", k * per_write + i, "scene") for i in range(per_write)]
        store.upsert("bench", ids, v, [{}] * per_write)
        written, k = written + per_write, k + 1
    return written / max(time.perf_counter() - start, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=51_200, help="vectors written per run")
    parser.add_argument("--batch", type=int, default=128, help="vectors per EncryptedSink.write")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--small-shards", type=int, default=5_000, help="shard capacity of the second run")
    parser.add_argument("--train-n", type=int, default=50_000, help="vectors in the trained shard")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    records = _records(args.n, args.dim)
    engine = bench_engine(args.n, args.dim, args.batch)
    sink, shards = bench_sink(records, args.batch, EncIndexSettings().shard_capacity)
    small, small_shards = bench_sink(records, args.batch, args.small_shards)
    qdrant = bench_qdrant(records, args.batch)
    alone_s, _, _ = bench_training(args.train_n, args.dim, args.batch, write=False)
    trained_s, during, after = bench_training(args.train_n, args.dim, args.batch, write=True)
    lines = [
        f"raw engine upsert: {engine:,.0f} vectors/s",
        f"EncryptedSink.write: {sink:,.0f} vectors/s ({shards} shards; {sink / engine:.2f}x the raw engine)",
        f"EncryptedSink.write, shards of {args.small_shards}: {small:,.0f} vectors/s ({small_shards} shards)",
        f"QdrantSink.write (edge): {qdrant:,.0f} vectors/s (encrypted/qdrant {sink / qdrant:.2f}x)",
        f"training a {args.train_n}-vector {args.dim}-d shard: {alone_s:.1f} s alone; {trained_s:.1f} s while "
        f"the store takes writes at {during:,.0f} vectors/s ({after:,.0f} vectors/s once trained)",
    ]
    for line in lines:
        print(line)
    if not args.no_write:
        write_section(
            "bench_encindex",
            "## Encrypted index write rate and training (issue: exactly-once into three stores)\n\n"
            f"`python -m loadtest.bench_encindex --n {args.n}` on {machine()}: {args.dim}-d fp16 vectors, "
            f"{args.batch} per write, fsynced, offsets saved after each write.\n\n"
            + "".join(f"- {line}\n" for line in lines),
        )


if __name__ == "__main__":
    main()
