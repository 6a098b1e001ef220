"""Search latency and recall@10 on the embedded edge store while ingest runs (issue 16).

For each N in ``--points``: a fresh :class:`~stores.vectorstore.edge.EdgeStore` takes N unit
256-d vectors drawn around N / 250 gaussian cluster centres (4,000 at 1M), with payloads as the
Qdrant sink writes them (a scene vector and three labelled object vectors per frame, 64 frames
per medium, each medium showing four scenes, each scene's centre shared by about four media),
and builds its HNSW index with ``EdgeStore.rebuild`` (the child
process the background optimizer runs). Then, while an ingest thread upserts batches of 64 new
points through the same store at ``--ingest-rate`` points/s (durable, as the sink writes), each
query type runs ``--queries`` times for each search-time ``hnsw_ef`` in ``--ef``:

- ``nearest``: the 10 nearest scene vectors (filter: space);
- ``label``: the 10 nearest objects with one label, about 4% of the points (space and label);
- ``media``: the 10 nearest within one medium, 64 points (media_id, answered via its index);
- ``more-like-this``: a stored point's vector by id, then its 10 nearest in its space, itself
  excluded (the latency counts both calls).

Latency is one engine call in the owning process (no HTTP), contending with ingest for the
store's lock as the query server does. Each query's recall@10 is against the engine's exact
search with the same filter, run right after it (so the points ingested meanwhile count); the
exact search is also the baseline: what every query cost before the index.

    .venv/bin/python -m loadtest.bench_search [--points 100000,1000000] [--queries 300] [--ef 64,128,256]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from loadtest.report import machine, write_section
from stores.vectorstore.edge import EdgeStore
from stores.vectorstore.edge_engine import edge_search_params

DIM = 256
POINTS_PER_CLUSTER = 250
SCENES = 4  # clusters per medium
NOISE = 0.05  # per dimension: a point's cosine to its nearest stored neighbour is about 0.7
FRAMES = 64  # per medium
LABELS = tuple(f"label-{k:02d}" for k in range(20))
NAME = "bench"
BULK_BATCH = 4096
INGEST_BATCH = 64
TYPES = ("nearest", "label", "media", "more-like-this")


def point_id(i: int) -> str:
    return str(uuid.UUID(int=i + 1))


def payload(i: int) -> dict[str, Any]:
    """As ``schemas.collections.row_payload`` writes it: point i is frame i // 4, one scene and three objects."""
    frame, k = divmod(i, 4)
    media = f"bench-{frame // FRAMES}"
    obj = k > 0
    return {
        "media_id": media,
        "source_url": f"http://127.0.0.1:8000/{media}.mp4",
        "frame_index": frame % FRAMES,
        "timestamp_s": 0.5 * (frame % FRAMES),
        "space": "object" if obj else "scene",
        "object_index": k - 1 if obj else None,
        "box": [0.1, 0.1, 0.5, 0.5] if obj else None,
        "label": LABELS[(i * 7919) % len(LABELS)] if obj else None,
        "score": 0.9 if obj else None,
        "collection": NAME,
        "model": "open_clip/bench/random",
    }


