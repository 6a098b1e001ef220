"""The GPU path in one short run (issue 19, part 5): vectors/s of the device-side image path.

Frames are real photos cut to video frames (JPEG, ``--frame-size``); busy footage has
``--objects`` boxes a frame (the real detector's where its weights are installed, the rest
generated), quiet footage the scene alone. ``--workers`` processes share the device, each with
its own model and :class:`models.tensor_path.TensorPath`: nvjpeg decode, resize and ``roi_align``
crops on the GPU, fp16, ``torch.compile`` on fixed-size batches, a side stream that prepares the
next batch while the model runs this one, pinned host buffers for the vectors. Before timing,
worker 0 holds the path's vectors to the reference PIL path (cosine >= 0.999, scenes and crops);
the run fails when they differ. It prints one table: vectors/s, GPU utilisation (NVML or
nvidia-smi) and the share of the device's dense fp16 FLOP limit used, per footage.

    python -m loadtest.gpu_check                          # CUDA: 4 workers, 20 s a footage, ~3 min
    python -m loadtest.gpu_check --seconds 2 --distinct 2 # CPU: 1 worker, a small run (CI)
    python -m loadtest.gpu_check --write                  # and write the "GPU check" section

A GPU machine with PyTorch alone lacks the sample photos and the detector: cut the footage where
they are installed, carry the folder (about 3 MB) and run from it there:

    python -m loadtest.gpu_check --distinct 32 --save-footage gpu-footage   # here: frames, detector boxes
    python -m loadtest.gpu_check --footage gpu-footage --write             # on the GPU machine

Beyond torch, torchvision, numpy and Pillow it imports open_clip_torch and the model settings'
pydantic; ``loadtest/gpu_check.requirements.txt`` lists every wheel (nvidia-ml-py is optional).
"""

from __future__ import annotations

import argparse
import io
import logging
import multiprocessing as mp
import os
import queue
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from loadtest.gpu_device import Utilisation, device_name, peak_fp16_flops
from loadtest.gpu_footage import Batch, batches, busy_boxes, load_footage, make_frames, photo_paths, save_footage
from loadtest.report import frame_size, positive_float, positive_int
from models.geometry import Box

logger = logging.getLogger(__name__)

MIN_COSINE = 0.999
TARGET, AIM = 8_000, 30_000
BARRIER_TIMEOUT_S = 420.0  # model load, torch.compile and the reference check of every worker


# -- workers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """What every worker process gets: the settings of the run and the footage."""

    arch: str
    pretrained: str
    model_dir: Path | None
    device: str
    compile_mode: str
    batch_size: int
    seconds: float
    threads: int
    check_frames: int
    frames: list[bytes]
    boxes: list[list[Box]]


def reference_cosines(embedder: Any, path: Any, frames: list[bytes], boxes: list[list[Box]]) -> tuple[float, float]:
    """The lowest cosine of the path's scene rows and crop rows against the reference PIL path."""
    import numpy as np

    got = path.embed_frames(frames, boxes)
    scene, crops = 1.0, 1.0
    for jpeg, frame_boxes, rows in zip(frames, boxes, got, strict=True):
        image = Image.open(io.BytesIO(jpeg)).convert("RGB")
        crops_pil = [image.crop((round(b[0]), round(b[1]), round(b[2]), round(b[3]))) for b in frame_boxes]
        want = embedder.embed_images([image, *crops_pil])
        a, b = rows.astype(np.float32), want.astype(np.float32)
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        scene, crops = min(scene, float(cos[0])), min(crops, float(cos[1:].min(initial=1.0)))
    return scene, crops


