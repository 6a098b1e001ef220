"""FetchStage.process on video segments: real footage (vtest.avi) over a loopback media server.

vtest.avi: 768x576, 10 fps, 79.5 s, 8.1 MB, keyframes every 25 s. Frames are made small
(max_side 96) and sampled slowly so each test decodes little.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from prometheus_client import REGISTRY

from consumers.fetch.stage import FetchStage
from devstack.mediaserver import Canary, MediaServer
from devstack.samples import find_sample_photos
from devstack.testmedia import transcode, vtest_avi
from media.settings import FetchSettings
from media.video_sampling import count_targets, targets
from mediavec.settings import Settings
from schemas.codec import decode_dead_letter, decode_frame, encode_request
from schemas.models import Frame, MediaRequest
from streams.stage import Failure, InputRecord, OutputRecord, Result
from tests.unit.test_fetch_stage import skipped
from tests.unit.video_media import diff

REPO_MEDIA = Path(__file__).resolve().parents[2] / ".mediavec" / "testmedia"
BUS = {path.name: path for path in find_sample_photos()[0]}["bus.jpg"]
NATIVE_FRAME_S = 0.1
VIDEO_ID = "cam-1"


@pytest.fixture(scope="session")
def vtest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cached = os.environ.get("MEDIAVEC_TEST_MEDIA_DIR") or (REPO_MEDIA if REPO_MEDIA.is_dir() else None)
    return vtest_avi(Path(cached) if cached else tmp_path_factory.mktemp("video-media"))


@pytest.fixture(scope="session")
def mp4(vtest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s of vtest in H.264/MP4, a keyframe every 5 frames, its index (moov) written at the end."""
    return transcode(vtest, tmp_path_factory.mktemp("mp4") / "piece.mp4", "h264", 5, 20.0, 3.0)


