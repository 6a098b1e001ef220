"""``python -m loadtest.gpu_check`` exactly as a GPU machine runs it, small and on the CPU, plus its parts."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.gpu_device import peak_fp16_flops
from loadtest.gpu_footage import batches, generated_boxes, load_footage, save_footage

REPO = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\| (busy|quiet) \| (\d+) \| ([\d,]+) \| \*\*([\d,]+)\*\* \| (\S+) \| (\S+) \| ([\d.]+) \|$", re.M)


def test_gpu_check_runs_on_the_cpu_and_its_vectors_match_the_reference() -> None:
    argv = ["--seconds", "1", "--distinct", "2", "--boxes", "auto"]
    run = subprocess.run(
        [sys.executable, "-m", "loadtest.gpu_check", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    assert out.count("| footage |") == 1, out  # one table
    rows = {m[0]: m[1:] for m in ROW.findall(out)}
    assert set(rows) == {"busy", "quiet"}, out
    assert rows["busy"][0] == "24" and rows["quiet"][0] == "0"
    for _crops, frames_s, vectors_s, util, share, cosine in rows.values():
        assert int(frames_s.replace(",", "")) >= 0 and int(vectors_s.replace(",", "")) > 0
        assert (util, share) == ("n/a", "n/a")  # no GPU here, and the table says so
        assert float(cosine) >= 0.999
    assert "cosine >= 0.999: met" in out
    assert "`python -m loadtest.gpu_check --seconds 1 --distinct 2 --boxes auto`" in out
    assert "from the detector (ultralytics/fall_detection/best)" in out


@pytest.mark.parametrize(
    ("name", "tflops"),
    [
        ("NVIDIA H100 80GB HBM3", 989.4),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H100 NVL", 835.5),
        ("NVIDIA H200", 989.4),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA L4", 121.0),
        ("NVIDIA L40S", 362.05),
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_fp16_peak_by_device_name(name: str, tflops: float | None) -> None:
    peak = peak_fp16_flops(name)
    assert (peak / 1e12 if peak is not None else None) == (pytest.approx(tflops) if tflops else None)


def test_batches_are_full_and_cover_every_frame() -> None:
    frames = [bytes([i]) for i in range(7)]
    boxes = [[(0.0, 0.0, 1.0, 1.0)] * 4 for _ in frames]  # 5 rows a frame
    cut = batches(frames, boxes, 16)  # 3 frames a batch
    assert [len(b[0]) for b in cut] == [3, 3, 3]
    assert {f for jpegs, _ in cut for f in jpegs} == set(frames)


def test_generated_boxes_lie_inside_the_frame() -> None:
    for x1, y1, x2, y2 in generated_boxes(random.Random(1), 200, 1024, 576):
        assert 0 <= x1 < x2 <= 1024 and 0 <= y1 < y2 <= 576
        assert x2 - x1 >= 16 and y2 - y1 >= 16


def test_saved_footage_loads_back_as_it_was(tmp_path: Path) -> None:
    frames = [b"\xff\xd8one", b"\xff\xd8two"]
    boxes = [[(1.0, 2.5, 30.0, 40.0)], [(0.0, 0.0, 16.0, 16.0), (5.0, 6.0, 70.0, 80.0)]]
    save_footage(tmp_path / "footage", frames, boxes, "generated")
    assert load_footage(tmp_path / "footage") == (frames, boxes, "generated (saved footage)")
