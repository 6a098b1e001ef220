"""Rows per second into PostgreSQL through PostgresSink (split + write), against the dev stack.

Builds realistic polls up front (``--batch`` vector batch records per poll, 1-30 rows each: a
scene vector plus objects with boxes and labels, ``--dim``-d fp16 vectors that the sink decodes
but does not store), then times, in a scratch database of the dev stack's PostgreSQL:

- ``sink``: ``split`` + ``write`` per poll, as the runner calls them (durable commits), with
  ``write`` alone (``split`` decodes the Avro batches, which ``write`` then reuses);
- ``replay``: the same polls again: every record is below the stored offsets and is skipped;
- ``baseline``: the same rows through ``executemany(INSERT ... ON CONFLICT DO NOTHING)`` in one
  transaction per poll, the obvious alternative to COPY (on ``--baseline-polls`` polls).

    .venv/bin/python loadtest/bench_postgres.py [--polls 50] [--batch 128] [--dim 512]

The stack is started with ``devstack.stack.up`` under the default settings (MEDIAVEC_*
variables apply, e.g. MEDIAVEC_DATA_DIR); MEDIAVEC_POSTGRES__DSN is ignored: a benchmark never
writes into a configured database.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from pydantic import SecretStr

from consumers.sink_postgres.sink import PostgresSink
from consumers.sink_postgres.transform import COLUMNS, rows_from_batch
from devstack import postgres
from devstack.settings import DevSettings
from devstack.stack import up
from mediavec.settings import Settings
from schemas import VectorBatch, VectorRow, decode_vector_batch, encode_vector_batch, point_id
from stores.metadb import connect
from stores.settings import PostgresSettings
from streams.stage import InputRecord

MODEL = "open_clip/ViT-B-32/openai"
TOPIC = "bench.vectors"
Poll = tuple[list[InputRecord], dict[tuple[str, int], int]]


def _batch(rng: np.random.Generator, media: str, n_rows: int, dim: int) -> VectorBatch:
    rows = [VectorRow(point_id(MODEL, media, 0, "scene"), "scene", media, 0, 0.0)]
    for i in range(1, n_rows):
        x, y = rng.uniform(0, 900, 2)
        box = (float(x), float(y), float(x) + 64.0, float(y) + 48.0)
        label = f"label{i % 17}"
        rows.append(VectorRow(point_id(MODEL, media, 0, "object", i), "object", media, 0, 0.0, i, box, label, 0.5))
    vectors = rng.standard_normal((n_rows, dim)).astype(np.float16)
    meta = {"team": "bench", "source": "loadtest"}
    return VectorBatch(MODEL, vectors, tuple(rows), f"http://127.0.0.1/{media}.jpg", "bench", "ab" * 32, meta, "r1")


def make_polls(n_polls: int, batch: int, dim: int, partitions: int = 4) -> list[Poll]:
    """``n_polls`` polls of ``batch`` encoded records each, spread over ``partitions`` partitions."""
    rng = np.random.default_rng(0)
    start_ms = int(time.time() * 1000)
    polls: list[Poll] = []
    offset = [0] * partitions
    for p in range(n_polls):
        records = []
        for i in range(batch):
            part = i % partitions
            media = f"media-{p}-{i}"
            value = encode_vector_batch(_batch(rng, media, int(rng.integers(1, 31)), dim))
            ts = start_ms + p * batch + i
            records.append(InputRecord(TOPIC, part, offset[part], media.encode(), value, timestamp_ms=ts))
            offset[part] += 1
        polls.append((records, {(TOPIC, q): offset[q] for q in range(partitions)}))
    return polls


def n_rows(polls: list[Poll]) -> int:
    return sum(len(decode_vector_batch(r.value).rows) for records, _ in polls for r in records)


def run_sink(settings: Settings, polls: list[Poll]) -> tuple[float, float, PostgresSink]:
    """Seconds spent in split and in write over all polls (the sink is left open for the replay)."""
    sink = PostgresSink(settings)
    sink.start()
    in_split = in_write = 0.0
    for records, offsets in polls:
        t0 = time.perf_counter()
        good, bad = sink.split(records)
        t1 = time.perf_counter()
        sink.write(good, offsets)
        in_split += t1 - t0
        in_write += time.perf_counter() - t1
        if bad:
            raise SystemExit(f"{len(bad)} records refused by split: {bad[0][1].reason}")
    return in_split, in_write, sink


def run_baseline(settings: Settings, polls: list[Poll]) -> float:
    """Seconds for the same rows through executemany INSERT, one transaction per poll."""
    cols = ", ".join(COLUMNS)
    marks = ", ".join(["%s"] * len(COLUMNS))
    query = f"INSERT INTO frame_metadata ({cols}) VALUES ({marks}) ON CONFLICT DO NOTHING"
    with connect(settings) as conn:
        conn.execute("TRUNCATE frame_metadata")
        elapsed = 0.0
        for records, _ in polls:
            t0 = time.perf_counter()
            rows = [row for r in records for row in rows_from_batch(decode_vector_batch(r.value), r)]
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(query.encode(), rows)
            elapsed += time.perf_counter() - t0
    return elapsed


@contextmanager
def scratch_database(stack_settings: DevSettings) -> Iterator[DevSettings]:
    name = f"mediavec_bench_{os.getpid()}"
    postgres.ensure_database(stack_settings, name)
    port = stack_settings.devstack.postgres_port
    dsn = f"host=127.0.0.1 port={port} dbname={name} user={postgres.SUPERUSER}"
    try:
        yield stack_settings.model_copy(update={"postgres": PostgresSettings(dsn=SecretStr(dsn))})
    finally:
        postgres.drop_database(stack_settings, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--polls", type=int, default=50)
    parser.add_argument("--batch", type=int, default=128, help="vector batch records per poll")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--baseline-polls", type=int, default=10, help="0 skips the baseline")
    args = parser.parse_args()
    stack_settings = DevSettings(postgres=PostgresSettings())
    up(stack_settings)
    polls = make_polls(args.polls, args.batch, args.dim)
    total = n_rows(polls)
    print(f"{args.polls} polls x {args.batch} vector batches (1-30 rows each, {args.dim}-d): {total} rows")
    with scratch_database(stack_settings) as settings:
        in_split, in_write, sink = run_sink(settings, polls)
        rate = total / (in_split + in_write)
        print(f"sink write (COPY, one transaction per poll): {total / in_write:,.0f} rows/s ({in_write:.2f} s)")
        print(f"sink split + write (decode included): {rate:,.0f} rows/s ({in_split + in_write:.2f} s)")
        t0 = time.perf_counter()
        for records, offsets in polls:
            sink.write(sink.split(records)[0], offsets)
        replay = time.perf_counter() - t0
        print(f"replay (all skipped by offset): {total / replay:,.0f} rows/s")
        if sink.stats.rows_inserted != total or sink.stats.records_skipped != args.polls * args.batch:
            raise SystemExit(f"unexpected sink stats {sink.stats} for {total} rows")
        sink.close()
        if args.baseline_polls:
            base_polls = polls[: args.baseline_polls]
            base_rate = n_rows(base_polls) / run_baseline(settings, base_polls)
            print(f"baseline (decode + executemany INSERT): {base_rate:,.0f} rows/s; sink {rate / base_rate:.1f}x")


if __name__ == "__main__":
    main()
