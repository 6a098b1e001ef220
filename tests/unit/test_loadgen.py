"""The load generator's parts without a broker: plan, figures, budgets, flatness, report, plot."""

from __future__ import annotations

import hashlib
import io
import json
import random
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from loadtest.load.budgets import BUDGET_DIR, check, load_budget_file, measured, validate
from loadtest.load.monitor import Sample
from loadtest.load.profile import LatencyModel, LoadProfile, load_path, plan_media
from loadtest.load.render import run_markdown, soak_markdown
from loadtest.load.server import stamp_jpeg
from loadtest.load.soak import plot, slope_per_h, trends
from loadtest.load.summary import LoadReport, RunFacts, percentile, summarize
from loadtest.load.tracker import MediaOutcome, Stored

IMAGES = ["a.jpg", "b.jpg"]


def test_plan_is_deterministic_and_follows_the_shares() -> None:
    profile = LoadProfile(failures={"error": 0.1, "truncated": 0.05}, video_share=0.1, seed=3)
    plans = [plan_media(profile, i, "r", IMAGES, "v.avi", 80.0) for i in range(4000)]
    assert plans == [plan_media(profile, i, "r", IMAGES, "v.avi", 80.0) for i in range(4000)]
    fates = Counter(p.fate for p in plans)
    assert 300 < fates["error"] < 500 and 120 < fates["truncated"] < 280
    videos = [p for p in plans if p.kind == "video"]
    assert 300 < len(videos) < 500
    assert all(p.fate == "ok" and 0 <= p.start_s <= 76.0 and p.end_s == p.start_s + 4.0 for p in videos)  # type: ignore[operator]
    assert len({p.media_id for p in plans}) == 4000
    error = next(p for p in plans if p.fate == "error")
    assert error.path.startswith("/load/") and "fail=error" in error.path and f"seed={error.media_id}" in error.path


def test_plan_changes_with_the_seed() -> None:
    a = [plan_media(LoadProfile(seed=1), i, "r", IMAGES, None).delay_s for i in range(50)]
    b = [plan_media(LoadProfile(seed=2), i, "r", IMAGES, None).delay_s for i in range(50)]
    assert a != b


def test_latency_model_has_a_capped_heavy_tail() -> None:
    rng = random.Random(0)
    body = LatencyModel(median_s=0.05, sigma=0.5, tail_share=0.0, max_s=10.0)
    draws = sorted(body.draw(rng) for _ in range(5001))
    assert 0.04 < draws[2500] < 0.06
    tail = LatencyModel(tail_share=1.0, tail_min_s=0.4, tail_alpha=1.5, max_s=2.0)
    tails = [tail.draw(rng) for _ in range(2000)]
    assert min(tails) >= 0.4 and max(tails) == 2.0
    assert sum(t == 2.0 for t in tails) > 100  # P(pareto > 5) = 5**-1.5 = 9%: the cap is reached often


def test_profile_rejects_bad_mixes() -> None:
    with pytest.raises(ValueError, match="unknown failure kinds"):
        LoadProfile(failures={"gremlins": 0.1})
    with pytest.raises(ValueError, match="more than 1"):
        LoadProfile(failures={"error": 0.6}, video_share=0.5)
    with pytest.raises(ValueError, match="unknown load keys"):
        LoadProfile.from_dict({"rate": 1, "burst": 3})
    assert LoadProfile(rate=2.5, duration_s=10).media_count() == 25
    assert LoadProfile(rate=None, max_media=7).media_count() == 7


def test_load_path_encodes_the_behaviour() -> None:
    assert load_path("a.jpg", "m1") == "/load/a.jpg?seed=m1"
    assert (
        load_path("a.jpg", "m1", delay_s=0.25, bw=1000, fail="drip")
        == "/load/a.jpg?seed=m1&delay=0.2500&bw=1000&fail=drip"
    )


def test_stamp_makes_distinct_bytes_with_the_same_pixels() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 30, 60)).save(buf, "JPEG")
    jpeg = buf.getvalue()
    one, two = stamp_jpeg(jpeg, "m1"), stamp_jpeg(jpeg, "m2")
    assert hashlib.sha256(one).digest() != hashlib.sha256(two).digest()
    assert Image.open(io.BytesIO(one)).tobytes() == Image.open(io.BytesIO(jpeg)).tobytes()
    assert stamp_jpeg(b"RIFF....AVI ", "m1") == b"RIFF....AVI "


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 99)) == (50.0, 95.0, 99.0)
    assert percentile([3.0], 99) == 3.0
    with pytest.raises(ValueError):
        percentile([], 50)


