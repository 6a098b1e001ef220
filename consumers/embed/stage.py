"""The embed stage's pure transform: media.frames in, every vector of every frame out.

Per input batch: decode each frame event and its JPEG (bad ones become Failures for the DLQ),
hand the good frames to the :class:`~consumers.embed.pipeline.FramePipeline` (one bounded queue
per model call, pooling frames and crops across the whole batch), then emit per frame one
``vector_batch`` event per producing model, keyed by media id:

- the vision model's batch: scene, object and (with the vision text backend) text rows;
- the concept model's batch: grid rows;
- the face model's batch: face rows; the MiniLM batch: text rows when that backend is set.

Every batch of a frame carries the frame's size (the pixel space of its boxes); the one holding
the scene row (or, without a scene space, the frame's first) also carries a small JPEG thumbnail
made from the image decoded here (``thumbnail.py``), which sink-postgres keeps for the service.

Vectors leave at their stored width (``store_dim``: truncated and renormalised) as fp16 unit rows;
faces keep their 128 dimensions. A model fault (out of memory, a lost device) retries the whole
batch; a frame that fails alone in a model goes to the DLQ. With a remote provider, a frame the
provider refuses for good is a ``provider_refused`` dead letter with the provider's message, and a
provider that cannot be reached raises ``StageUnavailable``: the runner pauses consumption until
it answers again. No Kafka here.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

import schemas
from consumers.embed.pipeline import FramePipeline, FrameVectors, Row
from consumers.embed.provider_report import ProviderReporter
from consumers.embed.thumbnail import FrameView, frame_view
from consumers.registry import EMBED
from consumers.settings import ConsumerSettings
from media.decode import identify
from models.bundle import EmbedModels, stored
from models.remote.client import ItemRefused, ProviderUnavailable
from schemas.limits import MAX_FRAME_SIDE
from schemas.models import Frame, VectorBatch, VectorRow
from streams.memory import HeapTrimmer
from streams.stage import Failure, InputRecord, OutputRecord, Result, RetryBatch, StageUnavailable, TopicKey

if TYPE_CHECKING:
    import torch

    from models.clip import ClipEmbedder

logger = logging.getLogger(__name__)


def decode_image(jpeg: bytes) -> Image.Image:
    """Fully decode JPEG bytes to RGB (PIL decodes lazily, so force it here, not in the model)."""
    return decode_scaled(jpeg)[0]


def decode_scaled(jpeg: bytes, min_sides: tuple[int, int] = (0, 0)) -> tuple[Image.Image, tuple[int, int]]:
    """Decode JPEG bytes to RGB no smaller than ``min_sides`` (short, long): the image and its full size.

    libjpeg decodes at 1/2, 1/4 or 1/8 scale (draft mode: fewer inverse DCTs, a smaller image to
    resize) when the result still has a short side of at least ``min_sides[0]`` and a long side of
    at least ``min_sides[1]``; (0, 0) decodes at full size.
    """
    image = identify(jpeg)  # not Image.open: ultralytics patches it to pip-install a HEIF plugin
    if image is None:
        raise ValueError("the frame's bytes are not an image")
    size = image.size
    if max(size) > MAX_FRAME_SIDE:  # checked before any pixel is decoded: no frame is a pixel bomb
        raise ValueError(f"the frame claims {size[0]}x{size[1]} pixels, over {MAX_FRAME_SIDE} on a side")
    if image.format == "JPEG" and min(size) > 0:
        scale = max(min_sides[0] / min(size), min_sides[1] / max(size))
        if 0 < scale < 1:
            image.draft(None, (math.ceil(size[0] * scale), math.ceil(size[1] * scale)))
    image.load()
    return (image if image.mode == "RGB" else image.convert("RGB")), size


def prepare_frame(embedder: ClipEmbedder, frame: Frame) -> torch.Tensor:
    """Decode and preprocess one frame: (1, 3, H, W) on the CPU. Raises on an unreadable image."""
    return embedder.preprocess([decode_image(frame.jpeg)])


def embed_frames_in_memory(embedder: ClipEmbedder, frames: Sequence[Frame], batch_size: int) -> np.ndarray:
    """Scene vectors of frames with the vision model alone: the benchmarks' model-only baseline."""
    pixels = [prepare_frame(embedder, frame) for frame in frames]
    return embedder.embed_pixel_chunks(pixels, batch_size)


def frame_prompts(frame: Frame) -> tuple[str, ...]:
    """The run's prompt classes carried in the frame's options (distinct, non-empty, in order)."""
    prompts = frame.options.get("prompts", [])
    if not isinstance(prompts, list):
        return ()
    return tuple(dict.fromkeys(p.strip() for p in prompts if isinstance(p, str) and p.strip()))


