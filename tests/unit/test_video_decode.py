"""Video segment sampling on real footage: OpenCV's vtest.avi (Debian's opencv-doc) and re-encodes.

vtest.avi: 768x576, 10 fps, 79.5 s, MS-MPEG4v3, keyframes at 0/25/50/75 s (sparse). The
re-encodes are a 3-s piece from 20 s with a keyframe every 5 frames (dense).

Frame comparisons use 192x144 greyscale means of absolute differences (0-255 scale). Measured
on this footage: a frame against its own source frame after a lossy re-encode differs by
0.55-0.96; against the source frame 0.1 s before or after, by 1.59-3.1 (pedestrians move). So
"< 1.3 and closer to its own frame than to either neighbour" separates the right frame from an
off-by-one frame in every codec.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from PIL import Image

from devstack.testmedia import encoder_for
from media.video import ModeChoice, SegmentResult, probe, sample_segment
from media.video_sampling import choose_mode, segments, targets
from tests.unit.video_media import CODECS, PIECE_S, PIECE_START_S, SAME_FRAME_MAX_DIFF, diff

NATIVE_FRAME_S = 0.1


def test_probe_reads_duration_rate_size_and_sparse_keyframes(vtest: Path) -> None:
    info = probe(vtest)
    assert (info.duration_s, info.fps, info.width, info.height) == (79.5, 10.0, 768, 576)
    assert info.codec == "msmpeg4v3"
    assert info.keyframe_interval_s == pytest.approx(25.0)


def test_probe_of_a_reencode_sees_its_codec_and_dense_keyframes(encoded: dict[str, Path]) -> None:
    for codec, path in encoded.items():
        info = probe(path)
        assert info.codec == codec
        assert info.duration_s == pytest.approx(PIECE_S, abs=0.11)
        assert info.fps == pytest.approx(10.0)
        assert info.keyframe_interval_s == pytest.approx(0.5, abs=0.01), codec


@pytest.mark.parametrize(
    ("start", "end", "fps", "expected"),
    [(0, 5, 2, 10), (0, 5, 2.5, 13), (5, 10, 2.5, 12), (10, 20, 0.3, 3), (74, 80, 1, 6)],
)
def test_segment_yields_the_frames_its_sampling_rate_implies(
    vtest: Path, start: float, end: float, fps: float, expected: int
) -> None:
    result = sample_segment(vtest.read_bytes(), start, end, fps)
    assert result.error is None
    assert len(result.frames) == expected
    stamps = [f.timestamp_s for f in result.frames]
    assert stamps == sorted(set(stamps))
    assert all(start <= t < end for t in stamps)
    for frame, target in zip(result.frames, targets(start, end, fps), strict=True):
        assert frame.index == target.index
        assert target.time_s <= frame.timestamp_s < target.time_s + NATIVE_FRAME_S
        assert (frame.width, frame.height) == (768, 576)


def test_segments_sample_like_the_whole_video(vtest: Path) -> None:
    assert segments(79.5, 10)[-1] == (70, 79.5)
    assert len(segments(79.5, 10)) == 8
    assert segments(30, 10) == [(0, 10), (10, 20), (20, 30)]
    whole = sample_segment(vtest, 0, 15, 1.5)
    parts = [f for s, e in segments(15, 5) for f in sample_segment(vtest, s, e, 1.5).frames]
    assert [(f.index, f.timestamp_s, f.jpeg) for f in parts] == [(f.index, f.timestamp_s, f.jpeg) for f in whole.frames]


def test_sparse_keyframes_choose_one_pass_and_seeking_gives_the_same_frames(vtest: Path) -> None:
    auto = sample_segment(vtest, 30, 35, 2)
    seek = sample_segment(vtest, 30, 35, 2, mode="seek")
    assert auto.mode == "sequential" and seek.mode == "seek"
    assert auto.decoded_frames < seek.decoded_frames
    assert [f.timestamp_s for f in auto.frames] == [f.timestamp_s for f in seek.frames]
    assert len(auto.frames) == 10
    assert max(diff(a.jpeg, b.jpeg) for a, b in zip(auto.frames, seek.frames, strict=True)) < 0.5


def test_dense_keyframes_choose_seeking_and_one_pass_gives_the_same_frames(encoded: dict[str, Path]) -> None:
    auto = sample_segment(encoded["h264"], 0, 3, 1)
    one_pass = sample_segment(encoded["h264"], 0, 3, 1, mode="sequential")
    assert auto.mode == "seek" and one_pass.mode == "sequential"
    assert auto.decoded_frames < one_pass.decoded_frames
    assert [f.timestamp_s for f in auto.frames] == [f.timestamp_s for f in one_pass.frames] == [0.0, 1.0, 2.0]
    assert max(diff(a.jpeg, b.jpeg) for a, b in zip(auto.frames, one_pass.frames, strict=True)) < 0.5


@pytest.mark.parametrize("codec", CODECS)
def test_every_codec_gives_the_source_frames(codec: str, encoded: dict[str, Path], reference: SegmentResult) -> None:
    assert encoder_for(codec) is not None
    result = sample_segment(encoded[codec], 0, PIECE_S, 10)
    assert result.error is None
    assert [round(f.timestamp_s, 6) for f in result.frames] == [
        round(f.timestamp_s - PIECE_START_S, 6) for f in reference.frames
    ]
    source = reference.frames
    for i, frame in enumerate(result.frames):
        own = diff(frame.jpeg, source[i].jpeg)
        neighbours = [diff(frame.jpeg, source[j].jpeg) for j in (i - 1, i + 1) if 0 <= j < len(source)]
        assert own < SAME_FRAME_MAX_DIFF, (codec, i, own)
        assert own < min(neighbours), (codec, i, own, neighbours)


@pytest.mark.parametrize("mode", ["auto", "seek", "sequential"])
def test_avi_cut_in_half_returns_its_first_frames_and_truncated(vtest: Path, mode: ModeChoice) -> None:
    data = vtest.read_bytes()
    result = sample_segment(data[: len(data) // 2], 30, 45, 1, mode=mode)
    assert result.error is not None and result.error.error_class == "truncated_video"
    assert [f.timestamp_s for f in result.frames] == [float(t) for t in range(30, 40)]
    intact = sample_segment(data, 30, 40, 1)
    assert max(diff(a.jpeg, b.jpeg) for a, b in zip(result.frames, intact.frames, strict=True)) < 0.5


def test_avi_cut_in_half_past_its_data_is_truncated_without_frames(vtest: Path) -> None:
    data = vtest.read_bytes()
    result = sample_segment(data[: len(data) // 2], 60, 70, 1)
    assert result.error is not None and result.error.error_class == "truncated_video"
    assert result.frames == []


def test_webm_cut_in_half_returns_its_first_frames_and_truncated(encoded: dict[str, Path]) -> None:
    data = encoded["vp9"].read_bytes()
    result = sample_segment(data[: len(data) // 2], 0, 3, 2)
    assert result.error is not None and result.error.error_class == "truncated_video"
    assert 1 <= len(result.frames) < 6
    assert [f.timestamp_s for f in result.frames] == [0.5 * k for k in range(len(result.frames))]


def test_mp4_cut_before_its_index_is_truncated(encoded: dict[str, Path]) -> None:
    data = encoded["h264"].read_bytes()  # the moov atom is written at the end
    result = sample_segment(data[: len(data) // 2], 0, 3, 2)
    assert result.error is not None and result.error.error_class == "truncated_video"
    assert result.frames == []


# Fixed noise: fresh os.urandom bytes are, once in a while, a stream FFmpeg can decode a frame of.
@pytest.mark.parametrize(
    "data", [random.Random(0).randbytes(200_000), b"<!doctype html><html><body>moved</body></html>"]
)
def test_bytes_that_are_no_video_are_refused(data: bytes) -> None:
    result = sample_segment(data, 0, 5, 1)
    assert result.error is not None and result.error.error_class == "not_a_video"
    assert result.frames == []


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_still_image_is_not_a_video(fmt: str) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 10, 10)).save(buf, fmt)
    result = sample_segment(buf.getvalue(), 0, 5, 1)  # FFmpeg would open it as a one-frame video
    assert result.error is not None and result.error.error_class == "not_a_video"
    assert result.frames == []


@pytest.mark.parametrize(
    ("start", "end", "fps", "max_frames", "error_class"),
    [
        (100, 110, 1, 600, "segment_out_of_range"),
        (0, 1000, 1, 600, "too_many_frames"),
        (5, 5, 1, 600, "invalid_segment"),
        (0, 5, 0, 600, "invalid_segment"),
        (0, 10, 2, 19, "too_many_frames"),
    ],
)
def test_bad_requests_are_refused_without_decoding(
    vtest: Path, start: float, end: float, fps: float, max_frames: int, error_class: str
) -> None:
    result = sample_segment(vtest, start, end, fps, max_frames=max_frames)
    assert result.error is not None and result.error.error_class == error_class
    assert result.frames == [] and result.decoded_frames == 0


def test_frames_are_bounded_baseline_jpegs(vtest: Path) -> None:
    result = sample_segment(vtest, 0, 2, 1, max_side=320, jpeg_quality=80)
    assert [(f.width, f.height) for f in result.frames] == [(320, 240), (320, 240)]
    for frame in result.frames:
        with Image.open(io.BytesIO(frame.jpeg)) as im:
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (320, 240))
            assert not im.info.get("progressive")


def test_choose_mode_counts_decoded_frames() -> None:
    times = [k / 10 for k in range(100)]
    sparse = [k == 0 for k in range(100)]
    dense = [k % 5 == 0 for k in range(100)]
    wanted = [1.0, 3.0, 5.0, 7.0, 9.0]
    assert choose_mode(times, sparse, wanted) == "sequential"
    assert choose_mode(times, dense, wanted) == "seek"
