"""The search benchmark's code, at a size CI runs in seconds (BENCHMARKS.md is left alone).

At 2,000 points no segment reaches the engine's indexing threshold, so every search is exact and
recall@10 must come out 1.0: a wrong filter, id or recall sum shows here.
"""

from __future__ import annotations

from pathlib import Path

from loadtest import bench_search


def test_the_search_benchmark_runs_every_query_type(tmp_path: Path) -> None:
    lines: list[str] = []
    result = bench_search.bench(2_000, queries=5, efs=[16, 64], rate=2_000, root=tmp_path, log=lines.append)

    rows = result["rows"]
    assert [(r["type"], r["ef"]) for r in rows] == [(t, ef) for ef in (16, 64) for t in bench_search.TYPES]
    assert all(r["recall"] == 1.0 and r["p99"] >= r["p50"] > 0 for r in rows)
    assert result["total"] > 2_000 and result["ingest_rate"] > 0  # the ingest thread wrote meanwhile
    assert result["build"].points == 2_000
    assert bench_search.tuned_ef(rows) == 16
    text = bench_search.section(result, "python -m loadtest.bench_search --points 2000")
    assert "`python -m loadtest.bench_search --points 2000`" in text and "| more-like-this | 64 |" in text
    assert len(lines) == 2 + len(rows)


def test_payloads_are_what_the_sink_writes() -> None:
    scene, obj = bench_search.payload(0), bench_search.payload(5)
    assert scene["space"] == "scene" and scene["label"] is None and scene["box"] is None
    assert obj["space"] == "object" and obj["label"] in bench_search.LABELS and obj["object_index"] == 0
    assert bench_search.payload(4 * 64)["media_id"] == "bench-1"  # 64 frames of 4 points per medium
