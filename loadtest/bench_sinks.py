"""Each sink's absorb rate next to the embed stage's output rate, in one run (goal: sink >= 10x).

The sinks get the same polls: 128 vector batches of 1-30 rows (a scene vector plus objects),
512-d fp16, through ``split`` + ``write`` exactly as the sink runner calls them (decode, store,
record offsets, durable). The embed rate is the in-memory embed of real photos at batch 64,
one scene vector per frame, on this machine (the ceiling of the embed stage here).

    .venv/bin/mediavec dev up && .venv/bin/python -m loadtest.bench_sinks
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from consumers.embed.stage import embed_frames_in_memory
from consumers.registry import SINK_ENCRYPTED, SINK_POSTGRES, SINK_QDRANT
from consumers.sink_encrypted.sink import EncryptedSink
from consumers.sink_postgres.sink import PostgresSink
from consumers.sink_qdrant.sink import QdrantSink
from devstack import stack
from loadtest.bench_embed import make_frames
from loadtest.bench_postgres import Poll, make_polls, n_rows, scratch_database
from loadtest.report import machine, write_section
from mediavec.settings import Settings, load_settings
from models.clip import ClipEmbedder
from stores.encindex.keys import generate_key, write_key_file
from streams.sink_runner import StoreSink


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
    logging.basicConfig(level=logging.WARNING)
    base = load_settings()
    stack.up(base)
    polls = make_polls(args.polls, 128, 512)
    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, scratch_database(base) as pg:
        key = Path(tmp) / "index.key"
        write_key_file(key, generate_key())
        s = pg.model_copy(update={"data_dir": Path(tmp), "encindex": pg.encindex.model_copy(update={"key_file": key})})
        rates[f"{SINK_QDRANT.name} (edge, embedded)"] = absorb_rate(QdrantSink(s), polls)
        rates[SINK_POSTGRES.name] = absorb_rate(PostgresSink(s), polls)
        rates[SINK_ENCRYPTED.name] = absorb_rate(EncryptedSink(s), polls)
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
