"""A YOLO-World v2 checkpoint built from ultralytics' own YAML on seeded random weights (no real
open-vocabulary weights exist offline): the tests' open-vocabulary detector."""

from __future__ import annotations

from pathlib import Path

CHECKPOINT = "yolov8n-worldv2.pt"


def world_checkpoint(folder: Path) -> Path:
    """``folder/yolov8n-worldv2.pt``: YOLO-World v2 (scale n), saved the way ultralytics saves it."""
    import torch
    from ultralytics.nn.tasks import WorldModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(4)  # a seed whose random boxes are not all degenerate on the test photos
        model = WorldModel("yolov8n-worldv2.yaml", nc=80, verbose=False)
    model.names = {i: f"class{i}" for i in range(80)}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CHECKPOINT
    torch.save({"model": model, "train_args": {}}, path)
    return path
