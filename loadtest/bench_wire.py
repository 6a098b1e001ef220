"""The wire (issue 19, part 3): fp16 vectors in Avro against the same vectors as a JSON float list.

Both encodings carry the same vector batches (``--rows`` rows of ``--dim`` fp16 values each, with
their row metadata) through the same broker, producer and consumer settings as the workers use
(``streams.kafka``: idempotent, ``acks=all``, lz4): encode, produce, flush, then read the topic
back and decode every batch to an fp16 array. Vectors/s is counted over that whole round trip;
bytes per vector are the message values' sizes (before the producer's compression) and the
topic's size on the broker's disk (after it). The JSON side is what a hand-rolled pipeline
sends: ``{"vectors": [[0.0123, ...], ...], "rows": [...]}`` with Python's float repr.

    .venv/bin/python -m loadtest.bench_wire                 # a broker of its own; ~1 minute
    .venv/bin/python -m loadtest.bench_wire --batches 100 --repeats 1 --no-write

Writes the "Wire" section of BENCHMARKS.md (``--no-write`` to skip).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from confluent_kafka.admin import AdminClient, NewTopic

from loadtest.report import machine, write_section
from loadtest.scaling import own_broker
from mediavec.settings import Settings
from schemas import VectorBatch, VectorRow, decode_vector_batch, encode_vector_batch, point_id
from streams.kafka import producer, read_to_end

logger = logging.getLogger(__name__)

Encode = Callable[[VectorBatch], bytes]
Decode = Callable[[bytes], np.ndarray]


def make_batches(n: int, rows: int, dim: int, seed: int = 19) -> list[VectorBatch]:
    """``n`` batches of ``rows`` unit fp16 vectors, each row with its ids and a box, as the embed stage makes."""
    rng = np.random.default_rng(seed)
    out = []
    for b in range(n):
        vectors = rng.standard_normal((rows, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        media = f"media-{b}"
        meta = [
            VectorRow(
                point_id("m", media, 0, "object", i), "object", media, 0, 0.0, i, (1.0, 2.0, 30.5, 40.0), "person", 0.9
            )
            for i in range(rows)
        ]
        out.append(
            VectorBatch(
                "open_clip/ViT-B-32/x",
                vectors.astype(np.float16),
                tuple(meta),
                f"http://h/{media}.jpg",
                "default",
                "ab" * 32,
            )
        )
    return out


def encode_json(batch: VectorBatch) -> bytes:
    rows = [{**dataclasses.asdict(r), "box": list(r.box) if r.box else None} for r in batch.rows]
    doc = {"model": batch.model, "vectors": batch.vectors.astype(np.float32).tolist(), "rows": rows}
    doc |= {"source_url": batch.source_url, "collection": batch.collection, "content_sha256": batch.content_sha256}
    return json.dumps(doc).encode()


def decode_json(data: bytes) -> np.ndarray:
    return np.asarray(json.loads(data)["vectors"], dtype=np.float16)


def decode_avro(data: bytes) -> np.ndarray:
    return decode_vector_batch(data).vectors


@dataclass(frozen=True)
class Result:
    encoding: str
    vectors: int
    seconds: float
    value_bytes: int
    disk_bytes: int

    @property
    def rate(self) -> float:
        return self.vectors / self.seconds


def round_trip(
    settings: Settings, logs: Path, name: str, batches: list[VectorBatch], encode: Encode, decode: Decode
) -> Result:
    """Encode, produce and flush every batch, then read the topic back and decode each one."""
    topic = f"bench-wire-{'avro' if 'Avro' in name else 'json'}-{uuid.uuid4().hex[:6]}"
    admin = AdminClient(settings.kafka.client_config())
    admin.create_topics([NewTopic(topic, 4, 1, config={"max.message.bytes": str(16 * 2**20)})])[topic].result(30)
    p = producer(settings)
    start = time.perf_counter()
    size = 0
    for batch in batches:
        value = encode(batch)
        size += len(value)
        p.produce(topic, value=value)
        p.poll(0)
    assert p.flush(60) == 0, "messages left unsent"
    got = 0
    for message in read_to_end(settings, topic, f"bench-wire-{name}", timeout_s=30, strict=True):
        got += decode(message.value() or b"").shape[0]
    seconds = time.perf_counter() - start
    want = sum(len(b.rows) for b in batches)
    assert got == want, f"{name}: read {got} vectors of {want}"
    disk = sum(f.stat().st_size for f in logs.glob(f"{topic}-*/*.log"))
    admin.delete_topics([topic])[topic].result(30)
    return Result(name, got, seconds, size, disk)


def report(results: list[Result], rows: int, dim: int, batches: int, repeats: int) -> str:
    binary, plain = results
    lines = [
        "## Wire: fp16 Avro against a JSON float list (issue 19, part 3)",
        "",
        f"`python -m loadtest.bench_wire --batches {batches} --rows {rows} --dim {dim} --repeats {repeats}` on "
        f"{machine()}; a single broker of its own, the encodings alternating, the fastest of {repeats} rounds each. "
        "The same vector batches through the workers' producer and consumer settings (idempotent, "
        "`acks=all`, lz4): encode, produce, flush, read back, decode to fp16. Vectors/s over that round trip; "
        "bytes per vector as sent (the message value) and as stored (the topic on the broker's disk, compressed).",
        "",
        "| encoding | vectors | seconds | vectors/s | bytes/vector sent | bytes/vector on disk |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r.encoding} | {r.vectors:,} | {r.seconds:.1f} | **{r.rate:,.0f}** | "
            f"{r.value_bytes / r.vectors:,.0f} | {r.disk_bytes / r.vectors:,.0f} |"
        )
    lines += [
        "",
        f"fp16 Avro against JSON: **{binary.rate / plain.rate:.1f}x** the vectors/s (goal: at least 5x), "
        f"{plain.value_bytes / binary.value_bytes:.1f}x fewer bytes sent, "
        f"{plain.disk_bytes / max(binary.disk_bytes, 1):.1f}x fewer on disk.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=1000, help="vector batches per encoding")
    ap.add_argument("--rows", type=int, default=31, help="vectors per batch (a scene vector and 30 objects)")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3, help="rounds per encoding; the fastest is reported")
    ap.add_argument("--no-write", action="store_true", help="print, do not write BENCHMARKS.md")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    batches = make_batches(args.batches, args.rows, args.dim)
    with tempfile.TemporaryDirectory(prefix="mediavec-wire-") as tmp, own_broker(Path(tmp)) as (conn, _pid):
        settings = Settings(kafka=conn)
        logs = Path(tmp) / "kafka" / "data"  # the broker's log directory: the topics' size on disk
        cases = [
            ("fp16 Avro (mediavec)", encode_vector_batch, decode_avro),
            ("JSON float list", encode_json, decode_json),
        ]
        runs: dict[str, list[Result]] = {name: [] for name, _, _ in cases}
        for _ in range(args.repeats):  # alternating, so neither encoding has the warm broker to itself
            for name, encode, decode in cases:
                runs[name].append(round_trip(settings, logs, name, batches, encode, decode))
        results = [max(runs[name], key=lambda r: r.rate) for name, _, _ in cases]
    body = report(results, args.rows, args.dim, args.batches, args.repeats)
    print(body)
    if not args.no_write:
        write_section("bench_wire", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
