"""Connections to the metadata database: the DSN comes from settings and is never logged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from stores.settings import StoresSettings

CONNECT_TIMEOUT_S = 10


LOCAL_DSN_FILE = "postgres.dsn"  # under DATA_DIR: the local dev stack writes its database's DSN here


def local_dsn_file(data_dir: Path) -> Path:
    return data_dir / LOCAL_DSN_FILE


def dsn(settings: StoresSettings) -> str:
    """``settings.postgres.dsn``, or the local dev stack's database when it is unset. A secret."""
    secret = settings.postgres.dsn
    if secret is not None:
        return secret.get_secret_value()
    try:
        return local_dsn_file(settings.data_dir).read_text().strip()
    except FileNotFoundError:
        raise psycopg.OperationalError(
            "no PostgreSQL DSN: set MEDIAVEC_POSTGRES__DSN, or start the local dev stack (mediavec dev up)"
        ) from None


def connect(settings: StoresSettings, application_name: str = "mediavec", **kwargs: Any) -> psycopg.Connection:
    """An autocommit connection (callers open explicit transactions with ``conn.transaction()``)."""
    return psycopg.connect(
        dsn(settings),
        autocommit=True,
        application_name=application_name,
        connect_timeout=CONNECT_TIMEOUT_S,
        **kwargs,
    )
