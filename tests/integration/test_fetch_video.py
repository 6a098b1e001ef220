"""Video through the real broker: `mediavec publish video`, and a fetch worker committing segments.

Footage: vtest.avi (79.5 s, 10 fps) served by a loopback media server and read as a local file.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from devstack.mediaserver import MediaServer
from devstack.testmedia import vtest_avi
from media.settings import FetchSettings
from media.video_sampling import count_targets, segments, targets
from mediavec import workers
from mediavec.publish import media_id_for, publish
from mediavec.settings import Settings
from schemas import MediaRequest, decode_dead_letter, decode_frame, decode_request
from streams.admin import ensure_topics
from streams.kafka import group_id
from streams.topics import topics
from tests.kafkautil import ThreadWorker, group_caught_up, read_topic, wait_for

pytestmark = pytest.mark.integration

REPO_MEDIA = Path(__file__).resolve().parents[2] / ".mediavec" / "testmedia"
DURATION_S = 79.5


@pytest.fixture(scope="session")
def vtest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cached = os.environ.get("MEDIAVEC_TEST_MEDIA_DIR") or (REPO_MEDIA if REPO_MEDIA.is_dir() else None)
    return vtest_avi(Path(cached) if cached else tmp_path_factory.mktemp("video-media"))


@pytest.fixture()
def media(tmp_path: Path, vtest: Path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    shutil.copy(vtest, root / "v.avi")
    return root


def _video_settings(settings: Settings, **fetch: object) -> Settings:
    base: dict[str, object] = {"allow_cidrs": ("127.0.0.1/32",), "retries": 0, "range_block_bytes": 64 * 1024}
    return settings.model_copy(update={"fetch": FetchSettings.model_validate(base | fetch)})


def test_publish_video_publishes_one_request_per_segment(settings: Settings, media: Path) -> None:
    settings = _video_settings(settings)
    ensure_topics(settings)
    local = (media / "v.avi").as_uri()
    with MediaServer(media) as server:
        remote = server.url("v.avi")
        env = {**os.environ, **settings.to_env()}
        args = ["publish", "video", str(media / "v.avi"), remote, "--segment", "10s", "--fps", "0.5"]
        out = subprocess.run(
            [sys.executable, "-m", "mediavec.cli", *args, "--run-id", "r1", "--quiet", "--collection", "clips"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        probe_bytes = server.bytes_served("v.avi")
        probe_ranges = [s.range for s in server.served]
    per_video = math.ceil(DURATION_S / 10)
    assert f"published {2 * per_video} segment requests of 2 videos, run id r1" in out
    assert f"MEDIAVEC_FETCH__ALLOW_PATHS='[\"{media}\"]'" in out
    assert 0 < probe_bytes < (media / "v.avi").stat().st_size / 10, "the duration comes from headers and index"
    assert all(probe_ranges)

    messages = read_topic(settings, topics(settings).requests.name)
    by_url: dict[str, list[MediaRequest]] = defaultdict(list)
    for m in messages:
        req = decode_request(m.value)
        assert m.key == req.media_id.encode()
        by_url[req.url].append(req)
    assert set(by_url) == {local, remote}
    for url, reqs in by_url.items():
        assert sorted((r.start_s, r.end_s) for r in reqs) == [
            (k * 10.0, min(DURATION_S, k * 10.0 + 10)) for k in range(per_video)
        ]
        assert {(r.media_id, r.kind, r.sample_fps, r.run_id, r.collection) for r in reqs} == {
            (media_id_for(url), "video", 0.5, "r1", "clips")
        }


def test_a_fetch_worker_commits_exactly_the_frames_of_each_segment(settings: Settings, media: Path) -> None:
    settings = _video_settings(settings, max_side=96, allow_paths=(str(media),))
    ensure_topics(settings)
    t = topics(settings)
    with MediaServer(media) as server:
        remote = [
            MediaRequest(media_id="cam", url=server.url("v.avi"), kind="video", start_s=a, end_s=b, sample_fps=0.5)
            for a, b in segments(30.0, 10.0)
        ]
        requests = [
            *remote,
            remote[1],  # the same segment again: a duplicate
            MediaRequest(media_id="local", url=(media / "v.avi").as_uri(), kind="video", start_s=70.0, sample_fps=1),
            MediaRequest(
                media_id="cut", url=server.url("truncated/v.avi"), kind="video", start_s=30, end_s=45, sample_fps=1
            ),
        ]
        publish(settings, requests, show_progress=False)
        runner = workers.build("fetch", settings, instance="v")  # as `mediavec run fetch` builds it
        with ThreadWorker(runner):
            group = group_id(settings, "fetch")
            wait_for(lambda: group_caught_up(settings, group, t.requests.name), 120, "the fetch worker to catch up")

    frames = [(m.partition, decode_frame(m.value)) for m in read_topic(settings, t.frames.name)]
    expected = (
        [("cam", k) for k in range(count_targets(0, 30, 0.5))]
        + [("local", tg.index) for tg in targets(70, DURATION_S, 1)]
        + [("cut", k) for k in range(30, 40)]  # the cut file's data ends before 40 s
    )
    assert sorted((f.media_id, f.frame_index) for _, f in frames) == sorted(expected)
    for media_id in ("cam", "local", "cut"):
        mine = [(p, f.frame_index) for p, f in frames if f.media_id == media_id]
        assert len({p for p, _ in mine}) == 1, "one media's frames share its key's partition"
        assert [i for _, i in mine] == sorted(i for _, i in mine), "and arrive in sample order"
    letters = sorted(
        (d.media_id, d.error_class) for d in (decode_dead_letter(m.value) for m in read_topic(settings, t.dlq.name))
    )
    assert letters == [("cut", "truncated_video")]
    skipped = [decode_dead_letter(m.value) for m in read_topic(settings, t.skipped.name)]
    assert [(d.media_id, d.error_class, d.details["duplicate_of"]) for d in skipped] == [
        ("cam", "duplicate_media", "cam")
    ]
