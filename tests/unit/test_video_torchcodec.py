"""The torchcodec decode path (NVDEC on a CUDA device; the system FFmpeg on the CPU, as here) samples
the same frames as the PyAV path: vtest.avi and its H.264, HEVC, VP9 and AV1 re-encodes."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from media.video import SegmentResult, sample_segment
from media.video_torchcodec import sample_segment_torchcodec
from tests.unit.video_media import CODECS, PIECE_S, SAME_FRAME_MAX_DIFF, diff


def _same(a: SegmentResult, b: SegmentResult) -> None:
    assert a.error is None and b.error is None
    assert [(f.index, round(f.timestamp_s, 6), f.width, f.height) for f in a.frames] == [
        (f.index, round(f.timestamp_s, 6), f.width, f.height) for f in b.frames
    ]
    assert max(diff(x.jpeg, y.jpeg) for x, y in zip(a.frames, b.frames, strict=True)) < SAME_FRAME_MAX_DIFF


def test_a_segment_of_vtest_gives_the_pyav_frames(vtest: Path) -> None:
    ours = sample_segment_torchcodec(vtest, 30, 34, 2, max_side=384)
    assert len(ours.frames) == 8 and max(f.width for f in ours.frames) == 384
    _same(ours, sample_segment(vtest, 30, 34, 2, max_side=384))


@pytest.mark.parametrize("codec", CODECS)
def test_every_codec_gives_the_pyav_frames(codec: str, encoded: dict[str, Path]) -> None:
    _same(sample_segment_torchcodec(encoded[codec], 0, PIECE_S, 10), sample_segment(encoded[codec], 0, PIECE_S, 10))


def test_a_file_object_is_read_like_a_range_reader(vtest: Path) -> None:
    ours = sample_segment_torchcodec(io.BytesIO(vtest.read_bytes()), 60, 62, 1, max_side=256)
    assert [f.timestamp_s for f in ours.frames] == [60.0, 61.0]


def test_a_cut_webm_keeps_the_frames_before_the_cut(encoded: dict[str, Path]) -> None:
    data = encoded["vp9"].read_bytes()
    result = sample_segment_torchcodec(data[: len(data) // 2], 0, 3, 2)
    assert result.error is not None and result.error.error_class == "truncated_video"
    assert 1 <= len(result.frames) < 6
    assert [f.timestamp_s for f in result.frames] == [0.5 * k for k in range(len(result.frames))]


def test_bad_input_and_limits_are_refused_like_the_pyav_path(vtest: Path) -> None:
    assert sample_segment_torchcodec(b"<!doctype html><p>moved</p>", 0, 3, 1).error.error_class == "not_a_video"  # type: ignore[union-attr]
    assert sample_segment_torchcodec(vtest, 0, 100, 10, max_frames=600).error.error_class == "too_many_frames"  # type: ignore[union-attr]
    assert sample_segment_torchcodec(vtest, 0, 3, 1, max_pixels=1000).error.error_class == "pixel_bomb"  # type: ignore[union-attr]
    assert sample_segment_torchcodec(vtest, 500, 510, 1).error.error_class == "segment_out_of_range"  # type: ignore[union-attr]


def test_a_cuda_device_without_cuda_is_a_setup_fault(vtest: Path) -> None:
    import torch

    if torch.cuda.is_available():
        result = sample_segment_torchcodec(vtest, 30, 32, 1, device="cuda")
        assert result.error is None and len(result.frames) == 2
        return
    with pytest.raises(RuntimeError, match="cannot decode on cuda"):
        sample_segment_torchcodec(vtest, 30, 32, 1, device="cuda")
