"""Settings of the embed stage: input batches, model queues, the spaces it produces, thumbnails."""

from __future__ import annotations

from pydantic import BaseModel, Field

from schemas.spaces import ALL_SPACES, SpaceName
from streams.settings import SECTION

# A thumbnail rides on a vector batch and must stay within schemas.limits.MAX_THUMBNAIL_BYTES:
# 512 px at quality 95 of a busy frame is about 60 KiB; the default 128 px at 70 is about 5 KiB.
MAX_THUMBNAIL_SIDE = 512


class EmbedSettings(BaseModel):
    model_config = SECTION
    frames_per_batch: int = Field(32, ge=1, description="Frames consumed per transaction (the input batch).")
    batch_deadline_s: float = Field(0.5, ge=0, description="Longest wait for a full input batch from Kafka.")
    batch_size: int = Field(64, ge=1, description="Vision model batch (frames and object crops pooled across frames).")
    spaces: tuple[SpaceName, ...] = Field(ALL_SPACES, description="Vector spaces to produce per frame.")
    concept_batch_size: int = Field(32, ge=1, description="Concept (grid) model batch: whole frames and patches.")
    text_batch_size: int = Field(512, ge=1, description="Text model batch: prompts, OCR reads, spatial phrases.")
    detector_batch_size: int = Field(16, ge=1)
    queue_deadline_s: float = Field(0.02, ge=0, description="A model queue flushes a partial batch after this wait.")
    queue_depth_batches: int = Field(4, ge=1, description="Each model queue holds at most this many batches.")
    preprocess_workers: int = Field(2, ge=1, description="Threads decoding, cropping and preprocessing images.")
    grid: int = Field(4, ge=1, description="Patch grid side: grid x grid patches per frame.")
    prompt_bank: tuple[str, ...] = Field((), description="Prompts scored against the grid; empty: the built-in bank.")
    thumbnail_side: int = Field(
        128, ge=0, le=MAX_THUMBNAIL_SIDE, description="Longest side in pixels of each frame's thumbnail; 0: none."
    )
    thumbnail_quality: int = Field(70, ge=1, le=95, description="JPEG quality of the thumbnails.")
