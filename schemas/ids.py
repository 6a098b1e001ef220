"""Deterministic point ids: a replay of the same input overwrites instead of duplicating.

id = UUIDv5(NAMESPACE, "{model}|{media_id}|{frame_index}|{space}|{object_index}")
with NAMESPACE = uuid5(NAMESPACE_URL, "https://mediavec.dev/point-id/v1"). Any language with a
UUIDv5 implementation can recompute it.
"""

from __future__ import annotations

import uuid

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://mediavec.dev/point-id/v1")


def point_id(model: str, media_id: str, frame_index: int, space: str, object_index: int = 0) -> str:
    """Return the canonical string UUID of one stored vector."""
    return str(uuid.uuid5(NAMESPACE, f"{model}|{media_id}|{frame_index}|{space}|{object_index}"))
