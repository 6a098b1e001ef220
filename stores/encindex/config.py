"""The encrypted index's settings as its code reads them (the section is declared in :mod:`stores.settings`)."""

from __future__ import annotations

from pathlib import Path

from stores.settings import FREE_TIER_CAP, MIN_TRAIN_VECTORS, UPSERT_CHUNK, EncIndexSettings
from streams.settings import StreamSettings

__all__ = ["FREE_TIER_CAP", "MIN_TRAIN_VECTORS", "UPSERT_CHUNK", "EncIndexSettings", "encindex_settings", "store_path"]


def encindex_settings(settings: StreamSettings) -> EncIndexSettings:
    """The settings object's encindex section (the defaults when it has none)."""
    group = getattr(settings, "encindex", None)
    return group if isinstance(group, EncIndexSettings) else EncIndexSettings()


def store_path(settings: StreamSettings, enc: EncIndexSettings) -> Path:
    return enc.path or settings.data_dir / "encindex"
