"""Duplicates are not failures: a run of 21 valid images, 5 of them the same bytes as another,
through real fetch, embed and sink-qdrant processes on the real broker. Progress, `mediavec
status --run` and the skipped listing report 16 stored, 5 skipped (naming the earlier media), 0
failed, success 100%; the DLQ stays empty."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from devstack.mediaserver import MediaServer
from mediavec.localworkers import LocalWorkers, follow
from mediavec.progress import RunTracker, describe
from mediavec.publish import new_run_id, publish
from mediavec.settings import Settings
from schemas import MediaRequest
from streams.admin import ensure_topics
from streams.dlq import read_entries

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
DISTINCT, COPIES = 16, 5


def _images(root: Path) -> dict[str, str]:
    """media id -> file name: 16 distinct images, then 5 files with the bytes of the first five."""
    root.mkdir()
    files = {}
    for i in range(DISTINCT):
        pixels = np.random.default_rng(i).integers(0, 256, (64, 80, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"img{i:02d}.png")
        files[f"img{i:02d}"] = f"img{i:02d}.png"
    for i in range(COPIES):
        shutil.copy(root / f"img{i:02d}.png", root / f"copy{i}.png")
        files[f"copy{i}"] = f"copy{i}.png"
    return files


def _cli(settings: Settings, *args: str) -> str:
    env = {**os.environ, **settings.to_env()}
    cmd = [sys.executable, "-m", "mediavec.cli", *args]
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    return done.stdout


def test_a_run_with_duplicates_is_all_success_and_lists_them_as_skipped(settings: Settings, tmp_path: Path) -> None:
    files = _images(tmp_path / "media")
    ensure_topics(settings)
    run_id = new_run_id()
    workers = LocalWorkers(settings, tmp_path / "logs", "dup").start(("fetch", "embed", "sink-qdrant"))
    try:
        with MediaServer(tmp_path / "media") as server:
            requests = [
                MediaRequest(media_id=media, url=server.url(name), run_id=run_id) for media, name in files.items()
            ]
            tracker = RunTracker(settings, run_id, len(requests))
            try:
                publish(settings, requests, show_progress=False)
                follow(tracker, workers, timeout_s=300)
            finally:
                tracker.close()
    finally:
        workers.stop()

    p = tracker.progress
    assert (p.total, p.stored, p.skipped, p.failed, p.causes) == (21, DISTINCT, COPIES, 0, {})
    # Of two requests for the same bytes, the one committed first (either: they are on different
    # partitions) is stored and the other skipped, naming it.
    pairs = {frozenset((f"img{i:02d}", f"copy{i}")) for i in range(COPIES)}
    assert {frozenset(pair) for pair in p.duplicates.items()} == pairs and p.success_rate == 1.0
    duplicates = p.duplicates
    named = ", ".join(f"{m} of {e}" for m, e in sorted(duplicates.items())[:3])
    line = describe(run_id, p)
    assert f"stored {DISTINCT} of 21, skipped {COPIES} (duplicates: {named}, +2 more), failed 0," in line, line
    assert "success 100.0%" in line, line

    status = _cli(settings, "status", "--run", run_id)
    assert f"stored {DISTINCT} of 21, skipped {COPIES} (duplicates: {named}, +2 more), failed 0" in status, status
    assert "success 100.0%" in status, status

    skipped = {e.letter.media_id: e.letter for e in read_entries(settings, topic="skipped")}
    assert {m: d.details["duplicate_of"] for m, d in skipped.items()} == duplicates
    assert all(d.error_class == "duplicate_media" and "reprocess=true" in d.reason for d in skipped.values())
    assert list(read_entries(settings)) == [], "a duplicate is no dead letter"
    listed = _cli(settings, "dlq", "list", "--skipped").splitlines()
    assert sorted(line.split("\t")[3] for line in listed[:-1]) == sorted(duplicates), listed
    assert all("\tduplicate_media\t" in line and "duplicate_of=" in line for line in listed[:-1])
    assert listed[-1] == f"{COPIES} entries"
    assert _cli(settings, "dlq", "list").splitlines() == ["0 entries"]