def flops_per_image(embedder: Any) -> float:
    """FLOPs of one image through the image tower, counted by torch's FLOP counter."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    size = embedder.model.visual.preprocess_cfg["size"]
    side = size if isinstance(size, int) else size[0]
    x = torch.zeros((1, 3, side, side), device=embedder.device, dtype=torch.float16 if embedder.fp16 else torch.float32)
    # With grad enabled nn.MultiheadAttention takes its slow path, whose projections the counter
    # sees (the fused inference kernel hides a third of the FLOPs of a ViT-B-32 from it).
    with torch.enable_grad(), FlopCounterMode(display=False) as counter:
        embedder.model.encode_image(x)
    return float(counter.get_total_flops())


def run_phase(path: Any, work: list[Batch], seconds: float, scene_only: bool) -> tuple[int, int]:
    """Frames and vectors embedded in ``seconds``: one thread prepares, this one runs the model."""
    ready: queue.Queue[tuple[int, Any] | None] = queue.Queue(maxsize=2)
    stop = threading.Event()
    failed: list[BaseException] = []

    def prepare() -> None:
        i = 0
        try:
            while not stop.is_set():
                jpegs, boxes = work[i % len(work)]
                ready.put((len(jpegs), path.prepare(jpegs, [[] for _ in jpegs] if scene_only else boxes)))
                i += 1
        except BaseException as exc:
            failed.append(exc)
        finally:
            ready.put(None)

    thread = threading.Thread(target=prepare, name="gpu-check-prepare", daemon=True)
    deadline = time.perf_counter() + seconds
    thread.start()
    frames = vectors = 0
    while (item := ready.get()) is not None:
        if stop.is_set():
            continue  # draining what was prepared before the stop
        vectors += len(path.embed(item[1]))
        frames += item[0]
        if time.perf_counter() >= deadline:
            stop.set()
    thread.join()
    if failed:
        raise failed[0]
    return frames, vectors


def warm_up(path: Any, work: list[Batch]) -> tuple[Any, str]:
    """Run each batch shape once (compiles there); eager instead when torch.compile fails."""
    from models.tensor_path import TensorPath

    try:
        for jpegs, boxes in work:
            path.embed_frames(jpegs, boxes)
        return path, path.compile_mode
    except Exception as exc:
        if path.compile_mode == "none":
            raise
        logger.exception("torch.compile (%s) failed; running eager", path.compile_mode)
        eager = TensorPath(path.embedder, compile_mode="none", batch_size=path.batch_size)
        for jpegs, boxes in work:
            eager.embed_frames(jpegs, boxes)
        return eager, f"none ({path.compile_mode} failed: {type(exc).__name__})"


def worker(rank: int, job: Job, barrier: Any, results: Any) -> None:
    """Load, warm up, check (rank 0), then the busy and the quiet phases between barriers."""
    logging.basicConfig(level=logging.WARNING)
    try:
        import torch

        from models.clip import ClipEmbedder
        from models.settings import ModelSettings
        from models.tensor_path import TensorPath

        torch.set_num_threads(job.threads)
        settings = ModelSettings(
            arch=job.arch,
            pretrained=job.pretrained,
            model_dir=job.model_dir,
            allow_random_weights=True,
            device=job.device,
        )
        embedder = ClipEmbedder.load(settings)
        busy = batches(job.frames, job.boxes, job.batch_size)
        quiet = batches(job.frames, [[] for _ in job.frames], job.batch_size)
        started = time.perf_counter()
        path, compiled = warm_up(
            TensorPath(embedder, compile_mode=job.compile_mode, batch_size=job.batch_size), [busy[0], quiet[0]]
        )
        info: dict[str, Any] = {"rank": rank, "warmup_s": time.perf_counter() - started}
        if rank == 0:
            n = job.check_frames
            info |= {"model": embedder.model_id, "weights": embedder.weights_source, "fp16": embedder.fp16}
            info |= {"decoder": path.decoder, "compile": compiled, "flops": flops_per_image(embedder)}
            info["cosine"] = reference_cosines(embedder, path, job.frames[:n], job.boxes[:n])
        results.put(info)
        barrier.wait(BARRIER_TIMEOUT_S)
        for name, work in (("busy", busy), ("quiet", quiet)):
            frames, vectors = run_phase(path, work, job.seconds, scene_only=name == "quiet")
            results.put({"rank": rank, "phase": name, "frames": frames, "vectors": vectors})
            barrier.wait(BARRIER_TIMEOUT_S)
    except BaseException:
        results.put({"rank": rank, "error": traceback.format_exc()})
        barrier.abort()
        raise


# -- the parent: GPU utilisation, the phases, the table ---------------------------------------


@dataclass(frozen=True)
class Phase:
    name: str
    crops: int
    frames: int
    vectors: int
    seconds: float
    util: float | None
    cosine: float


def time_windows(barrier: Any, util: Utilisation | None, timeout_s: float) -> tuple[list[float], list[float | None]]:
    """The three barrier crossings (ready, busy done, quiet done) and the GPU utilisation between them."""
    marks: list[float] = []
    utils: list[float | None] = []
    try:
        for _ in range(3):
            barrier.wait(timeout_s)
            marks.append(time.perf_counter())
            if len(marks) > 1:
                utils.append(util.stop() if util is not None else None)
            if len(marks) < 3 and util is not None:
                util.start()
    except threading.BrokenBarrierError:
        logger.error("a worker broke the barrier (failed or timed out)")
    return marks, utils


def gather(results: Any, expected: int) -> list[dict[str, Any]]:
    """The workers' messages: all ``expected`` of them, or what came before an error or a silence."""
    messages: list[dict[str, Any]] = []
    while len(messages) < expected:
        try:
            messages.append(results.get(timeout=30))
        except queue.Empty:
            break
        if "error" in messages[-1]:
            break
    return messages


