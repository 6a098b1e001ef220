"""Connections to the metadata database: the DSN comes from settings and is never logged."""

from __future__ import annotations

from typing import Any

import psycopg

from mediavec.devstack import postgres as devstack_postgres
from streams.settings import Settings

CONNECT_TIMEOUT_S = 10


def dsn(settings: Settings) -> str:
    """``settings.postgres.dsn``, or the local dev stack's database when it is unset. A secret."""
    secret = settings.postgres.dsn
    return secret.get_secret_value() if secret is not None else devstack_postgres.dsn(settings)


def connect(settings: Settings, application_name: str = "mediavec", **kwargs: Any) -> psycopg.Connection:
    """An autocommit connection (callers open explicit transactions with ``conn.transaction()``)."""
    return psycopg.connect(
        dsn(settings),
        autocommit=True,
        application_name=application_name,
        connect_timeout=CONNECT_TIMEOUT_S,
        **kwargs,
    )
