"""Every vector of a set of frames, with each model fed by its own queue across all the frames.

:class:`FramePipeline` owns one :class:`~consumers.embed.queues.ModelQueue` per model call
(vision 64, concept 32, text 512 by default; detector, OCR and faces too) and a small thread
pool that decodes, crops and preprocesses images. :meth:`FramePipeline.run` takes the frames
of one input batch and returns, per frame, its rows grouped by the model that made them:

- scene: the whole frame through the vision model;
- object: up to ``detector.max_objects`` detector boxes, each crop through the same vision model;
- grid: the whole frame and its ``grid x grid`` patches through the concept model, each labelled
  with the prompt of the bank it matches best;
- text: distinct object labels, OCR reads, spatial phrases, the run's prompt classes that the
  frame matches and one scene summary (:mod:`models.summary`), through the text model (the vision
  model's text tower by default);
- face: face descriptors in their own identity space.

Work is submitted frame by frame to every queue before anything waits, so the detector, the
concept model and the vision model run side by side, and crops of all frames share batches.
Strings already embedded (a label, a phrase, a prompt) come from a bounded cache.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from consumers.embed.queues import ModelQueue
from consumers.settings import ConsumerSettings
from models.bundle import EmbedModels, ImageEmbedder
from models.faces import Face
from models.geometry import Box, Detection, grid_boxes, spatial_phrases
from models.ocr import TextRead
from models.remote.client import ProviderUnavailable
from models.summary import SOURCE_DETECTIONS, scene_summary, summary_label
from schemas.spaces import SpaceName

logger = logging.getLogger(__name__)
T = TypeVar("T")

Texts = dict[str, "np.ndarray | BaseException"]  # a string's vector, or why the model failed on it
TEXT_CACHE_SIZE = 20_000
# A run's prompt class counts as shown by a frame when its zero-shot probability over the
# run's prompts (CLIP logit scale 100) reaches this, best first, at most MAX_PROMPT_ROWS.
PROMPT_MIN_PROB = 0.2
MAX_PROMPT_ROWS = 5


@dataclass
class Row:
    """One vector of a frame before it is stored: full model width, unit length."""

    space: SpaceName
    index: int
    vector: np.ndarray
    box: Box | None = None
    label: str | None = None
    score: float | None = None


@dataclass
class FrameVectors:
    """A frame's rows by producing model: ``vision``, ``concept``, ``text`` (MiniLM) or ``face``."""

    by_model: dict[str, list[Row]] = field(default_factory=dict)

    def add(self, model: str, row: Row) -> None:
        self.by_model.setdefault(model, []).append(row)

    @property
    def count(self) -> int:
        return sum(len(rows) for rows in self.by_model.values())


@dataclass
class _Pending:
    """A frame's futures while its work is in flight."""

    image: Image.Image
    prompts: tuple[str, ...]
    scene: Future[np.ndarray] | None = None
    detections: Future[list[Detection]] | None = None
    grid: list[Future[np.ndarray]] = field(default_factory=list)
    grid_boxes: list[Box] = field(default_factory=list)
    reads: Future[list[TextRead]] | None = None
    faces: Future[list[Face]] | None = None
    face_scale: float = 1.0
    objects: list[tuple[Detection, Future[np.ndarray]]] = field(default_factory=list)
    texts: list[tuple[str, Box | None, float | None]] = field(default_factory=list)
    summary: str | None = None


