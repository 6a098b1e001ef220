"""Planning workers per GPU (pinned with CUDA_VISIBLE_DEVICES) or per CPU share, and the partition check."""

from __future__ import annotations

import pytest

from mediavec.supervisor import partition_shortfall, plan_workers, visible_gpus, worker_env


def test_four_workers_per_gpu_each_pinned_to_its_gpu() -> None:
    specs = plan_workers(["0", "1"], 4)
    assert [s.index for s in specs] == list(range(8))
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in specs] == ["0"] * 4 + ["1"] * 4
    assert specs[5].device == "cuda:1"


def test_without_a_gpu_the_same_count_of_cpu_workers_share_the_cores() -> None:
    specs = plan_workers([], 4, cpu_count=16)
    assert len(specs) == 4
    assert all(s.env == {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4"} for s in specs)
    assert plan_workers([], 4, cpu_count=2)[0].env["OMP_NUM_THREADS"] == "1"
    with pytest.raises(ValueError, match="at least 1"):
        plan_workers(["0"], 0)


def test_visible_gpus_follow_cuda_visible_devices() -> None:
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []


def test_each_worker_keeps_its_own_metrics_port_on_top_of_its_pinning() -> None:
    spec = plan_workers(["1"], 2)[1]
    env = worker_env({"MEDIAVEC_METRICS_PORT": "9100", **spec.env}, spec.index)
    assert (env["MEDIAVEC_METRICS_PORT"], env["CUDA_VISIBLE_DEVICES"]) == ("9101", "1")


def test_too_few_partitions_for_the_workers_is_said() -> None:
    assert partition_shortfall(16, 16) is None
    warning = partition_shortfall(8, 12)
    assert warning is not None and "8 partitions for 12 workers: 4 will sit idle" in warning