def run_workers(job: Job, workers: int, util: Utilisation | None) -> tuple[dict[str, Any], list[Phase]]:
    """Start the workers, time the busy and quiet windows between barriers, gather their counts."""
    ctx = mp.get_context("spawn")  # CUDA cannot be forked
    barrier, results = ctx.Barrier(workers + 1), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, job, barrier, results)) for r in range(workers)]
    for p in procs:
        p.start()
    marks, utils = time_windows(barrier, util, BARRIER_TIMEOUT_S + job.seconds)
    messages = gather(results, 3 * workers)
    for p in procs:
        p.join(60)
        if p.is_alive():
            p.terminate()
    errors = [m["error"] for m in messages if "error" in m]
    if errors or len(marks) < 3:
        raise SystemExit("a worker failed:\n" + ("\n".join(errors) or "(no message; killed?)"))
    info = next(m for m in messages if "model" in m)
    info["warmup_s"] = max(m["warmup_s"] for m in messages if "warmup_s" in m)
    scene_cos, crop_cos = info["cosine"]
    phases = []
    for i, name in enumerate(("busy", "quiet")):
        counts = [m for m in messages if m.get("phase") == name]
        cosine = min(scene_cos, crop_cos) if name == "busy" else scene_cos
        crops = len(job.boxes[0]) if name == "busy" else 0
        frames, vectors = sum(m["frames"] for m in counts), sum(m["vectors"] for m in counts)
        phases.append(Phase(name, crops, frames, vectors, marks[i + 1] - marks[i], utils[i], cosine))
    return info, phases


def table(command: str, job: Job, workers: int, boxes_what: str, info: dict[str, Any], phases: list[Phase]) -> str:
    """The section: what ran, on what, and one table of the figures."""
    from loadtest.report import machine

    name = device_name()
    peak = peak_fp16_flops(name) if name else None
    lines = [
        "## GPU check (issue 19, part 5)",
        "",
        f"`{command}` on {machine()}. Model `{info['model']}` ({info['weights']}), "
        f"{'fp16' if info['fp16'] else 'fp32'}, torch.compile: {info['compile']} (warm-up {info['warmup_s']:.0f} s), "
        f"{workers} worker process(es) sharing {name or 'the CPU'}, {job.seconds:g} s a footage. "
        f"Decode: {info['decoder']}; crops: roi_align on the device; frames "
        f"{'x'.join(map(str, Image.open(io.BytesIO(job.frames[0])).size))} from real photos "
        f"({len(job.frames)} distinct); boxes: {boxes_what}. Image tower {info['flops'] / 1e9:.2f} GFLOP/image; "
        + (f"fp16 dense peak {peak / 1e12:g} TFLOPS." if peak else "fp16 peak: n/a (not a GPU in the table)."),
        "",
        "| footage | crops/frame | frames/s | vectors/s | GPU util | share of fp16 peak | min cosine vs PIL path |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in phases:
        rate = p.vectors / p.seconds
        util = f"{p.util:.0f}%" if p.util is not None else "n/a"
        share = f"{100 * rate * info['flops'] / peak:.1f}%" if peak else "n/a"
        cells = (p.name, p.crops, f"{p.frames / p.seconds:,.0f}", f"**{rate:,.0f}**", util, share, f"{p.cosine:.5f}")
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    busy = phases[0].vectors / phases[0].seconds
    met = min(p.cosine for p in phases) >= MIN_COSINE
    lines += [
        "",
        f"cosine >= {MIN_COSINE}: {'met' if met else 'NOT MET'}. Busy footage against the target "
        f"{TARGET:,} vectors/s (aim {AIM:,}): {busy / TARGET:.2f}x"
        + ("" if name else " (no GPU: the CPU runs the same code paths, the target is for an H100-class GPU)")
        + ".",
    ]
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=positive_float, default=None, help="timed seconds a footage (CUDA 20, CPU 3)")
    ap.add_argument("--workers", type=positive_int, default=None, help="processes sharing the device (CUDA 4, CPU 1)")
    ap.add_argument("--arch", default="ViT-B-32")
    ap.add_argument("--pretrained", default="openai", help="weights tag; random weights when none are found")
    ap.add_argument("--model-dir", type=Path, default=None, help="checkpoints, as MEDIAVEC_MODEL__MODEL_DIR")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", default=None, help="none, default, reduce-overhead (CUDA graphs), max-autotune")
    ap.add_argument("--batch", type=positive_int, default=None, help="rows a model call (CUDA 256, CPU 32)")
    ap.add_argument("--objects", type=positive_int, default=24, help="boxes a busy frame")
    ap.add_argument("--distinct", type=positive_int, default=None, help="distinct frames (CUDA 32, CPU 4)")
    ap.add_argument("--frame-size", type=frame_size, default=(1024, 576), help="WIDTHxHEIGHT")
    ap.add_argument("--boxes", choices=("auto", "detector", "generated"), default="auto")
    ap.add_argument("--photos", type=Path, default=None, help="a folder of photos (default: the sample photos)")
    ap.add_argument("--save-footage", type=Path, default=None, help="write the frames and boxes there and stop")
    ap.add_argument("--footage", type=Path, default=None, help="frames and boxes from --save-footage (to carry)")
    ap.add_argument("--check-frames", type=positive_int, default=None, help="busy frames checked against the PIL path")
    ap.add_argument("--threads", type=positive_int, default=None, help="torch threads a worker (CPU)")
    ap.add_argument("--write", action="store_true", help="write the 'GPU check' section of BENCHMARKS.md")
    return ap.parse_args(argv)


