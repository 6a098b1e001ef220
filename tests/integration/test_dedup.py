"""Media-level idempotency across worker restarts: the seen table is a changelog in Kafka."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from devstack.mediaserver import MediaServer
from devstack.samples import sample_images
from mediavec import workers
from mediavec.publish import publish
from mediavec.settings import Settings
from mediavec.workers import Runner
from schemas import MediaRequest, decode_dead_letter, decode_frame
from streams.admin import ensure_topics
from streams.topics import topics
from tests.kafkautil import ThreadWorker, read_topic, wait_for

pytestmark = pytest.mark.integration


def _runner(settings: Settings, table_dir: Path) -> Runner:
    """A fetch worker as `mediavec run fetch` builds it, its table in an SQLite file under ``table_dir``."""
    fetch = settings.fetch.model_copy(update={"seen_table_dir": table_dir})
    return workers.build("fetch", settings.model_copy(update={"fetch": fetch}), instance="dedup")


def test_a_restarted_worker_still_knows_what_was_processed(settings: Settings, tmp_path: Path) -> None:
    root = tmp_path / "media"
    root.mkdir()
    photo = sample_images(tmp_path / "samples")[0]
    shutil.copy(photo, root / "a.png")
    shutil.copy(photo, root / "same-bytes.png")
    ensure_topics(settings)
    t = topics(settings)
    with MediaServer(root) as server:
        publish(settings, [MediaRequest(media_id="first", url=server.url("a.png"))], show_progress=False)
        with ThreadWorker(_runner(settings, tmp_path / "seen")):
            wait_for(lambda: len(read_topic(settings, t.frames.name)) == 1, 60, "the first frame")
        assert not list((tmp_path / "seen").glob("*.sqlite"))  # a stopped worker leaves no table behind
        publish(
            settings,
            [
                MediaRequest(media_id="again-url", url=server.url("a.png")),
                MediaRequest(media_id="again-bytes", url=server.url("same-bytes.png")),
                MediaRequest(media_id="forced", url=server.url("a.png"), reprocess=True),
            ],
            show_progress=False,
        )
        with ThreadWorker(_runner(settings, tmp_path / "seen")):  # a new process would load the same table from Kafka
            wait_for(lambda: len(read_topic(settings, t.skipped.name)) == 2, 60, "two skipped duplicates")
            wait_for(lambda: len(read_topic(settings, t.frames.name)) == 2, 60, "the forced frame")
    skipped = {d.media_id: d for d in (decode_dead_letter(m.value) for m in read_topic(settings, t.skipped.name))}
    assert set(skipped) == {"again-url", "again-bytes"}
    assert all(d.error_class == "duplicate_media" for d in skipped.values())
    assert skipped["again-url"].details["duplicate_of"] == "first", skipped["again-url"].reason
    # again-bytes may be judged after 'forced' (another partition) claimed the same content
    assert skipped["again-bytes"].details["duplicate_of"] in ("first", "forced")
    assert read_topic(settings, t.dlq.name) == [], "a duplicate is no failure: nothing in the DLQ"
    assert sorted(decode_frame(m.value).media_id for m in read_topic(settings, t.frames.name)) == ["first", "forced"]
