"""`mediavec dlq list` and `mediavec dlq redrive` against the real broker and the real fetch stage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.mediaserver import MediaServer
from devstack.samples import sample_images
from media.settings import FetchSettings
from mediavec import workers
from mediavec.settings import Settings
from schemas import decode_dead_letter, decode_frame
from streams.admin import ensure_topics
from streams.kafka import producer
from streams.stage import Failure, InputRecord, dead_letter
from streams.topics import topics
from tests.kafkautil import ThreadWorker, read_topic, wait_for

pytestmark = pytest.mark.integration


def _cli(settings: Settings, *args: str) -> str:
    env = {**os.environ, **settings.to_env()}
    out = subprocess.run(
        [sys.executable, "-m", "mediavec.cli", *args], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    return out.stdout


def test_publish_dead_letter_list_and_redrive(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"fetch": FetchSettings(allow_cidrs=("127.0.0.1/32",), retries=0)})
    root = tmp_path / "media"
    root.mkdir()
    photo = sample_images(tmp_path / "samples")[0]
    (root / "photo.jpg").write_bytes(photo.read_bytes())
    ensure_topics(settings)
    with MediaServer(root) as server:
        urls = tmp_path / "urls.txt"
        # Fails once with a 500 (no retries allowed), then serves the photo: the redrive must land it.
        urls.write_text(server.url("/flaky/1/photo.jpg") + "\n" + server.url("/status/404/gone.jpg") + "\n")
        out = _cli(settings, "publish", "images", str(urls), "--run-id", "r1", "--quiet")
        assert "published 2 requests, run id r1" in out
        runner = workers.build("fetch", settings, instance="d")  # as `mediavec run fetch` builds it
        with ThreadWorker(runner):
            wait_for(lambda: len(read_topic(settings, topics(settings).dlq.name)) == 2, 60, "two dead letters")
            listing = _cli(settings, "dlq", "list")
            assert "http_5xx_exhausted" in listing and "http_404" in listing and "2 entries" in listing
            assert f"url={server.url('/status/404/gone.jpg')}" in listing
            summaries = [json.loads(line) for line in _cli(settings, "dlq", "list", "--json").splitlines()]
            assert {(d["error_class"], d["details"]["url"], d["stage"]) for d in summaries} == {
                ("http_404", server.url("/status/404/gone.jpg"), "fetch"),
                ("http_5xx_exhausted", server.url("/flaky/1/photo.jpg"), "fetch"),
            }
            assert all("original_value" not in d and d["source_topic"].endswith("media.requests") for d in summaries)
            out = _cli(settings, "dlq", "redrive", "--error-class", "http_5xx_exhausted")
            assert "redriven 1 events" in out
            wait_for(lambda: len(read_topic(settings, topics(settings).frames.name)) == 1, 60, "the redriven frame")
    frame = decode_frame(read_topic(settings, topics(settings).frames.name)[0].value)
    assert frame.source_url.endswith("/flaky/1/photo.jpg") and frame.run_id == "r1"
    letters = [decode_dead_letter(m.value) for m in read_topic(settings, topics(settings).dlq.name)]
    assert sorted(d.error_class for d in letters) == ["http_404", "http_5xx_exhausted"]
    sent = {server.url(u) for u in ("/flaky/1/photo.jpg", "/status/404/gone.jpg")}
    assert {d.details["url"] for d in letters} == sent
    assert server.hits("/flaky/1/photo.jpg") == 2


def test_a_record_that_is_no_dead_letter_never_hides_the_others(settings: Settings) -> None:
    """Another producer's bytes in the DLQ topic: listed as passed over, the real letters still listed."""
    ensure_topics(settings)
    t = topics(settings)
    source = InputRecord(t.requests.name, 0, 7, b"m-1", b'{"not": "a request"}')
    letter = dead_letter(source, "fetch", Failure("invalid_request", "not a media request", media_id="m-1"))
    p = producer(settings)
    p.produce(t.dlq.name, key=b"junk", value=b"\x00not avro at all", partition=0)
    p.produce(t.dlq.name, key=letter.key, value=letter.value, partition=0)
    assert p.flush(30) == 0
    env = {**os.environ, **settings.to_env()}
    out = subprocess.run(
        [sys.executable, "-m", "mediavec.cli", "dlq", "list"], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "invalid_request" in out.stdout and "m-1" in out.stdout and "1 entries" in out.stdout
    assert "mediavec: not a dead letter, passed over: 0@0" in out.stderr
    assert "Traceback" not in out.stderr
