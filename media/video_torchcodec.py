"""Video segments to sampled JPEG frames with torchcodec: the GPU decode path (NVDEC) behind a setting.

``fetch.video_decoder=torchcodec`` with ``fetch.video_decode_device=cuda`` decodes on the GPU
(torchcodec's CUDA build, NVDEC), scales the frames there and only moves the bounded frames to the
CPU for JPEG encoding; with ``cpu`` the same code decodes with the system FFmpeg (used by the tests,
which have no GPU). The sampling grid, frame indices, limits and error classes are those of the
PyAV path (:mod:`media.video`): grid times ``k / sample_fps`` in ``[start_s, end_s)``.
One difference: torchcodec returns the frame *on screen* at each grid time, the PyAV path the first
frame at or after it; they are the same frame whenever the grid falls on frame times.

The decoder opens in ``approximate`` seek mode (header metadata, no full scan), so a file read
over HTTP range requests is not read end to end before the first frame.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, cast

from PIL import Image

from media.decode import DecodeError
from media.video import SampledFrame, SegmentResult, Source, check_request, encode_jpeg
from media.video_sampling import Target, targets

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

CHUNK = 16  # frames fetched from the decoder per call: bounds device memory per segment
_EPS = 1e-6


def sample_segment_torchcodec(
    source: Source,
    start_s: float,
    end_s: float,
    sample_fps: float,
    max_side: int = 1024,
    jpeg_quality: int = 90,
    max_frames: int = 600,
    *,
    max_pixels: int = 64_000_000,
    device: str = "cpu",
) -> SegmentResult:
    """Frames of ``[start_s, end_s)`` at ``sample_fps`` as bounded JPEGs; errors come back in the result."""
    error = check_request(start_s, end_s, sample_fps, max_frames)
    if error is not None:
        return SegmentResult([], error)
    try:
        decoder = _open(source, device)
    except DecodeError as exc:
        return SegmentResult([], exc)
    meta = decoder.metadata
    if (meta.width or 0) * (meta.height or 0) > max_pixels:
        return SegmentResult([], DecodeError("pixel_bomb", f"{meta.width}x{meta.height} is over {max_pixels} pixels"))
    duration = float(meta.duration_seconds or 0.0)
    if duration and start_s >= duration:
        reason = f"segment starts at {start_s} s, the video lasts {duration:.3f} s"
        return SegmentResult([], DecodeError("segment_out_of_range", reason))
    wanted = [t for t in targets(start_s, end_s, sample_fps) if not duration or t.time_s < duration - _EPS]
    return _sample(decoder, wanted, max_side, jpeg_quality)


def _open(source: Source, device: str) -> Any:
    from torchcodec.decoders import VideoDecoder

    seek = getattr(source, "seek", None)
    if callable(seek):
        seek(0)  # FFmpeg's avio starts reading where the object stands: a probe may have moved it
    try:
        return VideoDecoder(cast(Any, source), device=device, seek_mode="approximate", dimension_order="NCHW")
    except (RuntimeError, ValueError) as exc:
        text = str(exc)
        if "cuda" in device and ("CUDA" in text or "cuda" in text):
            raise RuntimeError(f"torchcodec cannot decode on {device}: {text}") from exc  # a setup fault
        raise DecodeError("not_a_video", f"no decodable video stream ({type(exc).__name__}: {text[:160]})") from None


def _sample(decoder: Any, wanted: list[Target], max_side: int, quality: int) -> SegmentResult:
    frames: list[SampledFrame] = []
    for i in range(0, len(wanted), CHUNK):
        chunk = wanted[i : i + CHUNK]
        try:
            batch = decoder.get_frames_played_at([t.time_s for t in chunk])
        except (RuntimeError, IndexError):
            # Salvage the chunk target by target: the frames before the fault are kept.
            error = _one_by_one(decoder, chunk, max_side, quality, frames)
            if error is not None:
                return SegmentResult(frames, error, "seek")
            continue
        _keep(chunk, batch, max_side, quality, frames)
    return SegmentResult(frames, None, "seek")


def _one_by_one(
    decoder: Any, chunk: list[Target], max_side: int, quality: int, frames: list[SampledFrame]
) -> DecodeError | None:
    for target in chunk:
        try:
            batch = decoder.get_frames_played_at([target.time_s])
        except (RuntimeError, IndexError) as exc:
            where = f"after {frames[-1].timestamp_s:.3f} s" if frames else "before the first frame"
            text = str(exc)
            kind = "truncated_video" if "no more frames" in text else "corrupt_video"
            return DecodeError(kind, f"video data ends {where} ({type(exc).__name__}: {text[:160]})")
        _keep([target], batch, max_side, quality, frames)
    return None


def _keep(chunk: list[Target], batch: Any, max_side: int, quality: int, frames: list[SampledFrame]) -> None:
    for target, pts, image in zip(chunk, batch.pts_seconds.tolist(), _bounded(batch.data, max_side), strict=True):
        if frames and pts <= frames[-1].timestamp_s + _EPS:
            continue  # sampling above the video's rate: this frame was taken for the previous target
        frames.append(SampledFrame(target.index, float(pts), encode_jpeg(image, quality), *image.size))


def _bounded(data: torch.Tensor, max_side: int) -> list[Image.Image]:
    """(N, 3, H, W) uint8 frames, scaled on their device to at most ``max_side``, as RGB images."""
    import torch

    height, width = int(data.shape[-2]), int(data.shape[-1])
    scale = min(1.0, max_side / max(width, height))
    if scale < 1.0:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = torch.nn.functional.interpolate(data.float(), size=size, mode="area")
        data = scaled.round().clamp(0, 255).to(torch.uint8)
    pixels = data.permute(0, 2, 3, 1).contiguous().cpu().numpy()
    return [Image.fromarray(p, "RGB") for p in pixels]
