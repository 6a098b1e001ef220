"""`mediavec status --run ID` against the real broker: total from the requests topic, stored from the
vectors the sink committed past, failures from the DLQ, duplicates skipped from the skipped topic,
for a run published before the command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import TopicPartition

from consumers.fetch.dedup import Duplicate
from mediavec.progress import run_tracker
from mediavec.publish import publish
from mediavec.settings import Settings
from schemas import MediaRequest, VectorBatch, VectorRow, encode_request, encode_vector_batch, point_id
from streams.admin import ensure_topics
from streams.kafka import consumer, group_id, producer
from streams.stage import Failure, InputRecord, dead_letter
from streams.topics import topics

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _batch(media_id: str, run_id: str) -> bytes:
    pid = point_id("m/a/b", media_id, 0, "scene")
    row = VectorRow(point_id=pid, space="scene", media_id=media_id, frame_index=0, timestamp_s=0.0)
    vectors = np.ones((1, 4), dtype=np.float16) / 2
    return encode_vector_batch(VectorBatch("m/a/b", vectors, (row,), "http://127.0.0.1/x", "c", run_id=run_id))


def test_status_of_a_run_by_id(settings: Settings) -> None:
    ensure_topics(settings)
    t = topics(settings)
    reqs = [MediaRequest(media_id=f"m{i}", url=f"http://127.0.0.1/{i}.jpg", run_id="run-42") for i in range(5)]
    other = MediaRequest(media_id="x", url="http://127.0.0.1/x.jpg", run_id="run-7")
    publish(settings, [*reqs, other], show_progress=False)
    p = producer(settings)
    for media in ("m0", "m1", "x"):  # stored: two of the run, and one of another run
        p.produce(
            t.vectors.name, key=media.encode(), value=_batch(media, "run-7" if media == "x" else "run-42"), partition=0
        )
    bad = InputRecord(t.requests.name, 0, 3, b"m3", encode_request(reqs[3]))
    letter = dead_letter(bad, "fetch", Failure("http_404", "not found", media_id="m3"))
    p.produce(t.dlq.name, key=letter.key, value=letter.value)
    again = InputRecord(t.requests.name, 0, 4, b"m4", encode_request(reqs[4]))  # m4: the same bytes as m0
    (skip,) = Duplicate(reqs[4], "m0", "the same content").skipped(again, "fetch")
    p.produce(t.skipped.name, key=skip.key, value=skip.value)
    assert p.flush(30) == 0
    # The sink has stored what precedes offset 3 of vectors partition 0 (all three batches).
    sink = consumer(settings, group_id(settings, "sink-qdrant"))
    sink.commit(offsets=[TopicPartition(t.vectors.name, 0, 3)], asynchronous=False)
    sink.close()

    tracker = run_tracker(settings, "run-42")
    progress = tracker.poll(3.0)
    tracker.close()
    assert (progress.total, progress.stored, progress.failed, progress.causes) == (5, 2, 1, {"http_404": 1})
    assert (progress.skipped, progress.duplicates, progress.done) == (1, {"m4": "m0"}, 4)
    assert progress.success_rate == 2 / 3, "a skipped duplicate is neither a success nor a failure"
    assert progress.eta_s is not None and progress.rate > 0

    env = {**os.environ, **settings.to_env()}
    cmd = [sys.executable, "-m", "mediavec.cli", "status", "--run", "run-42"]
    out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=True).stdout
    assert "run run-42: stored 2 of 5, skipped 1 (duplicates: m4 of m0), failed 1 (http_404 1)" in out, out
    assert "success 66.7%" in out
    missing = subprocess.run([*cmd[:-1], "no-such-run"], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "no request with run id 'no-such-run'" in missing.stderr
