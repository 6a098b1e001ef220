"""Every vector of every frame, busy vs quiet footage: the embed stage through Kafka vs the models alone.

Footage: busy = Debian opencv-doc's ``vtest.avi`` (a street with pedestrians) re-encoded to H.264;
quiet = a still, empty scene held for the same time (``devstack.testmedia.static_clip``). Both are
sampled at ``--fps`` with the fetch stage's own video decoder into the same frames for every path:

1. model-only: the same models (all configured spaces) on the same decoded frames, in memory,
   fed by the same per-model queues, no Kafka and no serde: the ceiling;
2. through Kafka: the frames pre-loaded into the frames topic, the real embed stage and
   transactional runner consume them and publish every vector batch, timed until the last
   batch is committed. Goal: Kafka / model-only >= 0.9;
3. end to end: video segment requests -> fetch stage (decode) -> embed stage, both through Kafka
   in this process, timed from publish to the last committed vector batch.

Model loads and topic pre-loading are outside every timing. Run against the local dev stack:

    .venv/bin/mediavec dev up && .venv/bin/python -m loadtest.bench_frames --seconds 20 --fps 1

On a GPU machine without a broker, ``--in-process`` runs only the model-only path.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from consumers.embed.pipeline import FramePipeline
from consumers.embed.stage import EmbedStage, decode_image, frame_prompts
from devstack.testmedia import static_clip, transcode, vtest_avi
from loadtest.report import machine, write_section
from media.video import sample_segment
from mediavec.settings import Settings, load_settings
from models.bundle import EmbedModels
from models.clip import ClipEmbedder
from models.settings import ConceptSettings
from schemas import Frame, decode_vector_batch, encode_frame
from streams.admin import ensure_topics
from streams.kafka import producer
from streams.runner import TransactionalRunner
from streams.settings import TopicSettings
from streams.topics import topics
from tests.kafkautil import group_caught_up, read_topic, wait_for

logger = logging.getLogger(__name__)
CPU_NOTE = (
    "\nOn a CPU the ratio can land above 1: the model-only pass hands all frames of a clip to the queues at "
    "once, so the model threads contend for the cores longer than with the runner's batches; read it as "
    '"no visible pipeline overhead", not as Kafka speeding models up.\n'
)


@dataclass
class Rate:
    frames: int
    vectors: int
    seconds: float

    @property
    def fps(self) -> float:
        return self.frames / self.seconds

    @property
    def per_frame(self) -> float:
        return self.vectors / max(1, self.frames)

    @property
    def vps(self) -> float:
        return self.vectors / self.seconds


def footage(data_dir: Path, seconds: float) -> dict[str, Path]:
    media = data_dir / "bench-footage"
    busy = media / f"busy-{seconds:g}s.mp4"
    if not busy.exists():
        transcode(vtest_avi(data_dir / "testmedia"), busy, "h264", gop=10, start_s=10.0, duration_s=seconds)
    return {"busy": busy, "quiet": static_clip(media / f"quiet-{seconds:g}s.mp4", seconds=seconds)}


def sampled_frames(path: Path, name: str, seconds: float, fps: float, max_side: int) -> list[Frame]:
    result = sample_segment(path, 0.0, seconds, fps, max_side=max_side)
    if result.error is not None:
        raise RuntimeError(f"{path}: {result.error}")
    return [
        Frame(name, f.index, f.timestamp_s, path.resolve().as_uri(), "bench", f.width, f.height, f.jpeg, "")
        for f in result.frames
    ]


def model_only(pipeline: FramePipeline, frames: list[Frame]) -> Rate:
    t0 = time.perf_counter()
    images = [decode_image(f.jpeg) for f in frames]
    out = pipeline.run(images, [frame_prompts(f) for f in frames])
    seconds = time.perf_counter() - t0
    bad = [v for v in out if isinstance(v, Exception)]
    if bad:
        raise RuntimeError(f"{len(bad)} frames failed: {bad[0]}")
    return Rate(len(frames), sum(v.count for v in out if not isinstance(v, Exception)), seconds)


def _run(runner: TransactionalRunner) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    return stop, thread


def _vectors_in_topic(settings: Settings) -> tuple[int, set[tuple[str, int]]]:
    rows, frames = 0, set()
    for m in read_topic(settings, topics(settings).vectors.name):
        batch = decode_vector_batch(m.value)
        rows += len(batch.rows)
        frames |= {(r.media_id, r.frame_index) for r in batch.rows}
    return rows, frames


def through_kafka(settings: Settings, models: EmbedModels, frames: list[Frame]) -> Rate:
    ensure_topics(settings)
    t = topics(settings)
    p = producer(settings)
    for f in frames:
        p.produce(t.frames.name, key=f.media_id.encode(), value=encode_frame(f))
    assert p.flush(60) == 0
    e = settings.embed
    stage = EmbedStage(settings, models)
    runner = TransactionalRunner(
        settings, stage, batch_size=e.frames_per_batch, batch_deadline_s=e.batch_deadline_s, instance="bench"
    )
    t0 = time.perf_counter()
    stop, thread = _run(runner)
    wait_for(lambda: group_caught_up(settings, runner.group, t.frames.name), 3600, "embed to catch up")
    seconds = time.perf_counter() - t0
    stop.set()
    thread.join(60)
    rows, done = _vectors_in_topic(settings)
    assert len(done) == len(frames), f"vectors for {len(done)} of {len(frames)} frames"
    return Rate(len(frames), rows, seconds)


def bench_settings(base: Settings, tag: str) -> Settings:
    return base.model_copy(
        update={
            "topics": TopicSettings(prefix=f"bench-{tag}-{uuid.uuid4().hex[:6]}.", frames_partitions=4),
            "model": base.model.model_copy(update={"allow_random_weights": True})
            if base.model.model_dir is None
            else base.model,
            "concept": ConceptSettings(allow_random_weights=True) if base.concept.model_dir is None else base.concept,
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="footage length per clip")
    ap.add_argument("--fps", type=float, default=1.0, help="sampling rate")
    ap.add_argument("--max-side", type=int, default=768)
    ap.add_argument("--in-process", action="store_true", help="model-only path alone (no broker)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    base = load_settings()
    settings = bench_settings(base, "frames")
    clips = footage(settings.data_dir, args.seconds)
    frames = {name: sampled_frames(path, name, args.seconds, args.fps, args.max_side) for name, path in clips.items()}
    t0 = time.perf_counter()
    models = EmbedModels.load(settings, settings.embed.spaces, prompt_bank=settings.embed.prompt_bank)
    load_s = time.perf_counter() - t0
    pipeline = FramePipeline(models, settings)
    model_only(pipeline, frames["busy"][:4])  # warm-up
    rates: dict[str, dict[str, Rate]] = {}
    for name, fr in frames.items():
        rates[name] = {"model": model_only(pipeline, fr)}
        if not args.in_process:
            rates[name]["kafka"] = through_kafka(bench_settings(base, name), models, fr)
            rates[name]["model2"] = model_only(pipeline, fr)  # again, to bracket drift
    pipeline.close()
    body = report(args, settings, models, load_s, rates)
    print(body)
    if not args.no_write:
        write_section("bench_frames", body)


def report(
    args: argparse.Namespace, settings: Settings, models: EmbedModels, load_s: float, rates: dict[str, dict[str, Rate]]
) -> str:
    vision = models.vision if isinstance(models.vision, ClipEmbedder) else None  # a provider has no device here
    device = vision.device if vision is not None else "cpu"
    lines = [
        "## Every vector per frame: busy vs quiet footage (issue: video and per-frame vectors)\n",
        f"`python -m loadtest.bench_frames --seconds {args.seconds:g} --fps {args.fps:g}` on {machine()}, "
        f"models on {device} ({'fp16' if vision is not None and vision.fp16 else 'fp32'}), loaded in {load_s:.1f}s; "
        f"spaces {', '.join(settings.embed.spaces)}; frames at most {args.max_side}px.\n",
        "| footage | path | frames/s | vectors/frame | vectors/s | vs model-only |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for name, r in rates.items():
        model = r["model"]
        if "model2" in r:
            model = Rate(model.frames, model.vectors, (model.seconds + r["model2"].seconds) / 2)
        lines.append(f"| {name} | model-only | {model.fps:.2f} | {model.per_frame:.1f} | {model.vps:.1f} | 1.00 |")
        if "kafka" in r:
            k = r["kafka"]
            lines.append(
                f"| {name} | **embed through Kafka** | **{k.fps:.2f}** | {k.per_frame:.1f} | {k.vps:.1f} | "
                f"**{k.fps / model.fps:.2f}** |"
            )
    lines.append("\nGoal: through Kafka / model-only >= 0.9 on both clips.\n")
    if str(device) == "cpu":
        lines.append(CPU_NOTE)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
