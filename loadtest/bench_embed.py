"""Embed stage through Kafka vs the same model in memory, on the same frames, in one run.

1. naive: one image per model call (the per-image loop a hand-rolled script would write);
2. in-memory: the same frames, same pre-processing, batches of ``--batch`` (the ceiling);
3. through Kafka: frames pre-loaded into the frames topic, the real embed stage and
   transactional runner consume them and publish vector batches, timed until the last
   vector batch is committed.

The ratio kafka / in-memory is the pipeline's efficiency (goal >= 0.9). Model load and the
pre-loading of the frames topic are outside every timing. Run against the local dev stack:

    .venv/bin/mediavec dev up && .venv/bin/python -m loadtest.bench_embed --frames 256
"""

from __future__ import annotations

import argparse
import logging
import random
import threading
import time
import uuid

from PIL import Image

from consumers.embed.settings import EmbedSettings
from consumers.embed.stage import EmbedStage, embed_frames_in_memory
from consumers.registry import EMBED
from devstack.samples import sample_images
from loadtest.report import machine, write_section
from media.decode import decode_image
from mediavec.settings import Settings, load_settings
from models.bundle import EmbedModels
from models.clip import ClipEmbedder
from schemas import Frame, encode_frame
from streams.admin import ensure_topics
from streams.kafka import producer
from streams.runner import TransactionalRunner
from streams.settings import TopicSettings
from streams.topics import topics
from tests.kafkautil import read_topic

logger = logging.getLogger(__name__)


def make_frames(settings: Settings, n: int) -> list[Frame]:
    """n distinct frames: real sample photos, randomly cropped and resized, decoded as fetch does."""
    import io

    rng = random.Random(0)
    bases = [Image.open(p).convert("RGB") for p in sample_images(settings.data_dir / "samples")]
    frames = []
    for i in range(n):
        im = bases[i % len(bases)]
        w, h = im.size
        x, y = rng.randint(0, w // 4), rng.randint(0, h // 4)
        crop = im.crop((x, y, x + w * 3 // 4, y + h * 3 // 4))
        buf = io.BytesIO()
        crop.save(buf, "JPEG", quality=90)
        d = decode_image(buf.getvalue(), settings.fetch)
        frames.append(
            Frame(
                f"bench-{i:05d}",
                0,
                0.0,
                f"http://127.0.0.1/bench/{i}.jpg",
                "bench",
                d.width,
                d.height,
                d.jpeg,
                d.content_sha256,
            )
        )
    return frames


def bench_naive(embedder: ClipEmbedder, frames: list[Frame]) -> float:
    t0 = time.perf_counter()
    for f in frames:
        embed_frames_in_memory(embedder, [f], 1)
    return len(frames) / (time.perf_counter() - t0)


def bench_memory(embedder: ClipEmbedder, frames: list[Frame], batch: int) -> float:
    t0 = time.perf_counter()
    embed_frames_in_memory(embedder, frames, batch)
    return len(frames) / (time.perf_counter() - t0)


def bench_kafka(settings: Settings, embedder: ClipEmbedder, frames: list[Frame]) -> float:
    ensure_topics(settings)
    t = topics(settings)
    p = producer(settings)
    for f in frames:
        p.produce(t.frames.name, key=f.media_id.encode(), value=encode_frame(f))
        p.poll(0)
    assert p.flush(60) == 0
    runner = TransactionalRunner(
        settings,
        EmbedStage(settings, EmbedModels(vision=embedder)),
        batch_size=settings.embed.frames_per_batch,
        batch_deadline_s=settings.embed.batch_deadline_s,
        instance="bench",
    )
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    t0 = time.perf_counter()
    thread.start()
    from confluent_kafka import TopicPartition

    from streams.kafka import consumer, group_id

    watcher = consumer(settings, group_id(settings, EMBED.name))
    parts = [TopicPartition(t.frames.name, i) for i in range(settings.topics.frames_partitions)]
    ends = {tp.partition: watcher.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}
    while True:  # done when the group's committed offsets reach the end of every partition
        committed = watcher.committed(parts, timeout=10)
        if all(tp.offset >= ends[tp.partition] for tp in committed):
            break
        time.sleep(0.05)
    elapsed = time.perf_counter() - t0
    stop.set()
    thread.join(60)
    watcher.close()
    n_out = len(read_topic(settings, t.vectors.name))
    assert n_out == len(frames), f"{n_out} vector batches for {len(frames)} frames"
    return len(frames) / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--naive-frames", type=int, default=64, help="frames for the per-image loop (it is slow)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    base = load_settings()
    settings = base.model_copy(
        update={
            "topics": TopicSettings(prefix=f"bench-{uuid.uuid4().hex[:6]}.", frames_partitions=4, vectors_partitions=4),
            "embed": EmbedSettings(
                spaces=("scene",), frames_per_batch=args.batch, batch_size=args.batch, batch_deadline_s=0.5
            ),
            "model": base.model.model_copy(update={"allow_random_weights": True})
            if base.model.model_dir is None
            else base.model,
        }
    )
    frames = make_frames(settings, args.frames)
    t0 = time.perf_counter()
    embedder = ClipEmbedder.load(settings.model)
    load_s = time.perf_counter() - t0
    embed_frames_in_memory(embedder, frames[: args.batch], args.batch)  # warm-up
    naive = bench_naive(embedder, frames[: args.naive_frames])
    memory = bench_memory(embedder, frames, args.batch)
    kafka = bench_kafka(settings, embedder, frames)
    memory2 = bench_memory(embedder, frames, args.batch)  # again, to bracket drift
    memory = (memory + memory2) / 2
    body = (
        "## Embed stage: through Kafka vs in memory (issue: foundation)\n\n"
        f"`python -m loadtest.bench_embed --frames {args.frames} --batch {args.batch}` on {machine()}.\n"
        f"Model `{embedder.model_id}` ({embedder.weights_source}) on {embedder.device}, loaded in {load_s:.1f}s; "
        f"{args.frames} frames of real photos (sample set crops, decoded by the fetch stage's decoder).\n\n"
        "| path | frames/s | vs in-memory |\n| --- | ---: | ---: |\n"
        f"| naive per-image loop ({args.naive_frames} frames) | {naive:.1f} | {naive / memory:.2f} |\n"
        f"| in memory, batch {args.batch} (mean of two passes around the Kafka run) | {memory:.1f} | 1.00 |\n"
        f"| **embed stage through Kafka** (frames topic -> vectors topic, transactional) | **{kafka:.1f}** | "
        f"**{kafka / memory:.2f}** |\n\n"
        f"Goal: Kafka / in-memory >= 0.9. Batch speed-up over the naive loop: {memory / naive:.1f}x.\n"
    )
    print(body)
    if not args.no_write:
        write_section("bench_embed", body)


if __name__ == "__main__":
    main()