class FramePipeline:
    """Queues and threads around the loaded models; :meth:`close` stops them."""

    def __init__(self, models: EmbedModels, settings: ConsumerSettings) -> None:
        self.models = models
        self.settings = settings
        self.spaces = set(settings.embed.spaces)
        e = settings.embed
        self._pool = ThreadPoolExecutor(max(1, e.preprocess_workers), thread_name_prefix="embed-prep")
        self._queues: list[ModelQueue[Any, Any]] = []
        self._text_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.vision_q = self._queue("vision", self._vision_fn(models.vision), e.batch_size)
        self.concept_q = self._queue("concept", self._vision_fn(models.concept), e.concept_batch_size)
        self.text_q = self._queue("text", self._texts if self._embeds_text() else None, e.text_batch_size)
        self.detector_q = self._queue("detector", self._detect if models.detector else None, e.detector_batch_size)
        self.ocr_q = self._queue("ocr", self._ocr if models.ocr else None, 4)
        self.face_q = self._queue("face", self._faces if models.faces else None, 4)

    def close(self) -> None:
        for q in self._queues:
            q.close()
        self._pool.shutdown(wait=True, cancel_futures=True)

    # -- queues -------------------------------------------------------------------------------

    def _queue(
        self, name: str, fn: Callable[[list[Any]], Sequence[Any]] | None, size: int
    ) -> ModelQueue[Any, Any] | None:
        if fn is None:
            return None
        e = self.settings.embed
        q: ModelQueue[Any, Any] = ModelQueue(
            name,
            fn,
            batch_size=size,
            deadline_s=e.queue_deadline_s,
            depth_batches=e.queue_depth_batches,
            fatal=(ProviderUnavailable,),
        )
        self._queues.append(q)
        return q

    def _embeds_text(self) -> bool:
        return "text" in self.spaces and (self.models.text is not None or self.models.vision is not None)

    @staticmethod
    def _vision_fn(embedder: ImageEmbedder | None) -> Callable[[list[Any]], Sequence[Any]] | None:
        """The queue's call: preprocessed images (tensors, or a remote provider's JPEGs) to rows."""
        return None if embedder is None else embedder.embed_prepared

    def _texts(self, strings: list[str]) -> list[np.ndarray | Exception]:
        return self.models.embed_text_items(strings)

    def _detect(self, items: list[tuple[Image.Image, tuple[str, ...]]]) -> list[list[Detection]]:
        """One forward per distinct prompt set; an open-vocabulary detector takes the run's prompts as classes."""
        d, detector = self.settings.detector, self.models.detector
        assert detector is not None
        out: list[list[Detection]] = [[] for _ in items]
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, (_, prompts) in enumerate(items):
            groups.setdefault(prompts if detector.open_vocabulary else (), []).append(i)
        for prompts, slots in groups.items():
            if detector.open_vocabulary:
                detector.use_classes(prompts)
            found = detector.detect([items[i][0] for i in slots], max_objects=d.max_objects, min_score=d.min_score)
            for i, dets in zip(slots, found, strict=True):
                out[i] = dets
        return out

    def _ocr(self, images: list[Image.Image]) -> list[list[TextRead]]:
        assert self.models.ocr is not None
        return [self.models.ocr.read(image, self.settings.text.ocr_min_score) for image in images]

    def _faces(self, images: list[Image.Image]) -> list[list[Face]]:
        assert self.models.faces is not None
        return [self.models.faces.faces(image, self.settings.faces.max_faces) for image in images]

    # -- one batch of frames ------------------------------------------------------------------

    def run(self, images: Sequence[Image.Image], prompts: Sequence[tuple[str, ...]]) -> list[FrameVectors | Exception]:
        """Rows per frame, in order; a frame whose own work failed gets the exception instead."""
        pending = [_Pending(image, p) for image, p in zip(images, prompts, strict=True)]
        for p in pending:
            self._submit_raw(p)
        self._submit_pixels(pending)
        self._flush(self.detector_q, self.ocr_q, self.face_q, self.concept_q)
        self._submit_crops(pending)
        for p in pending:
            self._note_strings(p)
        self._flush(self.vision_q, self.text_q)
        texts = self._embed_strings(pending)
        return [self._collect(p, texts) for p in pending]

    def _submit_raw(self, p: _Pending) -> None:
        """Models that take the frame as it is: detector, OCR, faces."""
        if self.detector_q is not None and self.spaces & {"object", "text"}:
            p.detections = self.detector_q.submit((p.image, p.prompts))
        if self.ocr_q is not None and "text" in self.spaces:
            p.reads = self.ocr_q.submit(p.image)
        if self.face_q is not None and "face" in self.spaces:
            small, p.face_scale = _bounded(p.image, self.settings.faces.max_side)
            p.faces = self.face_q.submit(small)

    def _submit_pixels(self, pending: list[_Pending]) -> None:
        """Scenes and grid patches: preprocessed in the pool, then queued in frame order."""
        vision, concept, vision_q, concept_q = self.models.vision, self.models.concept, self.vision_q, self.concept_q
        if "scene" in self.spaces and vision is not None and vision_q is not None:
            scenes = self._pool.map(lambda p: vision.preprocess([p.image])[0], pending)
            for p, prepared in zip(pending, scenes, strict=True):
                p.scene = vision_q.submit(prepared)
        if "grid" in self.spaces and concept is not None and concept_q is not None:
            n = self.settings.embed.grid
            for p in pending:
                w, h = p.image.size
                p.grid_boxes = [(0.0, 0.0, float(w), float(h))] + [tuple(map(float, b)) for b in grid_boxes(w, h, n)]  # type: ignore[misc]
            crops = self._pool.map(lambda p: concept.preprocess([p.image.crop(b) for b in p.grid_boxes]), pending)
            for p, pixels in zip(pending, crops, strict=True):
                p.grid = [concept_q.submit(x) for x in pixels]

    def _submit_crops(self, pending: list[_Pending]) -> None:
        """Once detections are in: each frame's object crops, preprocessed in the pool, to the vision queue."""
        vision, vision_q = self.models.vision, self.vision_q
        if "object" not in self.spaces or vision is None or vision_q is None:
            return
        min_side = self.settings.detector.min_side_px

        def crops(p: _Pending) -> tuple[list[Detection], Any]:  # tensors or a provider's JPEGs
            detections = p.detections.result() if p.detections is not None else []
            keep = [d for d in detections if _big_enough(d.box, min_side)]
            return keep, vision.preprocess([p.image.crop(_int_box(d.box)) for d in keep]) if keep else None

        for p, (keep, pixels) in zip(pending, self._pool.map(crops, pending), strict=True):
            if pixels is not None:
                p.objects = [(d, vision_q.submit(x)) for d, x in zip(keep, pixels, strict=True)]

    def _note_strings(self, p: _Pending) -> None:
        """A frame's strings for the text space: object labels, OCR reads, spatial phrases, and
        the scene summary written from them (none for a frame where nothing was found or read)."""
        if "text" not in self.spaces:
            return
        detections = p.detections.result() if p.detections is not None else []
        reads = p.reads.result() if p.reads is not None else []
        phrases = spatial_phrases(detections, p.image.size[0], self.settings.text.max_phrases)
        for label in dict.fromkeys(d.label for d in detections):
            p.texts.append((label, None, None))
        for read in reads:
            p.texts.append((read.text, read.box, read.score))
        for phrase in phrases:
            p.texts.append((phrase, None, None))
        p.summary = scene_summary([d.label for d in detections], phrases, [r.text for r in reads])

    def _embed_strings(self, pending: list[_Pending]) -> Texts:
        """Every string of the batch (texts and prompt classes), cached ones without a model call."""
        wanted = dict.fromkeys(
            s for p in pending for s in [*(t for t, _, _ in p.texts), *p.prompts, *([p.summary] if p.summary else [])]
        )
        text_q = self.text_q
        if not wanted or text_q is None:
            return {}
        out: dict[str, np.ndarray | BaseException] = {s: self._text_cache[s] for s in wanted if s in self._text_cache}
        futures = {s: text_q.submit(s) for s in wanted if s not in out}
        text_q.flush()
        for s, f in futures.items():
            failed = f.exception()
            if failed is not None:  # that string's frames fail with it (see _text_rows)
                out[s] = failed
                continue
            out[s] = self._text_cache[s] = f.result()
        while len(self._text_cache) > TEXT_CACHE_SIZE:
            self._text_cache.popitem(last=False)
        return out

    def _collect(self, p: _Pending, texts: Texts) -> FrameVectors | Exception:
        try:
            return self._rows(p, texts)
        except Exception as exc:  # this frame's item failed alone in its model (see ModelQueue)
            return exc

    def _rows(self, p: _Pending, texts: Texts) -> FrameVectors:
        out = FrameVectors()
        scene = p.scene.result() if p.scene is not None else None
        if scene is not None:
            out.add("vision", Row("scene", 0, scene))
        for i, (d, f) in enumerate(p.objects):
            out.add("vision", Row("object", i, f.result(), d.box, d.label, d.score))
        self._grid_rows(p, out)
        self._text_rows(p, texts, scene, out)
        for i, face in enumerate(p.faces.result() if p.faces is not None else []):
            box = tuple(v / p.face_scale for v in face.box)
            out.add("face", Row("face", i, face.descriptor.astype(np.float16), box, "face", face.score))  # type: ignore[arg-type]
        return out

    def _grid_rows(self, p: _Pending, out: FrameVectors) -> None:
        bank, n = self.models.bank_vectors, self.settings.embed.grid
        for i, (box, f) in enumerate(zip(p.grid_boxes, p.grid, strict=True)):
            vector = f.result()
            label, score = "frame" if i == 0 else f"patch {(i - 1) // n},{(i - 1) % n}", None
            if bank is not None and len(bank):
                sims = bank.astype(np.float32) @ vector.astype(np.float32)
                best = int(np.argmax(sims))
                label, score = f"{label}: {self.models.prompt_bank[best]}", float(sims[best])
            out.add("concept", Row("grid", i, vector, box, label, score))

    def _text_rows(self, p: _Pending, texts: Texts, scene: np.ndarray | None, out: FrameVectors) -> None:
        if not texts:
            return
        model = "text" if self.models.text is not None else "vision"
        rows = list(p.texts)
        if p.prompts and scene is not None and self.models.text is None:
            rows += [(prompt, None, prob) for prompt, prob in _matching_prompts(p.prompts, texts, scene)]
        first = {string: (box, score) for string, box, score in reversed(rows)}  # the first of repeats wins
        strings = list(dict.fromkeys(string for string, _, _ in rows))
        for i, string in enumerate(strings):
            box, score = first[string]
            out.add(model, Row("text", i, _vector(texts, string), box, string, score))
        if p.summary:  # the sentence's vector, under a label that says it is the summary and who wrote it
            label = summary_label(p.summary, SOURCE_DETECTIONS)
            out.add(model, Row("text", len(strings), _vector(texts, p.summary), None, label, None))

    @staticmethod
    def _flush(*queues: ModelQueue[Any, Any] | None) -> None:
        for q in queues:
            if q is not None:
                q.flush()


