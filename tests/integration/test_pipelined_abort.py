"""An aborted transaction under the fetch worker's pipelined runner takes its dedup claims back.

The worker is built as ``mediavec run fetch`` builds it. Its first commit carries one output the
broker refuses (over the topic's message limit), so the broker aborts that transaction. The stage
must then take back the dedup keys that batch claimed: when the runner reads the requests again,
the image is processed, not refused as a duplicate of itself, and it lands exactly once.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from devstack.mediaserver import MediaServer
from devstack.samples import sample_images
from mediavec import workers
from mediavec.publish import publish
from mediavec.settings import Settings
from schemas import MediaRequest, decode_frame
from streams import metrics
from streams.admin import ensure_topics
from streams.pipelined import PipelinedRunner
from streams.stage import InputRecord, OutputRecord, Result
from streams.topics import topics
from tests.kafkautil import ThreadWorker, read_topic, wait_for

pytestmark = pytest.mark.integration

OVERSIZED = 9 * 1024 * 1024  # the frames topic takes 8 MiB at most (random bytes: lz4 cannot shrink them)


class FirstCommitRefused:
    """The real stage, but its first finished batch carries an output the broker refuses."""

    def __init__(self, stage: Any) -> None:
        self._stage = stage
        self.spoiled = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stage, name)

    def finish(self, done: Sequence[tuple[InputRecord, Any]]) -> list[Result]:
        results = self._stage.finish(done)
        if not self.spoiled and results and isinstance(results[0], list):
            self.spoiled += 1
            results[0] = [*results[0], OutputRecord("frames", b"spoiler", os.urandom(OVERSIZED))]
        return results


def _aborts(stage: str) -> float:
    return metrics.TXN.labels(stage, "abort")._value.get()  # type: ignore[attr-defined]


def test_an_aborted_commit_takes_its_dedup_claims_back(settings: Settings, tmp_path: Path) -> None:
    root = tmp_path / "media"
    root.mkdir()
    photo = sample_images(tmp_path / "samples")[0]
    shutil.copy(photo, root / "a.png")
    shutil.copy(photo, root / "same-bytes.png")
    ensure_topics(settings)
    runner = workers.build("fetch", settings, instance="abort")
    assert isinstance(runner, PipelinedRunner)
    spoiler = FirstCommitRefused(runner.stage)
    runner.stage = runner.lifecycle = spoiler  # type: ignore[assignment]
    aborts_before = _aborts("fetch")
    frames = topics(settings).frames.name
    with MediaServer(root) as server:
        requests = [
            MediaRequest(media_id="a", url=server.url("a.png"), collection="c"),
            MediaRequest(media_id="same-bytes", url=server.url("same-bytes.png"), collection="c"),
        ]
        publish(settings, requests[:1], show_progress=False)
        with ThreadWorker(runner):
            wait_for(lambda: len(read_topic(settings, frames)) == 1, 90, "the frame of a, after the abort")
            publish(settings, requests[1:], show_progress=False)
            wait_for(lambda: runner.committed_batches >= 2, 60, "the duplicate's commit")
    assert spoiler.spoiled == 1 and _aborts("fetch") >= aborts_before + 1, "the first commit was aborted"
    landed = [decode_frame(m.value) for m in read_topic(settings, frames)]
    assert [f.media_id for f in landed] == ["a"], "a landed once; the same bytes again are a duplicate"
