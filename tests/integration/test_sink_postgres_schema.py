"""sink-postgres against the real PostgreSQL: migrations, and where the DSN comes from."""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg
import pytest
from pydantic import SecretStr

from consumers.sink_postgres.sink import PostgresSink
from consumers.sink_postgres.transform import COLUMNS, THUMBNAIL_COLUMNS
from devstack import postgres as devstack_postgres
from devstack.settings import DevSettings
from mediavec.settings import Settings
from stores.metadb import applied_versions, connect, dsn, migrate
from stores.metadb.migrate import MigrationError, directory_migrations
from stores.settings import PostgresSettings
from tests.pgutil import race, row_count, sql, vector_records, write_batch

pytestmark = pytest.mark.integration


# -- migrations --------------------------------------------------------------------------------


def test_migrations_build_the_schema_once(settings: Settings) -> None:
    with connect(settings) as conn:
        assert migrate(conn) == [1, 2]
        assert migrate(conn) == []
        assert applied_versions(conn) == [1, 2]
        for table, columns in (("frame_metadata", COLUMNS), ("frame_thumbnails", THUMBNAIL_COLUMNS)):
            cols = conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s ORDER BY ordinal_position",
                (table,),
            ).fetchall()
            strategy = conn.execute(
                "SELECT partstrat FROM pg_partitioned_table WHERE partrelid = %s::regclass", (table,)
            ).fetchone()
            assert tuple(c for (c,) in cols) == columns
            assert strategy == ("r",)


def _write_files(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def test_concurrent_migrations_apply_each_file_once_in_numeric_order(settings: Settings, tmp_path: Path) -> None:
    # Neither file is idempotent: without the lock a second runner would fail or insert twice.
    folder = _write_files(
        tmp_path / "m",
        {
            "2_create.sql": "CREATE TABLE runs (n int);",
            "10_fill.sql": "INSERT INTO runs VALUES (1);",
            "README.txt": "not a migration",
        },
    )
    migrations = directory_migrations(folder)
    results = race(settings, 6, lambda conn: migrate(conn, migrations))
    assert sorted(v for r in results for v in r) == [2, 10]
    assert sql(settings, "SELECT count(*) FROM runs") == [(1,)]
    assert sql(settings, "SELECT version FROM schema_migrations ORDER BY applied_at, version") == [(2,), (10,)]


def test_failing_migration_rolls_back_alone_and_applied_files_must_not_change(
    settings: Settings, tmp_path: Path
) -> None:
    files = {"1_ok.sql": "CREATE TABLE a (x int);", "2_bad.sql": "CREATE TABLE b (x int); SELECT nope;"}
    folder = _write_files(tmp_path / "m", files)
    with connect(settings) as conn:
        with pytest.raises(psycopg.errors.UndefinedColumn):
            migrate(conn, directory_migrations(folder))
        assert applied_versions(conn) == [1]
        assert conn.execute("SELECT to_regclass('b')").fetchone() == (None,)
        (folder / "1_ok.sql").write_text("CREATE TABLE a (x bigint);")
        with pytest.raises(MigrationError, match="changed after it was applied"):
            migrate(conn, directory_migrations(folder))


# -- connection ---------------------------------------------------------------------------------


def test_the_dsn_comes_from_settings_or_the_dev_stack_and_is_never_logged(
    settings: DevSettings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    unset = DevSettings(data_dir=tmp_path / "unset", devstack=settings.devstack, postgres=PostgresSettings())
    with pytest.raises(psycopg.OperationalError, match="MEDIAVEC_POSTGRES__DSN"):
        dsn(unset)  # no DSN and no dev stack in this data directory
    devstack_postgres.publish_dsn(unset)  # what `mediavec dev up` does
    assert dsn(Settings(data_dir=unset.data_dir, postgres=PostgresSettings())) == devstack_postgres.dsn(settings)
    assert settings.postgres.dsn is not None
    # The stack trusts local connections, so the password is ignored by the server but is in the DSN.
    secret = settings.postgres.dsn.get_secret_value() + " password=s3cr3t-do-not-log"
    secretive = settings.model_copy(update={"postgres": PostgresSettings(dsn=SecretStr(secret))})
    caplog.set_level(logging.DEBUG)
    sink = PostgresSink(secretive)
    sink.start()
    try:
        write_batch(sink, vector_records(range(3)))
    finally:
        sink.close()
    assert row_count(settings) == 9
    assert caplog.records and "s3cr3t" not in caplog.text
    assert "s3cr3t" not in repr(secretive)
