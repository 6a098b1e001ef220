"""Shared unit-test fixtures: real footage (vtest.avi from Debian's opencv-doc) and its re-encodes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devstack.testmedia import CONTAINERS, transcode, vtest_avi
from media.video import SegmentResult, sample_segment
from tests.unit.video_media import CODECS, PIECE_S, PIECE_START_S, REPO_MEDIA


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # `make test` fetches the footage into .mediavec/testmedia before the tests (setup, not tests)
    cached = os.environ.get("MEDIAVEC_TEST_MEDIA_DIR") or (REPO_MEDIA if REPO_MEDIA.is_dir() else None)
    return Path(cached) if cached else tmp_path_factory.mktemp("video-media")


@pytest.fixture(scope="session")
def vtest(media_dir: Path) -> Path:
    return vtest_avi(media_dir)


@pytest.fixture(scope="session")
def encoded(vtest: Path, media_dir: Path) -> dict[str, Path]:
    """The 3-s piece in every codec family, keyframe every 5 frames (0.5 s)."""
    out = {}
    for codec in CODECS:
        dst = media_dir / f"piece-{codec}.{CONTAINERS[codec]}"
        out[codec] = dst if dst.exists() else transcode(vtest, dst, codec, 5, PIECE_START_S, PIECE_S)
    return out


@pytest.fixture(scope="session")
def reference(vtest: Path) -> SegmentResult:
    """Every source frame of the piece."""
    return sample_segment(vtest, PIECE_START_S, PIECE_START_S + PIECE_S, 10)
