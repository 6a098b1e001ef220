"""loadtest.bench_remote runs end to end at a tiny size (BENCHMARKS.md is left alone)."""

from __future__ import annotations

from loadtest.bench_remote import bench, section


def test_the_remote_benchmark_runs_every_design_and_reports_it() -> None:
    arms = bench(12, rps=40.0, latency_s=0.02, p99_s=0.05, log=lambda _line: None)
    assert [a.name for a in arms] == ["seed", "adaptive", "adaptive + quota"]
    assert all(a.requests >= a.stored for a in arms)
    assert arms[1].stored == arms[2].stored == 12  # the adaptive designs retry: nothing is lost
    text = section(arms, 12, 40.0, 0.02, 0.05, "python -m loadtest.bench_remote --images 12 --rps 40")
    assert text.count("\n| ") == 5 and "share of quota" in text  # the header, its rule and three designs
