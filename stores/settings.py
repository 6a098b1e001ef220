"""Settings of the stores: Qdrant, PostgreSQL metadata and the encrypted index, and the class the store layer reads."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr

from streams.settings import SECTION, StreamSettings

FREE_TIER_CAP = 1_000_000  # cyborgdb-core without an API key: items per index, enforced locally
UPSERT_CHUNK = 4096  # items per engine upsert; the engine counts a whole call against the cap
MIN_TRAIN_VECTORS = 10_000  # cyborgdb-core 0.18 silently skips train() below this many vectors


class QdrantSettings(BaseModel):
    model_config = SECTION
    url: str | None = Field(None, description="Qdrant server URL; unset means the embedded store.")
    api_key: SecretStr | None = None
    ca_file: Path | None = Field(
        None, description="CA bundle (PEM) that signs an https server's certificate; default the system's."
    )
    timeout_s: int = Field(30, ge=1, description="Per-request timeout against a server.")
    path: Path | None = Field(None, description="Embedded store directory (default DATA_DIR/qdrant).")
    backend: Literal["edge", "local"] = Field("edge", description="Embedded backend when url is unset.")
    optimize_after_points: int = Field(
        20_000,
        ge=0,
        description="Edge store: rebuild a collection's HNSW index (in a child process, ingest goes on) once "
        "this many points were written since its last rebuild; 0 = never (every search scans).",
    )
    optimize_growth: float = Field(
        0.1,
        ge=0.0,
        description="Edge store: and once the points written since the last rebuild reach this fraction of "
        "the collection (so a large collection is not copied for every few new points).",
    )
    hnsw_ef: int = Field(
        128,
        ge=1,
        description="Edge store: candidates an HNSW search keeps; higher finds more of the true nearest, slower.",
    )


class PostgresSettings(BaseModel):
    model_config = SECTION
    dsn: SecretStr | None = Field(None, description="libpq DSN; unset means the local dev stack.")


class EncIndexSettings(BaseModel):
    """The encrypted index (CyborgDB)."""

    model_config = SECTION
    path: Path | None = Field(None, description="Store directory (default DATA_DIR/encindex).")
    key_file: Path | None = Field(None, description="File holding the 32-byte index key (raw or 64 hex chars).")
    key_env: str | None = Field(None, description="Name of the environment variable holding the key as hex.")
    shard_capacity: int = Field(
        900_000,
        ge=1,
        # The engine refuses any upsert, overwrites included, once count + batch > cap.
        le=FREE_TIER_CAP - UPSERT_CHUNK,
        description="Items per shard; a new shard opens before one passes it.",
    )
    train_min: int = Field(
        MIN_TRAIN_VECTORS,
        ge=MIN_TRAIN_VECTORS,  # the engine trains nothing below
        description="Vectors a shard holds before its first training.",
    )
    retrain_growth: float = Field(2.0, gt=1, description="Retrain when a shard grew this many times since training.")
    cpu_threads: int = Field(0, ge=0, description="Engine threads (0 = all cores).")


class StoresSettings(StreamSettings):
    qdrant: QdrantSettings = QdrantSettings()
    postgres: PostgresSettings = PostgresSettings()
    encindex: EncIndexSettings = EncIndexSettings()

    @property
    def qdrant_path(self) -> Path:
        return self.qdrant.path or self.data_dir / "qdrant"
