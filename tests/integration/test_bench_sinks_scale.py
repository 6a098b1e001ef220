"""The sinks' scale benchmark, small: worker processes write into the real stores, every vector lands once."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers.registry import SINK_POSTGRES
from loadtest.bench_sinks import SINKS, server_request_us, worker_polls
from loadtest.bench_sinks_scale import (
    Job,
    NotExactlyOnce,
    ScaleResult,
    Written,
    check_exactly_once,
    report,
    run_scale,
    worker_settings,
)
from mediavec.settings import Settings

pytestmark = pytest.mark.integration


def _run(settings: Settings, sink: str, workers: int, root: Path, topic: str | None = None) -> ScaleResult:
    return run_scale(settings, sink, workers, polls=2, batch=6, dim=32, partitions=4, root=root, topic=topic)


def test_every_sink_with_two_workers_stores_each_vector_exactly_once(settings: Settings, tmp_path: Path) -> None:
    results = [_run(settings, sink, 2, tmp_path) for sink in SINKS]
    for r in results:
        # Each worker wrote a warm-up poll and one timed poll: the stores hold both, each vector once
        # (run_scale read every id back and compared the offsets, or raised NotExactlyOnce).
        assert r.workers == 2 and 0 < r.vectors < r.stored
        assert r.seconds > 0 and r.cpu_s > 0 and r.thread_cpu_s > 0
    assert all(r.server_cpu_s == 0 for r in results if r.sink != SINK_POSTGRES.name)  # embedded: no server
    server_us = server_request_us(worker_polls("bench.vectors.server", 0, 1, 1, 6, 32, 1)[0])
    table = report(results, 4, 6, 32, "python -m loadtest.bench_sinks_scale", server_us)
    assert all(f"| {sink} | 2 | " in table for sink in SINKS) and "sink-qdrant to a Qdrant server" in table


def test_the_check_refuses_a_vector_missing_from_the_store(settings: Settings, tmp_path: Path) -> None:
    sink, topic = SINK_POSTGRES.name, "bench.vectors.check"
    _run(settings, sink, 1, tmp_path, topic)
    job = Job(sink, worker_settings(sink, settings, tmp_path, 1, 0), topic, 0, 1, 2, 6, 32, 4)
    polls, ids = worker_polls(topic, 0, 1, 3, 6, 32, 4)
    stored = [i for poll_ids in ids for i in poll_ids]
    assert check_exactly_once(sink, job, Written(1, stored, polls[-1][1], 0.0, 0.0, 0.0)) == len(stored)
    with pytest.raises(NotExactlyOnce, match="1 missing"):
        check_exactly_once(
            sink, job, Written(1, [*stored, "00000000-0000-4000-8000-000000000000"], polls[-1][1], 0.0, 0.0, 0.0)
        )
    with pytest.raises(NotExactlyOnce, match="offsets"):
        check_exactly_once(sink, job, Written(1, stored, {(topic, 0): 1}, 0.0, 0.0, 0.0))