@pytest.fixture()
def media(tmp_path: Path, vtest: Path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    shutil.copy(vtest, root / "v.avi")
    shutil.copy(BUS, root / "bus.jpg")
    return root


@pytest.fixture()
def server(media: Path) -> Iterator[MediaServer]:
    with MediaServer(media) as srv:
        yield srv


def make_stage(**overrides: object) -> FetchStage:
    base: dict[str, object] = {
        "allow_cidrs": ("127.0.0.1/32",),
        "retries": 0,
        "max_side": 96,
        "range_block_bytes": 64 * 1024,
    }
    stage = FetchStage(Settings(fetch=FetchSettings.model_validate(base | overrides)))
    stage.start()
    return stage


@pytest.fixture()
def stage() -> Iterator[FetchStage]:
    s = make_stage()
    yield s
    s.close()


def video(
    url: str, start: float | None = None, end: float | None = None, fps: float | None = 1.0, **kw: object
) -> bytes:
    fields: dict[str, object] = {"media_id": VIDEO_ID, "url": url, "kind": "video"}
    fields |= {"start_s": start, "end_s": end, "sample_fps": fps} | kw
    return encode_request(MediaRequest(**fields))  # type: ignore[arg-type]


def records(*values: bytes) -> list[InputRecord]:
    return [InputRecord(topic="media.requests", partition=0, offset=i, key=None, value=v) for i, v in enumerate(values)]


def frames_of(result: Result) -> list[Frame]:
    assert isinstance(result, list), result
    return [decode_frame(r.value) for r in result if r.topic == "frames"]


def topics_of(result: Result) -> list[str]:
    assert isinstance(result, list), result
    return sorted({r.topic for r in result})


def test_segments_give_the_frames_their_rate_implies_and_tile_without_gaps(
    server: MediaServer, stage: FetchStage
) -> None:
    bounds = [(0.0, 5.0), (5.0, 10.0), (10.0, 12.5)]
    meta = {"metadata": {"cam": "north"}, "options": {"prompts": ["person"]}, "run_id": "r-7", "published_at": 17.5}
    url = server.url("v.avi").replace("http://", "http://user:pw@")
    results = stage.process(records(*(video(url, a, b, 2.5, collection="street", **meta) for a, b in bounds)))
    per_segment = [frames_of(r) for r in results]
    assert [len(f) for f in per_segment] == [count_targets(a, b, 2.5) for a, b in bounds] == [13, 12, 7]
    for (start, end), frames in zip(bounds, per_segment, strict=True):
        for frame, target in zip(frames, targets(start, end, 2.5), strict=True):
            assert frame.frame_index == target.index
            assert start <= frame.timestamp_s < end
            assert target.time_s <= frame.timestamp_s < target.time_s + NATIVE_FRAME_S
        assert {f.frames_in_media for f in frames} == {len(frames)}
    indices = [f.frame_index for frames in per_segment for f in frames]
    assert indices == list(range(32)), "segments tile the sample grid: no gap, no duplicate"
    first = per_segment[0][0]
    assert (first.media_id, first.collection, first.width, first.height) == (VIDEO_ID, "street", 96, 72)
    assert first.source_url == server.url("v.avi")  # no credentials
    assert (first.metadata, first.options, first.run_id, first.published_at) == (
        {"cam": "north"},
        {"prompts": ["person"]},
        "r-7",
        17.5,
    )
    every = [f for frames in per_segment for f in frames]
    assert all(f.content_sha256 == hashlib.sha256(f.jpeg).hexdigest() for f in every)
    assert len({f.content_sha256 for f in every}) == len(every)  # pedestrians move: every sample differs
    for result in results:
        assert isinstance(result, list)
        assert {r.key for r in result if r.topic == "frames"} == {VIDEO_ID.encode()}
        assert topics_of(result) == ["frames", "seen"]
    assert stage.outcomes["ok"] == 3


def test_a_short_segment_reads_a_small_part_of_the_file_by_ranges(server: MediaServer, stage: FetchStage) -> None:
    size = (server.root / "v.avi").stat().st_size
    result = stage.process(records(video(server.url("v.avi"), 40.0, 42.0)))[0]
    assert [f.timestamp_s for f in frames_of(result)] == [40.0, 41.0]
    served = [s for s in server.served if s.path == "/v.avi"]
    assert served and all(s.status == 206 and s.range and s.range.startswith("bytes=") for s in served)
    assert all(s.bytes <= 64 * 1024 for s in served)
    read = server.bytes_served("v.avi")
    assert read < size / 4, f"read {read} of {size} bytes for 2 s of a 79.5 s video"
    assert stage.bytes_downloaded == read


def test_a_server_that_ignores_range_gives_the_same_frames_from_the_whole_body(
    server: MediaServer, stage: FetchStage
) -> None:
    ranged, whole = stage.process(
        records(video(server.url("v.avi"), 40.0, 42.0), video(server.url("norange/v.avi"), 40.0, 42.0))
    )
    assert [f.jpeg for f in frames_of(whole)] == [f.jpeg for f in frames_of(ranged)]
    assert len(frames_of(whole)) == 2
    assert [(s.status, s.bytes) for s in server.served if s.path == "/norange/v.avi"] == [
        (200, (server.root / "v.avi").stat().st_size)
    ]
    capped = make_stage(max_bytes=1_000_000)
    try:
        failure = capped.process(records(video(server.url("norange/v.avi"), 40.0, 42.0)))[0]
    finally:
        capped.close()
    assert isinstance(failure, Failure) and failure.error_class == "too_large"


def test_an_mp4_read_by_ranges_gives_the_frames_of_the_local_file(media: Path, mp4: Path) -> None:
    shutil.copy(mp4, media / "piece.mp4")
    stage = make_stage(range_block_bytes=16 * 1024, allow_paths=(str(media),), video_decode_mode="seek")
    try:
        with MediaServer(media) as srv:
            remote, local = stage.process(
                records(
                    video(srv.url("piece.mp4"), 0.5, 2.5, 2.0), video((media / "piece.mp4").as_uri(), 0.5, 2.5, 2.0)
                )
            )
            served = srv.served
    finally:
        stage.close()
    assert [f.timestamp_s for f in frames_of(remote)] == [0.5, 1.0, 1.5, 2.0]
    assert [f.jpeg for f in frames_of(remote)] == [f.jpeg for f in frames_of(local)]
    assert len(served) > 2 and all(s.status == 206 for s in served)
    ranges = [s.range for s in served]
    assert len(set(ranges)) == len(ranges), "no block is fetched twice while it is cached"


def test_the_torchcodec_decoder_reads_by_ranges_and_gives_the_pyav_frames(media: Path, mp4: Path) -> None:
    shutil.copy(mp4, media / "piece.mp4")
    # Frames at 384 px: at the module's 96 px the two scalers (swscale, torch) differ more than the frames do.
    pyav = make_stage(allow_paths=(str(media),), max_side=384)
    torchcodec = make_stage(
        range_block_bytes=16 * 1024, video_decoder="torchcodec", video_decode_device="cpu", max_side=384
    )
    try:
        (local,) = pyav.process(records(video((media / "piece.mp4").as_uri(), 0.5, 2.5, 2.0)))
        with MediaServer(media) as srv:
            (remote,) = torchcodec.process(records(video(srv.url("piece.mp4"), 0.5, 2.5, 2.0)))
            served = srv.served
    finally:
        pyav.close()
        torchcodec.close()
    assert (
        [f.timestamp_s for f in frames_of(remote)] == [f.timestamp_s for f in frames_of(local)] == [0.5, 1.0, 1.5, 2.0]
    )
    assert max(diff(a.jpeg, b.jpeg) for a, b in zip(frames_of(remote), frames_of(local), strict=True)) < 1.3
    assert served and all(s.status == 206 for s in served)


def test_a_truncated_video_publishes_its_frames_and_a_dead_letter(server: MediaServer, stage: FetchStage) -> None:
    value = video(server.url("truncated/v.avi"), 30.0, 45.0, media_id="cut")
    before = REGISTRY.get_sample_value("mediavec_dlq_total", {"stage": "fetch", "cause": "truncated_video"}) or 0
    result = stage.process(records(value))[0]
    assert isinstance(result, list)
    frames = frames_of(result)
    assert [f.timestamp_s for f in frames] == [float(t) for t in range(30, 40)]  # the data stops at about 39.75 s
    assert {f.frames_in_media for f in frames} == {10}
    letters = [decode_dead_letter(r.value) for r in result if r.topic == "dlq"]
    assert len(letters) == 1 and topics_of(result) == ["dlq", "frames"]  # no seen key: a redrive runs it again
    letter = letters[0]
    assert (letter.stage, letter.error_class, letter.media_id) == ("fetch", "truncated_video", "cut")
    assert letter.original_value == value and letter.source_offset == 0
    assert "10 of 15 frames published, decoded until 39.000 s" in letter.reason
    assert letter.details == {
        "url": server.url("truncated/v.avi"),
        "frames_published": "10",
        "frames_expected": "15",
        "decoded_until_s": "39.000",
    }
    assert [r.topic for r in result].index("dlq") == len(result) - 1  # the frames come first, in one result
    stage.committed()
    after = REGISTRY.get_sample_value("mediavec_dlq_total", {"stage": "fetch", "cause": "truncated_video"})
    assert after == before + 1
    past_the_data = stage.process(records(video(server.url("truncated/v.avi"), 60.0, 70.0)))[0]
    assert isinstance(past_the_data, Failure) and past_the_data.error_class == "truncated_video"


def test_a_download_failing_mid_segment_keeps_the_frames_before_it(server: MediaServer) -> None:
    # One decoding pass (no packet scan first), and a byte budget that runs out during the segment.
    stage = make_stage(max_bytes=600_000, video_decode_mode="sequential")
    try:
        result = stage.process(records(video(server.url("v.avi"), 25.0, 35.0)))[0]
    finally:
        stage.close()
    assert isinstance(result, list)
    frames = frames_of(result)
    assert 1 <= len(frames) < 10
    assert [f.frame_index for f in frames] == list(range(25, 25 + len(frames)))
    (letter,) = [decode_dead_letter(r.value) for r in result if r.topic == "dlq"]
    assert letter.error_class == "too_large"
    assert f"{len(frames)} of 10 frames published" in letter.reason
    assert (letter.details["frames_published"], letter.details["frames_expected"]) == (str(len(frames)), "10")


def test_defaults_start_at_zero_end_at_the_video_end_and_use_the_configured_rate(server: MediaServer) -> None:
    stage = make_stage(default_sample_fps=0.5)
    try:
        tail, head = stage.process(
            records(video(server.url("v.avi"), 70.0, None, None), video(server.url("v.avi"), None, 6.0, None))
        )
    finally:
        stage.close()
    assert [(f.frame_index, f.timestamp_s) for f in frames_of(tail)] == [
        (35, 70.0),
        (36, 72.0),
        (37, 74.0),
        (38, 76.0),
        (39, 78.0),
    ]
    assert [f.timestamp_s for f in frames_of(head)] == [0.0, 2.0, 4.0]


def test_refused_and_impossible_segments_are_failures(server: MediaServer) -> None:
    stage = make_stage(max_video_frames=20)
    try:
        results = stage.process(
            records(
                video(server.url("status/404/v.avi"), 0.0, 5.0),
                video(server.url("bus.jpg"), 0.0, 5.0),
                video(server.url("v.avi"), 0.0, 30.0),
                video(server.url("v.avi"), 100.0, 110.0),
                video("ftp://127.0.0.1/v.avi", 0.0, 5.0),
            )
        )
    finally:
        stage.close()
    classes = [r.error_class if isinstance(r, Failure) else "ok" for r in results]
    assert classes == ["http_404", "not_a_video", "too_many_frames", "segment_out_of_range", "bad_scheme"]
    assert all(isinstance(r, Failure) and r.media_id == VIDEO_ID and r.reason for r in results)


def test_a_redirect_to_the_canary_is_refused_before_it_is_reached(server: MediaServer, stage: FetchStage) -> None:
    with Canary() as canary:
        url = server.url("redirect?to=" + quote(canary.url("v.avi"), safe=""))
        result = stage.process(records(video(url, 0.0, 5.0)))[0]
        assert canary.hits == 0
    assert isinstance(result, Failure) and result.error_class == "ssrf_refused"


def test_file_urls_are_read_only_under_allow_paths(media: Path, tmp_path: Path, vtest: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(vtest, outside / "secret.avi")
    (media / "escape.avi").symlink_to(outside / "secret.avi")
    stage = make_stage(allow_paths=(str(media),))
    try:
        results = stage.process(
            records(
                video((media / "v.avi").as_uri(), 10.0, 13.0),
                video((outside / "secret.avi").as_uri(), 10.0, 13.0),
                video(f"file://{media}/../outside/secret.avi", 10.0, 13.0),
                video((media / "escape.avi").as_uri(), 10.0, 13.0),
                video((media / "gone.avi").as_uri(), 10.0, 13.0),
                encode_request(MediaRequest(media_id="photo", url=(media / "bus.jpg").as_uri())),
                encode_request(MediaRequest(media_id="away", url=(outside / "secret.avi").as_uri())),
            )
        )
    finally:
        stage.close()
    assert [(f.media_id, max(f.width, f.height)) for f in frames_of(results[5])] == [("photo", 96)]  # same rule
    assert [f.timestamp_s for f in frames_of(results[0])] == [10.0, 11.0, 12.0]
    assert frames_of(results[0])[0].source_url == (media / "v.avi").as_uri()
    classes = [r.error_class if isinstance(r, Failure) else "ok" for r in results]
    refused = "path_not_allowed"
    assert classes == ["ok", refused, refused, refused, "not_found", "ok", refused]
    closed = make_stage()  # no allow_paths: file:// stays refused, as for images
    try:
        disabled = closed.process(records(video((media / "v.avi").as_uri(), 10.0, 13.0)))[0]
    finally:
        closed.close()
    assert isinstance(disabled, Failure) and disabled.error_class == "bad_scheme"


def test_the_same_segment_is_a_duplicate_and_other_segments_of_the_video_pass(
    server: MediaServer, stage: FetchStage
) -> None:
    url = server.url("v.avi")
    first = stage.process(records(video(url, 0.0, 2.0), video(url, 0.0, 2.0), video(url, 2.0, 4.0)))
    assert [len(frames_of(first[0])), len(frames_of(first[2]))] == [2, 2]
    assert skipped(first[1]).details["duplicate_of"] == VIDEO_ID
    stage.committed()
    hits = len(server.served)
    again = stage.process(records(video(url, 0.0, 2.0), video(url, 0.0, 2.0, 2.0)))
    assert f"media {VIDEO_ID!r}" in skipped(again[0]).reason
    assert len(frames_of(again[1])) == 4, "another sampling rate is another segment"
    forced = stage.process(records(video(url, 0.0, 2.0, reprocess=True)))[0]
    assert len(frames_of(forced)) == 2
    assert len(server.served) > hits


def test_frames_are_all_in_one_result_for_the_runner_to_commit_together(server: MediaServer, stage: FetchStage) -> None:
    result = stage.process(records(video(server.url("v.avi"), 0.0, 8.0)))[0]
    assert isinstance(result, list) and all(isinstance(r, OutputRecord) for r in result)
    assert [r.topic for r in result] == ["frames"] * 8 + ["seen"]
