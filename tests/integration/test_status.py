"""`mediavec status` against the real broker: lag moves from fetch to embed as the fetch stage works,
and every stage of the registry has its row."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from consumers.registry import STAGE_NAMES, STAGES
from devstack.mediaserver import MediaServer
from devstack.samples import sample_images
from mediavec import workers
from mediavec.publish import publish
from mediavec.settings import Settings
from mediavec.status import look
from schemas import MediaRequest
from streams.admin import ensure_topics
from streams.kafka import group_id
from streams.topics import topics
from tests.kafkautil import ThreadWorker, read_topic, wait_for

pytestmark = pytest.mark.integration


def _lags(settings: Settings) -> dict[str, int]:
    return {s.stage: s.lag for s in look(settings)}


def test_status_shows_lag_per_stage(settings: Settings, tmp_path: Path) -> None:
    root = tmp_path / "media"
    root.mkdir()
    for i, photo in enumerate(sample_images(tmp_path / "samples")[:6]):
        shutil.copy(photo, root / f"p{i}{photo.suffix}")
    ensure_topics(settings)
    with MediaServer(root) as server:
        names = sorted(p.name for p in root.iterdir())
        publish(
            settings,
            [MediaRequest(media_id=f"m{i}", url=server.url(n)) for i, n in enumerate(names)],
            show_progress=False,
        )
        before = _lags(settings)
        assert before["fetch"] == 6 and before["embed"] == 0 and before["sink-qdrant"] == 0
        env = {**os.environ, **settings.to_env()}
        out = subprocess.run(
            [sys.executable, "-m", "mediavec.cli", "status"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        fetch_line = next(line for line in out.splitlines() if line.startswith("fetch "))
        assert fetch_line.split()[2] == "6", out
        runner = workers.build("fetch", settings, instance="st")  # as `mediavec run fetch` builds it
        with ThreadWorker(runner):
            wait_for(lambda: len(read_topic(settings, topics(settings).frames.name)) == 6, 60, "six frames")
            wait_for(lambda: _lags(settings)["fetch"] == 0, 30, "fetch lag to drain")
    after = _lags(settings)
    assert after["embed"] >= 6  # six frames (plus transaction markers) wait for the embed stage
    embed = workers.build("embed", settings, instance="st")
    with ThreadWorker(embed):
        wait_for(lambda: len(read_topic(settings, topics(settings).vectors.name)) == 6, 120, "six vector batches")
        # Drained: the commit markers left after the last committed frames are not lag.
        wait_for(lambda: _lags(settings)["embed"] == 0, 30, "embed lag to read zero")


def test_status_lists_every_registered_stage_on_its_input_topic(settings: Settings) -> None:
    ensure_topics(settings)
    states = look(settings)
    assert [s.stage for s in states] == list(STAGE_NAMES)
    t = topics(settings)
    assert [s.topic for s in states] == [t.by_name(spec.input).name for spec in STAGES]
    assert [s.group for s in states] == [group_id(settings, name) for name in STAGE_NAMES]
