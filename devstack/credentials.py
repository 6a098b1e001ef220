"""The dev stack's generated credentials: one Kafka SASL user and one PostgreSQL login role.

They are created once per stack, at random, and kept in ``<data_dir>/devstack-credentials.json``
(mode 0600). Passwords are :class:`~pydantic.SecretStr` here and never printed: code that needs
one calls ``get_secret_value()`` at the point it hands it to a client or a config file.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import SecretStr

from devstack import cluster
from devstack.settings import DevSettings
from streams.settings import KafkaSettings

logger = logging.getLogger(__name__)

FILE_NAME = "devstack-credentials.json"
KAFKA_USER = "mediavec"
POSTGRES_ROLE = "mediavec_app"
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-512"]


@dataclass(frozen=True)
class DevCredentials:
    """Who the stack's clients log in as; the passwords stay secret in every repr."""

    kafka_user: str
    kafka_password: SecretStr
    postgres_role: str
    postgres_password: SecretStr


def path(settings: DevSettings) -> Path:
    return settings.data_dir.resolve() / FILE_NAME


def _new_password() -> str:
    # URL-safe characters only: they need no quoting in a JAAS config or a libpq DSN.
    return secrets.token_urlsafe(24)


def write_private(target: Path, text: str, *, replace: bool = True) -> bool:
    """Write ``text`` to a file only its owner can read (created 0600, then moved into place).

    With ``replace=False`` an existing file is kept (two processes creating it at once agree on
    one content); returns whether this call put its text there.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    if replace:
        os.replace(tmp, target)
        return True
    try:
        os.link(tmp, target)  # atomic, and fails when the file exists
    except FileExistsError:
        return False
    finally:
        tmp.unlink()
    return True


def load_or_create(settings: DevSettings) -> DevCredentials:
    """The stack's credentials, generated and stored on first use."""
    target = path(settings)
    if not target.exists():
        fresh = {"kafka_password": _new_password(), "postgres_password": _new_password()}
        if write_private(target, json.dumps(fresh) + "\n", replace=False):
            logger.info("generated dev stack credentials in %s", target)
    if target.stat().st_mode & 0o077:
        target.chmod(0o600)
    stored = json.loads(target.read_text())
    return DevCredentials(
        kafka_user=KAFKA_USER,
        kafka_password=SecretStr(stored["kafka_password"]),
        postgres_role=POSTGRES_ROLE,
        postgres_password=SecretStr(stored["postgres_password"]),
    )


def sasl_bootstrap_servers(settings: DevSettings) -> str:
    """Every node's SASL_PLAINTEXT listener (two ports above its plaintext one)."""
    return cluster.bootstrap_servers(settings, "sasl")


def sasl_port(settings: DevSettings) -> int:
    """Node 0's SASL_PLAINTEXT listener."""
    return cluster.ports(settings).sasl


def kafka_sasl_settings(settings: DevSettings, mechanism: SaslMechanism = "SCRAM-SHA-512") -> KafkaSettings:
    """``settings.kafka`` pointed at the SASL listener, logged in as the stack's user."""
    creds = load_or_create(settings)
    return settings.kafka.model_copy(
        update={
            "bootstrap_servers": sasl_bootstrap_servers(settings),
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": mechanism,
            "sasl_username": creds.kafka_user,
            "sasl_password": creds.kafka_password,
        }
    )


def postgres_dsn(settings: DevSettings, database: str) -> SecretStr:
    """A libpq DSN for the stack's login role, password included (hence a secret)."""
    creds = load_or_create(settings)
    return SecretStr(
        f"host=127.0.0.1 port={settings.devstack.postgres_port} dbname={database} "
        f"user={creds.postgres_role} password={creds.postgres_password.get_secret_value()}"
    )