class Vectors:
    """Clustered unit vectors: point i lies around its medium's scene's centre."""

    def __init__(self, n: int, seed: int = 0) -> None:
        self.clusters = max(1, n // POINTS_PER_CLUSTER)
        centres = np.random.default_rng(seed).standard_normal((self.clusters, DIM)).astype(np.float32)
        self.centres = centres / np.linalg.norm(centres, axis=1, keepdims=True)

    def rows(self, lo: int, hi: int, seed: int = 1) -> np.ndarray:
        """Points lo..hi (the same for the same seed and lo)."""
        frame = np.arange(lo, hi) // 4
        scene = (frame // FRAMES) * SCENES + (frame % FRAMES) * SCENES // FRAMES
        return self._around(self.centres[scene % self.clusters], np.random.default_rng([seed, lo]))

    def queries(self, count: int, seed: int) -> np.ndarray:
        """Vectors like the stored ones, around random centres."""
        rng = np.random.default_rng([seed, 7])
        return self._around(self.centres[rng.integers(0, self.clusters, count)], rng)

    @staticmethod
    def _around(centres: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        v = centres + rng.standard_normal(centres.shape).astype(np.float32) * NOISE
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def load(store: EdgeStore, data: Vectors, n: int) -> float:
    """Upsert points 0..n in large batches; seconds taken."""
    started = time.perf_counter()
    for lo in range(0, n, BULK_BATCH):
        hi = min(lo + BULK_BATCH, n)
        store.upsert(NAME, [point_id(i) for i in range(lo, hi)], data.rows(lo, hi), [payload(i) for i in range(lo, hi)])
    return time.perf_counter() - started


@dataclass
class Ingest:
    """A thread upserting batches of 64 new points at a steady rate, as a sink does."""

    store: EdgeStore
    data: Vectors
    first: int
    rate: float
    written: int = 0
    seconds: float = 0.0
    upsert_ms: list[float] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> Ingest:
        self.thread = threading.Thread(target=self._run, name="bench-ingest", daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        started = time.perf_counter()
        while not self.stop.is_set():
            lo = self.first + self.written
            hi = lo + INGEST_BATCH
            ids, payloads = [point_id(i) for i in range(lo, hi)], [payload(i) for i in range(lo, hi)]
            vectors = self.data.rows(lo, hi, seed=2)
            begun = time.perf_counter()
            self.store.upsert(NAME, ids, vectors, payloads)
            self.upsert_ms.append(1000 * (time.perf_counter() - begun))
            self.written += INGEST_BATCH
            self.seconds = time.perf_counter() - started
            self.stop.wait(max(0.0, started + self.written / self.rate - time.perf_counter()))

    def finish(self) -> float:
        """Stop; the points/s achieved."""
        self.stop.set()
        if self.thread is not None:
            self.thread.join()
        return self.written / self.seconds if self.seconds else 0.0


def _match(key: str, value: str) -> qe.FieldCondition:
    return qe.FieldCondition(key=key, match=qe.MatchValue(value))


@dataclass
class Query:
    """One query: the vector (or the stored point to take it from), its filter."""

    vector: list[float] | None
    filter: qe.Filter
    from_point: str | None = None


def make_queries(kind: str, data: Vectors, n: int, count: int, seed: int) -> list[Query]:
    rng = np.random.default_rng([seed, TYPES.index(kind)])
    vectors = data.queries(count, seed=1000 * seed + TYPES.index(kind))
    out = []
    for q in range(count):
        v = vectors[q].tolist()
        if kind == "nearest":
            out.append(Query(v, qe.Filter(must=[_match("space", "scene")])))
        elif kind == "label":
            label = LABELS[int(rng.integers(len(LABELS)))]
            out.append(Query(v, qe.Filter(must=[_match("space", "object"), _match("label", label)])))
        elif kind == "media":
            media = f"bench-{int(rng.integers(max(1, n // (4 * FRAMES))))}"
            out.append(Query(v, qe.Filter(must=[_match("media_id", media)])))
        else:
            i = int(rng.integers(n))
            space = payload(i)["space"]
            keep_out = qe.HasIdCondition({point_id(i)})
            out.append(Query(None, qe.Filter(must=[_match("space", space)], must_not=[keep_out]), point_id(i)))
    return out


def _search(store: EdgeStore, vector: list[float], flt: qe.Filter, params: qe.SearchParams) -> list[str]:
    request = qe.SearchRequest(query=qe.Query.Nearest(vector), limit=10, filter=flt, params=params)
    return [str(p.id) for p in store.engine_search(NAME, request)]


@dataclass
class Figures:
    """Latencies (ms) of one query type at one ef, with the exact search's for the same queries."""

    kind: str
    ef: int
    approx_ms: list[float] = field(default_factory=list)
    exact_ms: list[float] = field(default_factory=list)
    recall: list[float] = field(default_factory=list)

    def row(self) -> dict[str, float | int | str]:
        a, e = np.asarray(self.approx_ms), np.asarray(self.exact_ms)
        return {
            "type": self.kind,
            "ef": self.ef,
            "p50": float(np.percentile(a, 50)),
            "p99": float(np.percentile(a, 99)),
            "qps": 1000.0 / float(a.mean()),
            "recall": float(np.mean(self.recall)),
            "exact_p50": float(np.percentile(e, 50)),
            "exact_p99": float(np.percentile(e, 99)),
        }


def run_queries(store: EdgeStore, kind: str, queries: list[Query], ef: int) -> Figures:
    figures = Figures(kind, ef)
    approx, exact = edge_search_params(ef), qe.SearchParams(exact=True)
    for q in queries:
        started = time.perf_counter()
        vector = q.vector
        if q.from_point is not None:
            stored = store.retrieve(NAME, [q.from_point])[0].vector
            assert stored is not None
            vector = stored.tolist()
        assert vector is not None
        got = _search(store, vector, q.filter, approx)
        figures.approx_ms.append(1000 * (time.perf_counter() - started))
        started = time.perf_counter()
        truth = _search(store, vector, q.filter, exact)
        figures.exact_ms.append(1000 * (time.perf_counter() - started))
        figures.recall.append(len(set(got) & set(truth)) / len(truth) if truth else 1.0)
    return figures


def bench(n: int, queries: int, efs: list[int], rate: float, root: Path, log: Callable[[str], None] = print) -> dict:
    """Load n points, build the index, measure every query type at every ef while ingesting."""
    data = Vectors(n)
    with EdgeStore(root / f"search-{n}", optimize_after_points=0) as store:
        store.ensure_collection(NAME, DIM)
        load_s = load(store, data, n)
        log(f"{n} points loaded in {load_s:.1f} s")
        build = store.rebuild(NAME)
        log(f"index built: {build}")
        ingest = Ingest(store, data, n, rate).start()
        rows = []
        for ef in efs:
            for kind in TYPES:
                rows.append(run_queries(store, kind, make_queries(kind, data, n, queries, seed=ef), ef).row())
                log(_row_md(rows[-1]).strip())
        ingest_rate = ingest.finish()
        total = store.count(NAME)
    upsert = [float(np.percentile(ingest.upsert_ms, p)) for p in (50, 99)]
    return {
        "n": n,
        "load_s": load_s,
        "build": build,
        "rows": rows,
        "ingest_rate": ingest_rate,
        "upsert_ms": upsert,
        "total": total,
    }


def tuned_ef(rows: list[dict], goal: float = 0.95) -> int | None:
    """The smallest ef at which every query type reaches the recall goal."""
    for ef in sorted({int(r["ef"]) for r in rows}):
        if all(r["recall"] >= goal for r in rows if r["ef"] == ef):
            return ef
    return None


def _row_md(r: dict) -> str:
    return (
        f"| {r['type']} | {r['ef']} | {r['p50']:.2f} | {r['p99']:.2f} | {r['qps']:,.0f} | {r['recall']:.3f} "
        f"| {r['exact_p50']:.2f} | {r['exact_p99']:.2f} | {r['exact_p99'] / r['p99']:.1f}x |\n"
    )


def section(result: dict, command: str) -> str:
    b, n, up = result["build"], result["n"], result["upsert_ms"]
    ef = tuned_ef(result["rows"])
    rows = "".join(_row_md(r) for r in result["rows"])
    return (
        f"## Search while ingesting, {n:,} stored vectors (issue 16)\n\n"
        f"`{command}` on {machine()}: {n:,} unit {DIM}-d fp16 vectors around {n // POINTS_PER_CLUSTER:,} "
        "gaussian centres, "
        f"sink payloads, keyword indexes on space, media_id and label. Loaded in {result['load_s']:.0f} s; "
        f"HNSW (m 16, ef_construct 100) built in a child process in {b.build_s:.0f} s ({b.indexed:,} points "
        f"indexed in {b.segments} segments; copy {b.copy_s:.1f} s and swap {b.swap_s:.2f} s holding the store's "
        f"lock). Queries ran while an ingest thread upserted batches of {INGEST_BATCH} through the same store: "
        f"{result['ingest_rate']:,.0f} points/s achieved (an upsert took {up[0]:.1f} ms at p50, {up[1]:.1f} ms "
        "at p99, its wait for the store's lock included; its flush holds the GIL and the lock, so a query that "
        "arrives meanwhile waits), "
        f"{result['total']:,} points at the end. One query at a time; latency in ms of the engine call in the "
        "owning process; recall@10 against the engine's exact search with the same filter, which is also the "
        "baseline (every query was a scan before).\n\n"
        "| query | hnsw_ef | p50 | p99 | queries/s | recall@10 | exact p50 | exact p99 | p99 speed-up |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
        f"{rows}\n"
        f"Smallest hnsw_ef with recall@10 >= 0.95 for every query type: {ef if ef is not None else 'none tried'}.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", default="100000,1000000", help="stored vectors, comma separated")
    parser.add_argument("--queries", type=int, default=300, help="per query type and ef")
    parser.add_argument("--ef", default="64,128,256", help="search-time hnsw_ef values, comma separated")
    parser.add_argument("--ingest-rate", type=float, default=1000.0, help="points/s the ingest thread aims at")
    parser.add_argument("--dir", type=Path, default=None, help="where the stores go (default: a temporary dir)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    efs = [int(e) for e in args.ef.split(",")]
    for n in (int(p) for p in args.points.split(",")):
        with tempfile.TemporaryDirectory(prefix="mediavec-bench-search-", dir=args.dir) as tmp:
            result = bench(n, args.queries, efs, args.ingest_rate, Path(tmp))
        command = (
            f"python -m loadtest.bench_search --points {n} --queries {args.queries} --ef {args.ef} "
            f"--ingest-rate {args.ingest_rate:g}"
        )
        text = section(result, command)
        print(text)
        if not args.no_write:
            write_section(f"bench_search_{n}", text)


if __name__ == "__main__":
    main()