def make_job(args: argparse.Namespace, cuda: bool, frames: list[bytes], boxes: list[list[Box]]) -> Job:
    workers = args.workers or (4 if cuda else 1)
    return Job(
        arch=args.arch,
        pretrained=args.pretrained,
        model_dir=args.model_dir,
        device=args.device,
        compile_mode=args.compile or ("default" if cuda else "none"),
        batch_size=args.batch or (256 if cuda else 32),
        seconds=args.seconds if args.seconds is not None else (20.0 if cuda else 3.0),
        threads=args.threads or max(1, (os.cpu_count() or 1) // workers),
        check_frames=args.check_frames or (4 if cuda else 1),
        frames=frames,
        boxes=boxes,
    )


def build_footage(args: argparse.Namespace, cuda: bool) -> tuple[list[bytes], list[list[Box]], str]:
    """Frames cut from the photos, busy boxes on them, and where those boxes came from."""
    photos = photo_paths(args.photos)
    if not photos:
        raise SystemExit("no photos: install scikit-image and ultralytics (their sample photos) or pass --photos DIR")
    width, height = args.frame_size
    frames = make_frames(photos, args.distinct or (32 if cuda else 4), (width, height))
    boxes, boxes_what = busy_boxes(frames, args.objects, args.boxes, args.device)
    return frames, boxes, boxes_what


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    cuda = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    if args.footage is not None:
        if not (args.footage / "boxes.json").is_file():
            print(f"error: {args.footage} holds no footage (make it with --save-footage)", file=sys.stderr)
            return 2
        frames, boxes, boxes_what = load_footage(args.footage)
    else:
        frames, boxes, boxes_what = build_footage(args, cuda)
    if args.save_footage is not None:
        save_footage(args.save_footage, frames, boxes, boxes_what)
        logger.info("saved %d frames and their boxes in %s", len(frames), args.save_footage)
        return 0
    job = make_job(args, cuda, frames, boxes)
    workers = args.workers or (4 if cuda else 1)
    util = Utilisation(torch.device(args.device if args.device != "auto" else "cuda").index or 0) if cuda else None
    started = time.perf_counter()
    info, phases = run_workers(job, workers, util)
    command = "python -m loadtest.gpu_check" + "".join(f" {a}" for a in (sys.argv[1:] if argv is None else argv))
    body = table(command, job, workers, boxes_what, info, phases)
    print(body)
    logger.info("gpu_check done in %.0f s", time.perf_counter() - started)
    if args.write:
        from loadtest.report import write_section

        write_section("gpu_check", body)
    return 0 if min(p.cosine for p in phases) >= MIN_COSINE else 1


if __name__ == "__main__":
    raise SystemExit(main())
