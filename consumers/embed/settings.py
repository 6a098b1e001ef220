"""Settings of the embed stage: input batches, model queues, the spaces it produces."""

from __future__ import annotations

from pydantic import BaseModel, Field

from schemas.spaces import ALL_SPACES, SpaceName
from streams.settings import SECTION


class EmbedSettings(BaseModel):
    model_config = SECTION
    frames_per_batch: int = Field(32, description="Frames consumed per transaction (the input batch).")
    batch_deadline_s: float = Field(0.5, description="Longest wait for a full input batch from Kafka.")
    batch_size: int = Field(64, description="Vision model batch (frames and object crops pooled across frames).")
    spaces: tuple[SpaceName, ...] = Field(ALL_SPACES, description="Vector spaces to produce per frame.")
    concept_batch_size: int = Field(32, description="Concept (grid) model batch: whole frames and patches.")
    text_batch_size: int = Field(512, description="Text model batch: prompts, OCR reads, spatial phrases.")
    detector_batch_size: int = 16
    queue_deadline_s: float = Field(0.02, description="A model queue flushes a partial batch after this wait.")
    queue_depth_batches: int = Field(4, description="Each model queue holds at most this many batches.")
    preprocess_workers: int = Field(2, description="Threads decoding, cropping and preprocessing images.")
    grid: int = Field(4, description="Patch grid side: grid x grid patches per frame.")
    prompt_bank: tuple[str, ...] = Field((), description="Prompts scored against the grid; empty: the built-in bank.")
