"""The embed stage's pure transform: media.frames in, one fp16 scene vector per frame out.

Per batch: decode every frame event and its JPEG (bad ones become Failures for the DLQ),
preprocess the good frames on the CPU, run the vision tower once over all of them (in chunks
of ``embed.batch_size``), and emit one ``vector_batch`` event per frame, keyed by media id.
A model fault (CUDA out of memory, a lost device) retries the whole batch; it is never the
frame's fault. No Kafka here: the runner feeds batches and routes the results.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

import schemas
from mediavec.models.clip import ClipEmbedder
from schemas.models import Frame, Space, VectorBatch, VectorRow
from streams.settings import Settings
from streams.stage import Failure, InputRecord, OutputRecord, Result, RetryBatch, TopicKey

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

SCENE: Space = "scene"


def decode_image(jpeg: bytes) -> Image.Image:
    """Fully decode JPEG bytes to RGB (PIL decodes lazily, so force it here, not in the model)."""
    with Image.open(io.BytesIO(jpeg)) as image:
        image.load()
        return image.convert("RGB")


def prepare_frame(embedder: ClipEmbedder, frame: Frame) -> torch.Tensor:
    """Decode and preprocess one frame: (1, 3, H, W) on the CPU. Raises on an unreadable image."""
    return embedder.preprocess([decode_image(frame.jpeg)])


def scene_output(model_id: str, frame: Frame, vector: np.ndarray) -> OutputRecord:
    """The vector_batch event carrying one frame's scene vector."""
    row = VectorRow(
        point_id=schemas.point_id(model_id, frame.media_id, frame.frame_index, SCENE, 0),
        space=SCENE,
        media_id=frame.media_id,
        frame_index=frame.frame_index,
        timestamp_s=frame.timestamp_s,
    )
    batch = VectorBatch(
        model=model_id,
        vectors=vector.reshape(1, -1).astype(np.float16),
        rows=(row,),
        source_url=frame.source_url,
        collection=frame.collection,
        content_sha256=frame.content_sha256,
        metadata=dict(frame.metadata),
        run_id=frame.run_id,
        published_at=frame.published_at,
    )
    return OutputRecord(topic="vectors", key=frame.media_id.encode(), value=schemas.encode_vector_batch(batch))


def embed_frames_in_memory(embedder: ClipEmbedder, frames: Sequence[Frame], batch_size: int) -> np.ndarray:
    """The stage's work without Kafka or serde: the benchmark's in-memory baseline.

    Same decode, same preprocessing, same chunked forward as :meth:`EmbedStage.process`.
    """
    pixels = [prepare_frame(embedder, frame) for frame in frames]
    return embedder.embed_pixel_chunks(pixels, batch_size)


def _key_text(record: InputRecord) -> str:
    return record.key.decode("utf-8", errors="replace") if record.key else ""


def _prepare_record(embedder: ClipEmbedder, record: InputRecord) -> tuple[Frame, torch.Tensor] | Failure:
    try:
        frame = schemas.decode_frame(record.value)
    except schemas.SchemaError as exc:
        return Failure("invalid_frame", str(exc), media_id=_key_text(record))
    try:
        return frame, prepare_frame(embedder, frame)
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        reason = f"frame {frame.frame_index} is not a decodable image: {type(exc).__name__}: {exc}"
        return Failure(
            "undecodable_frame", reason, media_id=frame.media_id, details={"frame_index": str(frame.frame_index)}
        )


class EmbedStage:
    """Stage ``embed``: frames -> scene vectors. Build the model in :meth:`start`."""

    name = "embed"
    input_topic: TopicKey = "frames"

    def __init__(self, settings: Settings, embedder: ClipEmbedder | None = None) -> None:
        self._settings = settings
        self._embedder = embedder

    @property
    def embedder(self) -> ClipEmbedder:
        if self._embedder is None:
            raise RuntimeError("EmbedStage.start() has not been called")
        return self._embedder

    def start(self) -> None:
        if self._embedder is None:
            self._embedder = ClipEmbedder.load(self._settings.model)

    def process(self, batch: Sequence[InputRecord]) -> list[Result]:
        embedder = self.embedder
        results: list[Result] = []
        good: list[tuple[int, Frame]] = []
        pixels: list[torch.Tensor] = []
        for record in batch:
            prepared = _prepare_record(embedder, record)
            if isinstance(prepared, Failure):
                results.append(prepared)
                continue
            good.append((len(results), prepared[0]))
            pixels.append(prepared[1])
            results.append([])  # replaced below once the vectors exist
        vectors = self._forward(embedder, pixels)
        for (slot, frame), vector in zip(good, vectors, strict=True):
            results[slot] = [scene_output(embedder.model_id, frame, vector)]
        logger.debug("embedded %d of %d frames", len(good), len(batch))
        return results

    def _forward(self, embedder: ClipEmbedder, pixels: list[torch.Tensor]) -> np.ndarray:
        try:
            return embedder.embed_pixel_chunks(pixels, self._settings.embed.batch_size)
        except Exception as exc:  # out of memory, a lost device: transient, not the frames' fault
            logger.warning("embedding %d frames failed, retrying the batch: %s", len(pixels), exc)
            raise RetryBatch(f"model forward failed: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        self._embedder = None
