"""Settings: frozen, typed sections, every field settable by one environment variable.

Each layer declares its sections beside its code and a settings class that composes them with
the layers below (here: Kafka, topics, sink batching and the process-wide fields; ``media``,
``models``, ``stores`` and ``consumers`` add theirs; :class:`mediavec.settings.Settings` is the
whole). Code in a layer takes its layer's class, so it never imports a layer above it.

Variables are ``MEDIAVEC_<SECTION>__<FIELD>`` (for example ``MEDIAVEC_KAFKA__BOOTSTRAP_SERVERS``,
``MEDIAVEC_FETCH__MAX_BYTES``) or ``MEDIAVEC_<FIELD>`` for top-level fields. Secrets are
``SecretStr``: they print as ``**********`` and only ``.get_secret_value()`` reveals them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SECTION = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)  # errors never echo a secret
ENVIRONMENT = SettingsConfigDict(
    env_prefix="MEDIAVEC_", env_nested_delimiter="__", frozen=True, extra="forbid", hide_input_in_errors=True
)


class KafkaSettings(BaseModel):
    model_config = SECTION
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
    transaction_timeout_ms: int = Field(120_000, ge=1)
    max_poll_interval_ms: int = Field(300_000, ge=1)
    session_timeout_ms: int = Field(45_000, ge=1)

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
    model_config = SECTION
    prefix: str = Field("", description="Prepended to every topic name (isolates tests and tenants).")
    sink_prefix: str | None = Field(
        None, description="Prefix of the vectors and DLQ topics when it differs (a replay shares the live sinks)."
    )
    requests_partitions: int = Field(8, ge=1)
    frames_partitions: int = Field(16, ge=1)
    vectors_partitions: int = Field(16, ge=1)
    dlq_partitions: int = Field(4, ge=1)
    replication_factor: int = Field(1, ge=1, description="Copies of each partition; 3 on a cluster.")
    min_insync_replicas: int | None = Field(
        None,
        ge=1,
        description="Topic config min.insync.replicas: the copies an acks=all write waits for; "
        "unset: the broker's default.",
    )

    @model_validator(mode="after")
    def _writable(self) -> TopicSettings:
        # More in-sync copies required than exist: every acks=all write would fail.
        if self.min_insync_replicas is not None and self.min_insync_replicas > self.replication_factor:
            raise ValueError(
                f"min_insync_replicas ({self.min_insync_replicas}) exceeds replication_factor "
                f"({self.replication_factor}): no write could be acknowledged"
            )
        return self


class SinkSettings(BaseModel):
    model_config = SECTION
    batch_size: int = Field(128, ge=1)
    batch_deadline_s: float = Field(0.5, ge=0)


class SchemaRegistrySettings(BaseModel):
    """A Confluent-compatible schema registry, for topics other tools read through one."""

    model_config = SECTION
    url: str | None = Field(
        None,
        description="Root of the registry's Confluent-compatible API: http://host:8081 for Confluent's, "
        "http://host:8080/apis/ccompat/v7 for Apicurio's. Set: Confluent-framed events can be read.",
    )
    framing: Literal["single-object", "confluent"] = Field(
        "single-object",
        description="How the Avro topics are written: the Avro single-object encoding, or the Confluent wire "
        "format (schema id from the registry) for Kafka Connect, ksqlDB and other languages' clients.",
    )
    username: str | None = Field(None, description="HTTP basic auth user, if the registry wants one.")
    password: SecretStr | None = None
    timeout_s: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _reachable(self) -> SchemaRegistrySettings:
        if self.framing == "confluent" and not self.url:
            raise ValueError("framing 'confluent' needs the registry's url (MEDIAVEC_SCHEMA_REGISTRY__URL)")
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"schema registry url must be http:// or https://, not {self.url.split(':', 1)[0]}")
        if self.url and "@" in self.url.split("/")[2 if "//" in self.url else 0]:
            raise ValueError("schema registry url holds credentials: set USERNAME and PASSWORD instead")
        return self


class StreamSettings(BaseSettings):
    """The process-wide fields and the Kafka plumbing's sections; the layers above add theirs."""

    model_config = ENVIRONMENT
    data_dir: Path = Field(Path(".mediavec"), description="Local state: dev stack, embedded stores.")
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus port for this worker; 0 picks none.")
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = Field("text", description="json: one object per line with media_id/offset.")
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    sink: SinkSettings = SinkSettings()
    schema_registry: SchemaRegistrySettings = SchemaRegistrySettings()

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