def _facts(media: dict[str, MediaOutcome], stored: list[Stored], samples: list[Sample] | None = None) -> RunFacts:
    return RunFacts(
        run_id="r",
        mode="run",
        profile=LoadProfile(rate=1.0, failures={"error": 0.2}).to_dict(),
        fixed_rate=True,
        media=media,
        stored=stored,
        samples=samples or [],
        peak_rss_mb={"fetch": 100.0, "embed": 900.0},
        final_lag={"fetch": 0, "embed": 3},
        poll_s=0.25,
        monitor_s=5.0,
    )


def _run_facts() -> RunFacts:
    """10 media published 1 s apart from t=100: 7 stored 2 s later, 2 planned errors failed, 1 unfinished."""
    media: dict[str, MediaOutcome] = {}
    stored = []
    for i in range(10):
        at = 100.0 + i
        fate = "error" if i in (3, 6) else "ok"
        m = MediaOutcome(published_at=at, fate=fate, frames_expected=1)
        if fate == "error":
            m.failed_at, m.cause = at + 0.1, "fetch:http_5xx_exhausted"
        elif i < 9:
            m.frame_vectors, m.stored_at = {0: 1}, at + 2.0 + i / 10
            m.framed_at, m.vectored_at = at + 0.5, at + 1.5
            stored.append(Stored(m.stored_at, 1, 1))
        media[f"m{i}"] = m
    return _facts(
        media, stored, [Sample(101.0, {"fetch": 1}, {"fetch": 90.0}), Sample(106.0, {"fetch": 4}, {"fetch": 95.0})]
    )


def test_summary_counts_and_orders() -> None:
    r = summarize(_run_facts())
    assert (r.published, r.stored, r.failed, r.unfinished) == (10, 7, 2, 1)
    assert r.stored + r.failed + r.unfinished == r.published
    assert 0 < r.latency_s["p50"] <= r.latency_s["p95"] <= r.latency_s["p99"] <= r.latency_s["max"]
    assert r.latency_s["p50"] == pytest.approx(2.4) and r.latency_s["max"] == pytest.approx(2.8)
    assert r.hops_s["publish -> frames (fetch)"]["p50"] == pytest.approx(0.5)
    assert r.hops_s["frames -> vectors (embed)"]["p95"] == pytest.approx(1.0)
    assert r.hops_s["vectors -> stored (sink)"]["p50"] == pytest.approx(0.9)
    assert r.causes == {"fetch:http_5xx_exhausted": 2}
    assert r.causes_by_fate == {"error": {"fetch:http_5xx_exhausted": 2}, "ok": {"stored": 7, "unfinished": 1}}
    assert r.unexpected == 0 and r.success_rate == pytest.approx(7 / 9) and r.planned_ok_success_rate == 7 / 8
    # window 100.9 .. 109 (last publish): finished in it are m1..m6 (m0 stored at 102.0 counts too)
    assert r.window_s == pytest.approx(8.1)
    assert r.max_lag == {"fetch": 4, "embed": 3}
    assert r.offered_per_s == pytest.approx(1.0)
    assert json.loads(json.dumps(r.to_dict()))["published"] == 10


def test_unexpected_counts_both_ways() -> None:
    facts = _run_facts()
    facts.media["m0"].failed_at, facts.media["m0"].cause = 103.0, "embed:bad_frame"  # planned good, failed
    facts.media["m3"].failed_at, facts.media["m3"].stored_at = None, 105.0  # planned error, stored
    r = summarize(facts)
    assert r.unexpected == 2


def _report() -> LoadReport:
    return summarize(_run_facts())


def test_budgets_hold_or_name_each_violation() -> None:
    figures = measured(_report())
    assert check(figures, {"max_unexpected": 0, "max_peak_rss_mb": {"fetch": 200}, "max_latency_p99_s": 5}) == []
    violations = check(
        figures,
        {
            "min_success_rate": 0.99,
            "max_unfinished": 0,
            "max_final_lag": {"fetch": 0, "embed": 0},
            "max_peak_rss_mb": {"embed": 500, "sink-qdrant": 100},
            "min_media_per_s": 100,
        },
    )
    assert sorted(v.split(":")[0] for v in violations) == [
        "max_final_lag[embed]",
        "max_peak_rss_mb[embed]",
        "max_peak_rss_mb[sink-qdrant]",
        "max_unfinished",
        "min_media_per_s",
        "min_success_rate",
    ]
    assert "not measured" in next(v for v in violations if "sink-qdrant" in v)


