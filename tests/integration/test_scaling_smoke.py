"""The scaling curve's harness at k=1 on tiny sizes: every input drained, counted and timed.

Counts only, never speed: each stage's outputs match its inputs (one frame per photo fetched, one
vector batch per frame through the no-op embed worker), nothing is dead-lettered, the timed window
holds committed inputs, the section renders, and the topics it made are deleted (the test stack's
broker is used as it is).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers.registry import EMBED, FETCH
from loadtest.scaling import Plan, Run, measure, run_settings
from loadtest.scaling_report import section
from mediavec.settings import Settings
from streams.kafka import admin

pytestmark = pytest.mark.integration


def test_scaling_harness_drains_and_counts_both_stages(settings: Settings, tmp_path: Path) -> None:
    plan = Plan(workers=(1,), media_per_worker=24, frames_per_worker=48, timeout_s=240)
    run = Run(run_settings(settings, None, tmp_path / "data"), plan, tmp_path)
    points = measure(run)
    assert [(p.stage, p.workers) for p in points] == [(FETCH.name, 1), (EMBED.name, 1)]
    for p in points:
        assert (p.outputs, p.dead_letters) == (p.items, 0), p
        assert 0 < p.window_items <= p.items and p.seconds > 0, p
        assert "workers" in p.cores and 0 <= p.machine_busy <= 1, p
    assert [p.partitions for p in points] == [settings.topics.requests_partitions, settings.topics.frames_partitions]
    text = section(points, "python -m loadtest.scaling --workers 1", "this machine", 2, "the test broker")
    assert "| fetch | 1 | 24 |" in text and "| embed | 1 | 48 |" in text  # the details table: k, inputs
    client = admin(settings)
    assert not [name for name in client.list_topics(timeout=10).topics if run.tag in name]  # each run deletes its own