class VectorWriter:
    """Frame rows -> vector_batch events, one per producing model, at each model's stored width."""

    def __init__(self, models: EmbedModels, settings: ConsumerSettings) -> None:
        self.model_ids: dict[str, str] = {}
        self.store_dims: dict[str, int | None] = {}
        if models.vision is not None:
            self._add("vision", models.vision.model_id, settings.store_dim_of("vision"))
        if models.concept is not None:
            self._add("concept", models.concept.model_id, settings.store_dim_of("concept"))
        if models.text is not None:
            self._add("text", models.text.model_id, settings.text.store_dim)
        if models.faces is not None:
            self._add("face", models.faces.model_id, None)  # an identity space is never truncated

    def _add(self, key: str, model_id: str, dim: int | None) -> None:
        self.model_ids[key] = model_id
        self.store_dims[key] = dim

    def outputs(self, frame: Frame, vectors: FrameVectors, view: FrameView) -> list[OutputRecord]:
        groups = [(key, rows) for key, rows in vectors.by_model.items() if rows]
        carrier = _thumbnail_carrier(groups)
        out = []
        for i, (key, rows) in enumerate(groups):
            batch = self.batch(frame, key, rows, view if i == carrier else replace(view, thumbnail=None))
            out.append(OutputRecord("vectors", frame.media_id.encode(), schemas.encode_vector_batch(batch)))
        return out

    def batch(self, frame: Frame, key: str, rows: list[Row], view: FrameView) -> VectorBatch:
        model = self.model_ids[key]
        matrix = stored(np.stack([r.vector for r in rows]), self.store_dims[key])
        return VectorBatch(
            model=model,
            vectors=matrix,
            rows=tuple(_vector_row(model, frame, r) for r in rows),
            source_url=frame.source_url,
            collection=frame.collection,
            content_sha256=frame.content_sha256,
            metadata=dict(frame.metadata),
            run_id=frame.run_id,
            published_at=frame.published_at,
            frame_width=view.width,
            frame_height=view.height,
            thumbnail=view.thumbnail,
        )


def _thumbnail_carrier(groups: Sequence[tuple[str, list[Row]]]) -> int:
    """Which of a frame's batches carries its thumbnail: the one with the scene row, else the first."""
    return next((i for i, (_, rows) in enumerate(groups) if any(r.space == "scene" for r in rows)), 0)


def _vector_row(model: str, frame: Frame, row: Row) -> VectorRow:
    return VectorRow(
        point_id=schemas.point_id(model, frame.media_id, frame.frame_index, row.space, row.index),
        space=row.space,
        media_id=frame.media_id,
        frame_index=frame.frame_index,
        timestamp_s=frame.timestamp_s,
        object_index=row.index,
        box=tuple(float(v) for v in row.box) if row.box is not None else None,  # type: ignore[arg-type]
        label=row.label,
        score=row.score,
    )


def _key_text(record: InputRecord) -> str:
    return record.key.decode("utf-8", errors="replace") if record.key else ""


def _decode_record(
    record: InputRecord, min_sides: tuple[int, int], thumbnail: tuple[int, int]
) -> tuple[Frame, Image.Image, FrameView] | Failure:
    """The frame event, its image (scaled down as far as ``min_sides`` allows) and its view."""
    try:
        frame = schemas.decode_frame(record.value)
    except schemas.SchemaError as exc:
        return Failure("invalid_frame", str(exc), media_id=_key_text(record))
    try:
        image, size = decode_scaled(frame.jpeg, min_sides)
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        reason = f"frame {frame.frame_index} is not a decodable image: {type(exc).__name__}: {exc}"
        return Failure(
            "undecodable_frame", reason, media_id=frame.media_id, details={"frame_index": str(frame.frame_index)}
        )
    return frame, image, frame_view(image, size, *thumbnail)


def scaled_decode_sides(settings: ConsumerSettings, models: EmbedModels) -> tuple[int, int]:
    """The smallest (short, long) sides a frame may be decoded at: (0, 0), full size, unless only the
    local scene model reads the image besides the thumbnail (its side, the long side).

    The short side stays at least twice the model's input side (the side it resizes the short side
    to), so its antialiased resize still sees 2x the pixels: the vectors match those of the full
    decode at cosine >= 0.9999 (at 1x they fell to 0.997 on some photos).
    """
    vision = models.vision
    side = getattr(vision, "input_side", 0)
    if set(settings.embed.spaces) != {"scene"} or models.remote is not None or not side:
        return (0, 0)
    return (2 * int(side), settings.embed.thumbnail_side)


