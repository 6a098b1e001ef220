"""Write throughput of the embedded vector store backends, through the VectorStore API.

Upserts N random 512-d fp16 vectors (with a sink-like payload) in batches of 128, followed by a
save_offsets per batch as the sink does, into a fresh temporary directory per backend, and
prints points/s for each backend and the ratios. Durability is on, as in production: edge
flushes (fsyncs) its shard per batch, local mode commits sqlite per point; ``edge-wal-only``
shows the engine's rate without the flush, for reference.

    .venv/bin/python loadtest/bench_vectorstore.py [--n 20000] [--batch 128] [--dim 512]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

from loadtest.report import machine, write_section
from stores.vectorstore.base import VectorStore
from stores.vectorstore.edge import EdgeStore
from stores.vectorstore.server import ServerStore


def _edge_wal_only(path: Path) -> VectorStore:
    """Edge without the per-upsert flush: crash-safe WAL, not fsynced (the raw engine rate)."""
    return EdgeStore(path, sync=False)


BACKENDS: dict[str, Callable[[Path], VectorStore]] = {
    "edge": EdgeStore,
    "edge-wal-only": _edge_wal_only,
    "local": ServerStore.local,
}


def _payload(i: int) -> dict[str, object]:
    return {"media_id": f"m{i // 16}", "frame_index": i % 16, "space": "scene", "collection": "bench"}


def bench(open_store: Callable[[Path], VectorStore], n: int, batch: int, dim: int) -> float:
    """Points per second for n upserts (plus one save_offsets per batch) into a fresh store."""
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, dim)).astype(np.float16)
    ids = [str(uuid.uuid4()) for _ in range(n)]
    payloads = [_payload(i) for i in range(n)]
    with tempfile.TemporaryDirectory(prefix="mediavec-bench-") as tmp, open_store(Path(tmp)) as store:
        store.ensure_collection("bench", dim)
        start = time.perf_counter()
        for lo in range(0, n, batch):
            hi = min(lo + batch, n)
            store.upsert("bench", ids[lo:hi], vectors[lo:hi], payloads[lo:hi])
            store.save_offsets("bench", {("vectors", 0): hi})
        elapsed = time.perf_counter() - start
        if store.count("bench") != n:
            raise SystemExit(f"expected {n} points, found {store.count('bench')}")
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--backends", nargs="+", choices=sorted(BACKENDS), default=sorted(BACKENDS))
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    rates = {}
    for name in args.backends:
        rates[name] = bench(BACKENDS[name], args.n, args.batch, args.dim)
        print(f"{name}: {rates[name]:,.0f} points/s ({args.n} x {args.dim}-d fp16, batches of {args.batch})")
    if "edge" in rates and "local" in rates:
        print(f"edge/local: {rates['edge'] / rates['local']:.1f}x")
    if "edge" in rates and "edge-wal-only" in rates:
        print(f"edge flush cost: {rates['edge-wal-only'] / rates['edge']:.1f}x slower than WAL only")
    if not args.no_write:
        rows = "".join(f"| `{name}` | {rate:,.0f} |\n" for name, rate in rates.items())
        write_section(
            "bench_vectorstore",
            "## Embedded vector store write rate (issue: foundation)\n\n"
            f"`python -m loadtest.bench_vectorstore --n {args.n}` on {machine()}: {args.n} points of "
            f"{args.dim}-d fp16 in upserts of {args.batch}, offsets saved after each, durable as the sink needs.\n\n"
            f"| backend | points/s |\n| --- | ---: |\n{rows}\n"
            "`edge` (qdrant-edge-py, fsync per upsert) is the embedded default; `local` is qdrant-client's "
            "local mode; `edge-wal-only` skips the fsync (the engine's raw rate).\n",
        )


if __name__ == "__main__":
    main()
