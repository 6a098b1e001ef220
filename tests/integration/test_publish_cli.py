"""`mediavec publish images|video` as a user runs them, against the real broker: files and sources with
good and bad entries. Each bad entry is one short line naming where and why, the good ones arrive on
the requests topic, the exit status says whether anything was refused, and --strict publishes nothing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.mediaserver import MediaServer
from devstack.samples import sample_images
from devstack.testmedia import static_clip
from mediavec.publish import media_id_for
from mediavec.settings import Settings
from schemas import MediaRequest, decode_request
from streams.admin import ensure_topics
from streams.topics import topics
from tests.kafkautil import read_topic

pytestmark = pytest.mark.integration
LOG_RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ ")

LINE_MAX = 220  # a report line past the file name: "58: " and a reason of at most 200 characters


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings.to_env()}
    command = [sys.executable, "-m", "mediavec.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=180, check=False)


def _published(settings: Settings) -> list[MediaRequest]:
    messages = read_topic(settings, topics(settings).requests.name)
    requests = [decode_request(m.value) for m in messages]
    assert [m.key for m in messages] == [r.media_id.encode() for r in requests]
    return requests


def _no_traceback(run: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in run.stdout + run.stderr, run.stderr[-2000:]


def test_a_100kb_url_on_line_58_is_refused_once_and_the_other_lines_are_published(
    settings: Settings, tmp_path: Path
) -> None:
    ensure_topics(settings)
    good = [f"http://127.0.0.1:9/img-{n}.jpg" for n in range(1, 58)]
    huge = "http://127.0.0.1:9/" + "a" * 100_000
    urls = tmp_path / "urls.txt"
    urls.write_text("\n".join([*good, huge, "not a url", "# a comment", good[0] + "?again"]) + "\n")
    args = ["publish", "images", str(urls), "--run-id", "r1", "--quiet"]
    reports = [
        f"{urls}:58: url is 100,019 characters, over the limit of 4,096: 'http://127.0.0.1:9/{'a' * 58}…'",
        f"{urls}:59: url has a space (write %20) at column 4: 'not a url'",
    ]

    strict = _cli(settings, *args, "--strict")
    _no_traceback(strict)
    assert strict.returncode == 1
    summary = f"mediavec: refused 2 of 60 lines of {urls}; --strict: nothing published"
    assert _said(strict.stderr) == [*reports, summary]
    assert strict.stdout == ""
    assert _published(settings) == []

    run = _cli(settings, *args)
    _no_traceback(run)
    assert run.returncode == 1
    assert run.stdout.splitlines() == ["published 58 requests, run id r1"]
    assert _said(run.stderr) == [*reports, f"mediavec: refused 2 of 60 lines of {urls} (reasons above)"]
    assert all(len(line) <= len(str(urls)) + LINE_MAX for line in run.stderr.splitlines())
    requests = _published(settings)
    assert sorted(r.url for r in requests) == sorted([*good, good[0] + "?again"])
    assert {(r.run_id, r.kind, r.collection) for r in requests} == {("r1", "image", "default")}
    assert {r.media_id for r in requests} == {media_id_for(u) for u in [*good, good[0] + "?again"]}


def test_a_good_file_exits_0_and_a_file_that_is_no_list_is_one_line(settings: Settings, tmp_path: Path) -> None:
    ensure_topics(settings)
    lines = tmp_path / "in.jsonl"
    lines.write_text('{"url": "http://127.0.0.1:9/a.jpg", "media_id": "sku-1", "shop": "x"}\n')
    good = _cli(settings, "publish", "images", str(lines), "--run-id", "r2", "--quiet", "--collection", "shop")
    _no_traceback(good)
    assert (good.returncode, good.stdout, _said(good.stderr)) == (0, "published 1 requests, run id r2\n", [])

    photo = sample_images(tmp_path / "samples")[0]
    for path, why in [
        (tmp_path / "missing.txt", "no such file"),
        (photo, "a binary file (NUL byte at offset "),
        (tmp_path, "a directory, not a file"),
    ]:
        run = _cli(settings, "publish", "images", str(path), "--quiet")
        _no_traceback(run)
        assert run.returncode == 2 and run.stdout == ""
        assert len(run.stderr.splitlines()) == 1 and run.stderr.startswith(f"mediavec: {path}: {why}")
    bad_option = _cli(settings, "publish", "images", str(lines), "--collection", "no spaces")
    _no_traceback(bad_option)
    assert (
        bad_option.returncode == 2 and "argument --collection: media request invalid at collection" in bad_option.stderr
    )

    (req,) = _published(settings)
    assert (req.media_id, req.url, req.collection, req.metadata) == (
        "sku-1",
        "http://127.0.0.1:9/a.jpg",
        "shop",
        {"shop": "x"},
    )


def test_publish_video_reports_each_bad_source_once_and_strict_publishes_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    ensure_topics(settings)
    videos = tmp_path / "videos"
    clip = static_clip(videos / "clip.mp4", seconds=4, fps=5, size=(64, 48))
    (videos / "broken.mp4").write_bytes(b"not a video " * 100)
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"videos/clip.mp4\n\xff\xfe\nftp://127.0.0.1/x.mp4\n")
    with MediaServer(tmp_path) as server:
        gone = server.url("/status/404/gone.mp4")
        args = ["publish", "video", str(videos), str(listing), "nowhere", gone, "--segment", "10s", "--quiet"]
        expected = [
            f"{listing}:2: not UTF-8 text (byte 1 of the line)",
            f"{listing}:3: not an http(s) or file:// URL: 'ftp://127.0.0.1/x.mp4'",
            "nowhere: no such video, directory or list file",
            f"{videos / 'broken.mp4'}: not_a_video: bytes are not a readable video (starts with 6e6f742061207669)",
            f"{gone}: http_404: ",
        ]

        strict = _cli(settings, *args, "--run-id", "v1", "--strict")
        _no_traceback(strict)
        assert strict.returncode == 1 and strict.stdout == ""
        _assert_reported_once(strict.stderr, expected)
        assert strict.stderr.splitlines()[-1] == "mediavec: refused 5 sources or videos; --strict: nothing published"
        assert _published(settings) == []

        run = _cli(settings, *args, "--run-id", "v2")
    _no_traceback(run)
    assert run.returncode == 1
    assert run.stdout.splitlines()[0] == "published 1 segment requests of 1 videos, run id v2"
    _assert_reported_once(run.stderr, expected)
    assert run.stderr.splitlines()[-1] == "mediavec: refused 5 sources or videos (reasons above)"
    (req,) = _published(settings)
    assert (req.url, req.kind, req.start_s, req.run_id) == (clip.resolve().as_uri(), "video", 0.0, "v2")
    assert req.end_s == pytest.approx(4.0, abs=0.3)


def _said(stderr: str) -> list[str]:
    """What the command said on stderr, without log records (librdkafka may warn of a broker retry)."""
    return [line for line in stderr.splitlines() if not LOG_RECORD.match(line)]


def _assert_reported_once(stderr: str, expected: list[str]) -> None:
    lines = stderr.splitlines()
    for start in expected:
        assert sum(line.startswith(start) for line in lines) == 1, (start, lines)
    assert len(lines) == len(expected) + 1  # and the summary