class EmbedStage:
    """Stage ``embed``: frames -> vectors of every configured space. Models load in :meth:`start`."""

    name = EMBED.name
    input_topic: TopicKey = EMBED.input

    def __init__(self, settings: ConsumerSettings, models: EmbedModels | None = None) -> None:
        self._settings = settings
        self._models = models
        self._owns_models = models is None
        self._pipeline: FramePipeline | None = None
        self._writer: VectorWriter | None = None
        self._reporter: ProviderReporter | None = None
        self._decoders: ThreadPoolExecutor | None = None
        self._min_sides = (0, 0)
        self.frames_done = 0
        self.vectors_done = 0
        self._trimmer = HeapTrimmer()

    @property
    def models(self) -> EmbedModels:
        if self._models is None:
            raise RuntimeError("EmbedStage.start() has not been called")
        return self._models

    def start(self) -> None:
        if self._models is None:
            self._models = EmbedModels.load(
                self._settings, self._settings.embed.spaces, prompt_bank=self._settings.embed.prompt_bank
            )
        self._pipeline = FramePipeline(self._models, self._settings)
        self._writer = VectorWriter(self._models, self._settings)
        self._min_sides = scaled_decode_sides(self._settings, self._models)
        # decoding releases the GIL: frames of a batch decode on as many cores as preprocessing uses
        self._decoders = ThreadPoolExecutor(self._settings.embed.preprocess_workers, thread_name_prefix="embed-decode")
        if self._models.remote is not None:
            self._reporter = ProviderReporter(self._models.remote, self._settings.data_dir).start()

    def process(self, batch: Sequence[InputRecord]) -> list[Result]:
        if self._pipeline is None or self._writer is None or self._decoders is None:
            raise RuntimeError("EmbedStage.start() has not been called")
        e = self._settings.embed
        decode = functools.partial(
            _decode_record, min_sides=self._min_sides, thumbnail=(e.thumbnail_side, e.thumbnail_quality)
        )
        decoded = list(self._decoders.map(decode, batch))
        good = [(i, d) for i, d in enumerate(decoded) if not isinstance(d, Failure)]
        frames = [d[0] for _, d in good]
        views = [d[2] for _, d in good]
        vectors = self._pipeline.run([d[1] for _, d in good], [frame_prompts(f) for f in frames])
        self._provider_down(vectors)
        # a provider's refusal is that frame's own verdict, not a model fault to retry the batch for
        failed = [v for v in vectors if isinstance(v, Exception) and not isinstance(v, ItemRefused)]
        if failed and len(failed) == len(vectors):
            logger.warning("every frame of a batch of %d failed in a model, retrying: %s", len(vectors), failed[0])
            raise RetryBatch(f"model call failed: {type(failed[0]).__name__}: {failed[0]}")
        results: list[Result] = [d if isinstance(d, Failure) else [] for d in decoded]
        for (slot, _), frame, view, v in zip(good, frames, views, vectors, strict=True):
            results[slot] = self._result(frame, view, v)
        self._trimmer.maybe_trim()  # what a large batch freed goes back; RSS stays what is held
        return results

    def _provider_down(self, vectors: Sequence[FrameVectors | Exception]) -> None:
        """Raise StageUnavailable when the remote provider could not be reached for any frame:
        the runner pauses consumption and redoes the batch, so no frame is dead-lettered for it."""
        down = next((v for v in vectors if isinstance(v, ProviderUnavailable)), None)
        remote = self.models.remote
        if down is not None and remote is not None:
            raise StageUnavailable(f"embedding provider unavailable: {down}", remote.wait_available)

    def _result(self, frame: Frame, view: FrameView, vectors: FrameVectors | Exception) -> Result:
        assert self._writer is not None
        if isinstance(vectors, ItemRefused):
            reason = f"frame {frame.frame_index}: the embedding provider refused it: {vectors}"
            return Failure(
                "provider_refused", reason, media_id=frame.media_id, details={"frame_index": str(frame.frame_index)}
            )
        if isinstance(vectors, Exception):
            reason = f"frame {frame.frame_index}: a model failed on it: {type(vectors).__name__}: {vectors}"
            return Failure("model_failed_on_frame", reason, media_id=frame.media_id)
        self.frames_done += 1
        self.vectors_done += vectors.count
        return self._writer.outputs(frame, vectors, view)

    def close(self) -> None:
        if self._reporter is not None:
            self._reporter.close()
            self._reporter = None
        if self._pipeline is not None:
            self._pipeline.close()
        if self._decoders is not None:
            self._decoders.shutdown(wait=True, cancel_futures=True)
            self._decoders = None
        if self._models is not None and self._owns_models:
            self._models.close()
        self._pipeline = self._writer = None
        self._models = None
