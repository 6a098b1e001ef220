"""Vectors, ids and settings shared by the encrypted-index tests."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np

from stores.encindex import EncIndexSettings

DIM = 32
NAME = "c1__test-model__scene"
MODEL = "open_clip/test/random"


def unit_vectors(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float16)


def point_ids(n: int, tag: str) -> list[str]:
    return [str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tag}/{i}")) for i in range(n)]


def payloads(n: int, tag: str) -> list[dict[str, object]]:
    return [{"media_id": f"{tag}-{i}", "frame_index": i} for i in range(n)]


def enc_settings(tmp_path: Path, capacity: int = 900_000) -> EncIndexSettings:
    return EncIndexSettings(path=tmp_path / "enc", shard_capacity=capacity)
