"""Settings of the media layer: downloads under the address guard, image and video decoding."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from streams.settings import SECTION, StreamSettings


class FetchSettings(BaseModel):
    model_config = SECTION
    concurrency: int = Field(64, ge=1)
    per_host_concurrency: int = Field(8, ge=1)
    connect_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(20.0, gt=0)
    total_deadline_s: float = Field(60.0, gt=0)
    max_bytes: int = Field(50 * 1024 * 1024, ge=1)
    max_redirects: int = Field(5, ge=0)
    retries: int = Field(3, ge=0)
    backoff_base_s: float = Field(0.25, ge=0)
    backoff_max_s: float = Field(5.0, ge=0)
    max_pixels: int = Field(64_000_000, ge=1)
    max_side: int = Field(1024, ge=1)
    jpeg_quality: int = Field(90, ge=1, le=100)
    decode_workers: int = Field(2, ge=1, description="Threads that decode images (and read local files).")
    decode_processes: int = Field(
        0,
        ge=0,
        description="Processes that decode images beside the worker; 0 decodes in its threads (decode_workers).",
    )
    in_flight: int = Field(
        0, ge=0, description="Requests downloading or waiting to commit at once; 0 means 4 x concurrency."
    )
    commit_interval_s: float = Field(0.25, ge=0, description="Longest a finished request waits for its transaction.")
    allow_hosts: tuple[str, ...] = Field((), description="Hostnames exempt from the address guard.")
    allow_cidrs: tuple[str, ...] = Field((), description="Networks exempt from the address guard.")
    user_agent: str = "mediavec/0.1 (+https://mediavec.dev)"
    allow_paths: tuple[str, ...] = Field(
        (), description="Local directories a request may read through a file:// URL (nothing else is readable)."
    )
    default_sample_fps: float = Field(1.0, gt=0, description="Video sampling rate when a request names none.")
    max_video_frames: int = Field(600, ge=1, description="Most frames one video segment may yield; more is refused.")
    video_decode_mode: Literal["auto", "seek", "sequential"] = Field(
        "auto", description="Seek per sample or decode one pass; auto picks by keyframe spacing."
    )
    range_block_bytes: int = Field(1024 * 1024, ge=1, description="Bytes per HTTP range request when reading a video.")
    video_decoder: Literal["pyav", "torchcodec"] = Field(
        "pyav", description="pyav (CPU, FFmpeg bundled) or torchcodec (system FFmpeg; NVDEC on a CUDA device)."
    )
    video_decode_device: str = Field("cpu", description="torchcodec decode device: cpu, cuda or cuda:N (NVDEC).")
    seen_table: Literal["disk", "memory"] = Field(
        "disk",
        description="Where a worker keeps the dedup table: an SQLite file (flat memory) or a dict (~190 B per key).",
    )
    seen_table_dir: Path | None = Field(None, description="Folder of the on-disk dedup table (default DATA_DIR/fetch).")

    @property
    def max_in_flight(self) -> int:
        return self.in_flight or 4 * self.concurrency


class MediaSettings(StreamSettings):
    """The settings the media layer reads (``MEDIAVEC_FETCH__*``)."""

    fetch: FetchSettings = FetchSettings()
