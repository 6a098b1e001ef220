"""Settings of the encrypted index (to move into streams/settings.py as ``Settings.encindex``).

Until ``EncIndexSettings`` lives in the settings object (env ``MEDIAVEC_ENCINDEX__<FIELD>``),
callers build it here and pass it in; :func:`encindex_settings` picks the settings object's
group once it exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from streams.settings import Settings

FREE_TIER_CAP = 1_000_000  # cyborgdb-core without an API key: items per index, enforced locally
UPSERT_CHUNK = 4096  # items per engine upsert; the engine counts a whole call against the cap
MIN_TRAIN_VECTORS = 10_000  # cyborgdb-core 0.18 silently skips train() below this many vectors


@dataclass(frozen=True)
class EncIndexSettings:
    path: Path | None = None  # store directory; default DATA_DIR/encindex
    key_file: Path | None = None  # 32 raw bytes or 64 hex characters
    key_env: str | None = None  # name of the variable holding 64 hex characters
    shard_capacity: int = 900_000  # items per shard; a new shard opens before one would pass it
    train_min: int = MIN_TRAIN_VECTORS  # vectors a shard holds before its first training
    retrain_growth: float = 2.0  # retrain once a shard holds this many times its last training's count
    cpu_threads: int = 0  # engine threads (0 = all cores)

    def __post_init__(self) -> None:
        limit = FREE_TIER_CAP - UPSERT_CHUNK
        if not 1 <= self.shard_capacity <= limit:
            # The engine refuses any upsert, overwrites included, once count + batch > cap.
            raise ValueError(f"shard_capacity must be between 1 and {limit}, got {self.shard_capacity}")
        if self.train_min < MIN_TRAIN_VECTORS:
            raise ValueError(f"train_min must be at least {MIN_TRAIN_VECTORS} (the engine trains nothing below)")
        if self.retrain_growth <= 1.0:
            raise ValueError(f"retrain_growth must be above 1, got {self.retrain_growth}")
        if self.cpu_threads < 0:
            raise ValueError("cpu_threads must be 0 (all cores) or more")


def encindex_settings(settings: Settings) -> EncIndexSettings:
    """The settings object's encindex group once it has one, else the defaults (no key source)."""
    group = getattr(settings, "encindex", None)
    if group is None:
        return EncIndexSettings()
    return EncIndexSettings(**{f: getattr(group, f) for f in EncIndexSettings.__dataclass_fields__})


def store_path(settings: Settings, enc: EncIndexSettings) -> Path:
    return enc.path or settings.data_dir / "encindex"
