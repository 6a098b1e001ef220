"""A few seconds of load through the real fetch, embed (scene) and sink-qdrant workers.

The report must account for every published media (stored + failed = published), put each
planned failure in the DLQ with its class, order its latency percentiles, and its budgets check
must name the budgets a run violates. An interrupted run must stop publishing, drain and report.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from loadtest.load.budgets import check, measured
from loadtest.load.harness import RunOptions, load_settings_for, run_load
from loadtest.load.profile import LoadProfile, plan_media
from loadtest.load.summary import LoadReport
from mediavec.settings import Settings

pytestmark = pytest.mark.integration

# The failures that dead-letter fast (a timeout or a drip would hold the test for the fetch deadline).
CAUSE = {"error": "fetch:http_5xx_exhausted", "truncated": "fetch:connection_failed"}
PROFILE = LoadProfile(
    rate=4.0,
    duration_s=120.0,
    max_media=16,  # the count, not the clock, ends publishing: exactly 16 media over ~4 s
    seed=5,
    failures={"error": 0.2, "truncated": 0.15},
    warmup_media=2,
)


def test_load_report_accounts_for_every_media(settings: Settings, tmp_path: Path) -> None:
    planned = Counter(plan_media(PROFILE, i, "r", ["a.jpg"], None).fate for i in range(16))
    assert planned["error"] and planned["truncated"] and planned["ok"]  # this seed plants both kinds
    load_settings = load_settings_for(settings, tmp_path / "data", PROFILE)
    report = run_load(load_settings, PROFILE, RunOptions(work_dir=tmp_path, monitor_s=1.0, drain_timeout_s=240))

    assert report.published == 16
    assert report.unfinished == 0 and report.stored + report.failed == report.published
    assert report.stored == planned["ok"] and report.failed == planned["error"] + planned["truncated"]
    assert report.causes_by_fate == {
        "ok": {"stored": planned["ok"]},
        **{fate: {CAUSE[fate]: planned[fate]} for fate in ("error", "truncated")},
    }
    assert report.unexpected == 0 and report.planned_ok_success_rate == 1.0
    assert report.frames == report.vectors == report.stored  # one frame per photo, one scene vector each
    lat = report.latency_s
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert report.final_lag["fetch"] == 0  # the requests topic has no transaction markers
    assert set(report.peak_rss_mb) >= {"fetch", "embed", "sink-qdrant"} and min(report.peak_rss_mb.values()) > 0
    assert report.lag_series and report.throughput_series

    figures = measured(report)
    assert check(figures, {"max_unexpected": 0, "max_unfinished": 0, "min_planned_ok_success_rate": 1.0}) == []
    violated = check(
        figures,
        {
            "min_success_rate": 1.0,  # the planned failures make it lower
            "max_latency_p99_s": lat["p99"] / 2,
            "max_peak_rss_mb": {"embed": 1},
            "max_unexpected": 0,
        },
    )
    assert [v.split(":")[0] for v in violated] == ["min_success_rate", "max_latency_p99_s", "max_peak_rss_mb[embed]"]


def test_an_interrupted_run_hands_out_checkpoints_drains_and_reports_what_it_published(
    settings: Settings, tmp_path: Path
) -> None:
    profile = replace(PROFILE, max_media=400, failures={})  # 100 s of publishing if nothing stopped it
    checkpoints: list[LoadReport] = []

    def checkpoint(report: LoadReport) -> None:
        checkpoints.append(report)
        if len(checkpoints) == 3:
            raise KeyboardInterrupt  # what Ctrl-C (or SIGTERM, in loadgen) raises in the polling loop

    load_settings = load_settings_for(settings, tmp_path / "data", profile)
    opts = RunOptions(work_dir=tmp_path, monitor_s=1.0, drain_timeout_s=240, checkpoint=checkpoint, checkpoint_s=2.0)
    report = run_load(load_settings, profile, opts)

    assert [c.partial.split(" ")[0] for c in checkpoints] == ["checkpoint"] * 3
    assert 0 < checkpoints[0].published <= checkpoints[1].published <= checkpoints[2].published
    assert report.partial.startswith("interrupted")
    assert checkpoints[2].published <= report.published < 400  # publishing stopped early
    assert report.unfinished == 0 and report.stored == report.published  # and what it published was drained
