"""loadtest.bench_remote_pipeline runs end to end at a tiny size and writes its section (to a copy of BENCHMARKS.md).

Real parts: the test stack's broker, fetch, embed (remote) and sink-qdrant worker processes, the
load server and the stand-in provider on loopback with a token quota. No timing is asserted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.bench_remote_pipeline import SECTION, SEED, Plan, parser, plan_of, run, section
from loadtest.report import write_section
from mediavec.settings import Settings

pytestmark = pytest.mark.integration

# 24 photos; a quota configured on both sides (its token bucket holds more than the run bills: nothing waits).
PLAN = Plan(images=24, tokens_per_min=300_000, requests_per_s=4.0, latency_s=0.02, p99_s=0.05, warmup=2)


def test_the_pipeline_benchmark_stores_every_image_through_the_provider_and_writes_its_section(
    settings: Settings, tmp_path: Path
) -> None:
    result = run(settings, PLAN, tmp_path / "work", progress=False, monitor_s=1.0, model_s=0.3)

    report, seen = result.report, result.counters
    assert report.published == report.stored == 24 and report.failed == report.unfinished == 0
    assert report.vectors == 24  # scene only: one vector an image, as the seed stored
    assert seen.items >= 24 + PLAN.warmup and seen.ok >= 1  # every image went through the provider
    assert seen.tokens > 0 and result.tokens_per_image > 0 and result.quota_per_s is not None
    assert result.success == 1.0 and result.per_s == report.stored / result.wall_s

    command = "python -m loadtest.bench_remote_pipeline --images 24"
    target = tmp_path / "BENCHMARKS.md"
    target.write_text("# mediavec benchmarks\n\n<!-- other -->\nkept\n<!-- /other -->\n")
    write_section(SECTION, section(result, command), target)
    text = target.read_text()
    assert "<!-- other -->\nkept\n<!-- /other -->" in text and f"<!-- /{SECTION} -->" in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows[2].startswith("| the seed") and f"{SEED.stored:,}" in rows[2] and "11.34" in rows[2]
    assert rows[3].startswith("| mediavec") and "| 24 | 24 | 100.00% |" in rows[3]
    assert f"`{command}`" in text and "ViT-S-32" in text


def test_the_command_line_names_the_quota_and_the_stand_ins_model() -> None:
    args = parser().parse_args(["--images", "500", "--tpm", "0", "--rps", "2", "--arch", "ViT-B-32"])
    assert plan_of(args) == Plan(images=500, tokens_per_min=None, requests_per_s=2.0, arch="ViT-B-32")
