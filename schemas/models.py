"""Typed models, one per schema version, shared by producers and consumers."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from schemas.spaces import SpaceName


@dataclass(frozen=True)
class MediaRequest:
    """media_request v1: one image URL or video segment (JSON on media.requests)."""

    media_id: str
    url: str
    kind: Literal["image", "video"] = "image"
    collection: str = "default"
    start_s: float | None = None
    end_s: float | None = None
    sample_fps: float | None = None
    options: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    run_id: str = ""
    published_at: float = 0.0
    reprocess: bool = False

    schema_version: int = 1


@dataclass(frozen=True)
class Frame:
    """frame v1: one decoded frame as JPEG bytes (Avro on media.frames)."""

    media_id: str
    frame_index: int
    timestamp_s: float
    source_url: str
    collection: str
    width: int
    height: int
    jpeg: bytes
    content_sha256: str
    options_json: str = "{}"
    metadata: dict[str, str] = field(default_factory=dict)
    run_id: str = ""
    published_at: float = 0.0
    frames_in_media: int = 1

    @property
    def options(self) -> dict[str, Any]:
        value = json.loads(self.options_json)
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class VectorRow:
    """Per-vector metadata inside a :class:`VectorBatch`."""

    point_id: str
    space: SpaceName
    media_id: str
    frame_index: int
    timestamp_s: float
    object_index: int = 0
    box: tuple[float, float, float, float] | None = None
    label: str | None = None
    score: float | None = None


@dataclass(frozen=True)
class VectorBatch:
    """vector_batch v2: the vectors of one frame, fp16 (Avro on the vectors topic).

    v2 adds the frame's size (the pixel space of the boxes; 0 when a v1 writer did not say) and
    a small JPEG of the frame, carried by one batch of the frame only (schemas/README.md).
    """

    model: str
    vectors: np.ndarray  # shape (len(rows), dim), dtype float16
    rows: tuple[VectorRow, ...]
    source_url: str
    collection: str
    content_sha256: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    run_id: str = ""
    published_at: float = 0.0
    frame_width: int = 0
    frame_height: int = 0
    thumbnail: bytes | None = None

    def __post_init__(self) -> None:
        if self.vectors.dtype != np.float16 or self.vectors.ndim != 2:
            raise ValueError(f"vectors must be a 2-d float16 array, got {self.vectors.dtype} {self.vectors.shape}")
        if self.vectors.shape[0] != len(self.rows):
            raise ValueError(f"{self.vectors.shape[0]} vectors but {len(self.rows)} rows")

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


@dataclass(frozen=True)
class Header:
    key: str
    value: bytes | None


@dataclass(frozen=True)
class DeadLetter:
    """dead_letter v2: an event a stage could not process (Avro on media.dlq)."""

    stage: str
    error_class: str
    reason: str
    source_topic: str
    source_partition: int
    source_offset: int
    original_value: bytes
    failed_at: float
    original_key: bytes | None = None
    original_headers: tuple[Header, ...] = ()
    media_id: str = ""
    redrive_count: int = 0
    details: dict[str, str] = field(default_factory=dict)