def test_budget_validation_refuses_unknown_keys_and_values() -> None:
    with pytest.raises(ValueError, match="unknown budgets"):
        validate({"max_latency_p999_s": 1})
    with pytest.raises(ValueError, match="must be a number"):
        validate({"max_unexpected": "0"})


@pytest.mark.parametrize("path", sorted(BUDGET_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_checked_in_budget_files_load(path: Path) -> None:
    budget = load_budget_file(str(path))
    assert budget.environment == path.stem
    assert all(budget.budgets[mode] for mode in ("run", "fast", "soak"))
    assert budget.loads["fast"].rate is None and budget.loads["run"].rate
    assert budget.loads["soak"].duration_s == 1800  # the soak's default is 30 minutes


def test_slope_and_trends() -> None:
    assert slope_per_h([(0.0, 10.0), (1800.0, 15.0), (3600.0, 20.0)]) == pytest.approx(10.0)
    assert slope_per_h([(0.0, 1.0)]) == 0.0
    r = _report()
    r.rss_series = [(float(t), {"embed": 1000.0 + t / 360}) for t in range(0, 3600, 60)]  # +10 MB/h
    r.lag_series = [(float(t), {"embed": 5}) for t in range(0, 3600, 60)]
    flat = trends(r)
    assert flat["rss_growth_mb_per_h"]["embed"] == pytest.approx(10.0)
    assert flat["lag_growth_per_h"]["embed"] == pytest.approx(0.0)
    assert flat["rss_first_mb"]["embed"] < flat["rss_last_mb"]["embed"]


def test_the_late_slope_tells_a_leak_from_memory_that_levels_off() -> None:
    leak, plateau = _report(), _report()
    hour = range(0, 3600, 60)
    leak.rss_series = [(float(t), {"embed": 1000.0 + t / 120}) for t in hour]  # +30 MB/h throughout
    plateau.rss_series = [(float(t), {"embed": 1000.0 + min(t, 1800) / 60}) for t in hour]  # +30 MB, then flat
    leaking, levelling = trends(leak), trends(plateau)
    assert leaking["rss_late_growth_mb_per_h"]["embed"] == pytest.approx(30.0)
    assert levelling["rss_growth_mb_per_h"]["embed"] > 10.0, "the whole-window slope sees both alike"
    assert levelling["rss_late_growth_mb_per_h"]["embed"] == pytest.approx(0.0, abs=0.5)
    row = next(line for line in soak_markdown(plateau, levelling, "p.png").splitlines() if line.startswith("| embed"))
    assert row.split("|")[4].strip() == "+0.0", row


def test_a_report_survives_its_json(tmp_path: Path) -> None:
    r = _report()
    r.rss_series = [(0.0, {"embed": 1.0}), (5.0, {"embed": 2.0})]
    r.lag_series = [(0.0, {"embed": 3})]
    r.throughput_series = [(1.0, 2.0, 3.0)]
    r.partial = "checkpoint 300 s into the run"
    again = LoadReport.from_dict(json.loads(json.dumps(r.to_dict())))
    assert again == r
    older = r.to_dict()
    del older["partial"]  # a report saved before reports could be partial reads as whole
    assert LoadReport.from_dict(older).partial == ""


def test_markdown_and_plot(tmp_path: Path) -> None:
    r = _report()
    text = run_markdown(r, "Load test", "python -m loadtest.loadgen run", "a machine", "cpu-2core", ["x: 1 > 0"])
    assert "| stored / failed / unfinished | 7 / 2 / 1 |" in text
    assert "| error | fetch:http_5xx_exhausted | 2 |" in text and "VIOLATED: x: 1 > 0" in text
    assert "Partial report" not in text
    r.partial = "interrupted 42 s into the run"
    assert "**Partial report** (interrupted 42 s into the run)" in run_markdown(r, "Soak", "c", "m", "e", [])
    r.rss_series = [(float(t), {"embed": 1000.0}) for t in range(0, 600, 60)]
    r.lag_series = [(float(t), {"embed": 2}) for t in range(0, 600, 60)]
    png = plot(r, tmp_path / "soak.png")
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 500
    assert "![soak" in soak_markdown(r, trends(r), "soak.png")