def _vector(texts: Texts, string: str) -> np.ndarray:
    """A string's vector; the model's failure on it fails the frame (see :meth:`FramePipeline._collect`)."""
    vector = texts[string]
    if isinstance(vector, BaseException):
        raise vector
    return vector


def _matching_prompts(prompts: Sequence[str], texts: Texts, scene: np.ndarray) -> list[tuple[str, float]]:
    """The run's prompt classes a frame shows, by zero-shot probability over those prompts."""
    matrix = np.stack([_vector(texts, p) for p in prompts]).astype(np.float32)
    logits = 100.0 * (matrix @ scene.astype(np.float32))
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    order = np.argsort(-probs)[:MAX_PROMPT_ROWS]
    return [(prompts[i], float(probs[i])) for i in order if probs[i] >= PROMPT_MIN_PROB]


def _int_box(box: Box) -> tuple[int, int, int, int]:
    return (round(box[0]), round(box[1]), round(box[2]), round(box[3]))


def _big_enough(box: Box, min_side: int) -> bool:
    return box[2] - box[0] >= min_side and box[3] - box[1] >= min_side


def _bounded(image: Image.Image, max_side: int) -> tuple[Image.Image, float]:
    """The image scaled down to ``max_side`` (and the scale factor), or as it is when smaller."""
    side = max(image.size)
    if side <= max_side:
        return image, 1.0
    scale = max_side / side
    size = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
    return image.resize(size, Image.Resampling.BILINEAR), scale
