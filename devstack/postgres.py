"""A real PostgreSQL 15 (Debian's package) in a private data directory, for local runs.

The cluster lives in ``<data_dir>/postgres/data`` with its unix socket inside it, listens on
127.0.0.1 at ``settings.devstack.postgres_port`` and trusts local connections, except for one
login role (``mediavec_app``) that must give its generated password (scram-sha-256), so a DSN
with a password is really checked. PostgreSQL refuses
to run as root, so when we are root its programs run as the ``postgres`` system user that the
Debian package creates, and that user owns the data and log directories.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from devstack import credentials
from devstack.procs import DevStackError, require_free_ports, running_pid, stop_pid, tail, wait_for
from devstack.settings import DevSettings
from stores.metadb.db import local_dsn_file

logger = logging.getLogger(__name__)

PG_BIN = Path("/usr/lib/postgresql/15/bin")
OS_USER = "postgres"  # runs the server when we are root
SUPERUSER = "postgres"  # the database role initdb creates
DATABASE = "mediavec"
APP_ROLE = credentials.POSTGRES_ROLE  # logs in with a password over TCP
FALLBACK_ROOT = Path("/var/tmp/mediavec")
SOCKET_PATH_MAX = 100  # sun_path holds 107 bytes; ".s.PGSQL.NNNNN" must fit too


@dataclass(frozen=True)
class PostgresPaths:
    root: Path
    data: Path
    log_dir: Path

    @classmethod
    def of(cls, settings: DevSettings) -> PostgresPaths:
        root = settings.data_dir.resolve() / "postgres"
        if not owner_can_reach(root):
            # Run as root from a private home (a checkout under /root): the server's own user
            # cannot enter it, so the cluster lives in a directory of its own under /var/tmp.
            digest = hashlib.sha256(str(root).encode()).hexdigest()[:12]
            root = FALLBACK_ROOT / digest / "postgres"
        return cls(root=root, data=root / "data", log_dir=root / "log")

    @property
    def log_file(self) -> Path:
        return self.log_dir / "postgres.log"

    @property
    def pid_file(self) -> Path:
        return self.data / "postmaster.pid"

    @property
    def socket_dir(self) -> Path:
        return self.data


def dsn(settings: DevSettings) -> str:
    return f"host=127.0.0.1 port={settings.devstack.postgres_port} dbname={DATABASE} user={SUPERUSER}"


def publish_dsn(settings: DevSettings) -> Path:
    """Write this stack's DSN where the metadata store looks when ``MEDIAVEC_POSTGRES__DSN`` is unset."""
    path = local_dsn_file(settings.data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dsn(settings) + "\n")
    return path


def _as_root() -> bool:
    return os.geteuid() == 0


def _as_owner(cmd: list[str]) -> list[str]:
    """``cmd`` run as the user that owns the cluster (ourselves unless we are root)."""
    return ["runuser", "-u", OS_USER, "--", *cmd] if _as_root() else cmd


def _bin(name: str) -> str:
    path = PG_BIN / name
    if not path.exists():
        raise DevStackError(f"{path} is missing: install Debian's postgresql-15 (scripts/setup.sh does)")
    return str(path)


def owner_can_reach(path: Path) -> bool:
    """Whether the user that runs PostgreSQL may search every directory leading to ``path``."""
    if not _as_root():
        return True
    existing = path.resolve()
    while not existing.exists():
        existing = existing.parent
    done = subprocess.run(_as_owner(["test", "-x", str(existing)]), capture_output=True, check=False)
    return done.returncode == 0


def _prepare_dirs(paths: PostgresPaths) -> None:
    paths.root.mkdir(parents=True, exist_ok=True)
    if not owner_can_reach(paths.root):
        raise DevStackError(
            f"the {OS_USER!r} user cannot reach {paths.root}: a parent directory is not searchable by it "
            "(chmod o+x the parent, or put MEDIAVEC_DATA_DIR somewhere it can reach)"
        )
    socket = paths.socket_dir / ".s.PGSQL.65535"
    if len(str(socket)) > SOCKET_PATH_MAX:
        raise DevStackError(f"data directory path too long for a unix socket ({socket}); use a shorter data_dir")
    for folder in (paths.data, paths.log_dir):
        folder.mkdir(exist_ok=True)
        folder.chmod(0o700)
        if _as_root():
            shutil.chown(folder, OS_USER, OS_USER)


def init_cluster(settings: DevSettings) -> None:
    """Create the cluster once (initdb); an initialised data directory is left alone."""
    paths = PostgresPaths.of(settings)
    _prepare_dirs(paths)
    if (paths.data / "PG_VERSION").exists():
        return
    cmd = [_bin("initdb"), "-D", str(paths.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C"]
    logger.info("initialising PostgreSQL cluster in %s", paths.data)
    done = subprocess.run(_as_owner(cmd), capture_output=True, text=True, check=False, cwd=paths.root)
    if done.returncode != 0:
        raise DevStackError(f"initdb failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    with (paths.data / "postgresql.conf").open("a") as conf:
        conf.write("\n# mediavec dev stack: port, addresses and socket, rewritten on every start\n")
        conf.write("include_if_exists = 'mediavec.conf'\n")


def _write_conf(settings: DevSettings, paths: PostgresPaths) -> None:
    conf = paths.data / "mediavec.conf"
    conf.write_text(
        "# Written by devstack.postgres on every start; edits are overwritten.\n"
        f"port = {settings.devstack.postgres_port}\n"
        "listen_addresses = '127.0.0.1'\n"
        f"unix_socket_directories = '{paths.socket_dir}'\n"
        "max_connections = 200\n"
    )
    if _as_root():
        shutil.chown(conf, OS_USER, OS_USER)


def hba_rules() -> str:
    """pg_hba.conf: the app role needs its password over TCP; the rest is trusted as before.

    The role's rules come first (the first matching line decides), so a wrong or missing
    password is refused rather than falling through to ``trust``.
    """
    return (
        "# Written by devstack.postgres; edits are overwritten.\n"
        "# TYPE  DATABASE     USER          ADDRESS         METHOD\n"
        f"host    all          {APP_ROLE:<13} 127.0.0.1/32    scram-sha-256\n"
        f"host    all          {APP_ROLE:<13} ::1/128         scram-sha-256\n"
        "local   all          all                           trust\n"
        "host    all          all           127.0.0.1/32    trust\n"
        "host    all          all           ::1/128         trust\n"
        "local   replication  all                           trust\n"
        "host    replication  all           127.0.0.1/32    trust\n"
    )


def _write_hba(paths: PostgresPaths) -> bool:
    """Write pg_hba.conf when it differs; return whether it changed (a running server must reload)."""
    hba = paths.data / "pg_hba.conf"
    if hba.exists() and hba.read_text() == hba_rules():
        return False
    hba.write_text(hba_rules())
    hba.chmod(0o600)
    if _as_root():
        shutil.chown(hba, OS_USER, OS_USER)
    return True


def _marker(settings: DevSettings) -> str:
    """What the postmaster's command line holds (``postgres -D <data>``), unique to this stack."""
    return f"postgres -D {PostgresPaths.of(settings).data}"


def pid(settings: DevSettings) -> int | None:
    """The postmaster's PID when it is running, else None."""
    return running_pid(PostgresPaths.of(settings).pid_file, _marker(settings))


def start(settings: DevSettings, timeout_s: float = 120.0) -> int:
    """Start the server (initialising the cluster first if needed); return the postmaster's PID."""
    paths = PostgresPaths.of(settings)
    publish_dsn(settings)
    running = pid(settings)
    if running is not None:
        return running
    require_free_ports("PostgreSQL", {"postgres_port": settings.devstack.postgres_port})
    init_cluster(settings)
    _write_conf(settings, paths)
    _write_hba(paths)
    cmd = [_bin("pg_ctl"), "-D", str(paths.data), "-l", str(paths.log_file), "-w", "-t", str(int(timeout_s)), "start"]
    done = subprocess.run(
        _as_owner(cmd), capture_output=True, text=True, check=False, cwd=paths.root, start_new_session=True
    )
    new_pid = pid(settings)
    if done.returncode != 0 or new_pid is None:
        raise DevStackError(
            f"PostgreSQL did not start (pg_ctl exit {done.returncode}); see {paths.log_file}:\n"
            f"{done.stdout}{done.stderr}{tail(paths.log_file)}"
        )
    logger.info("PostgreSQL started, pid %d, port %d, log %s", new_pid, settings.devstack.postgres_port, paths.log_file)
    return new_pid


def _connect(settings: DevSettings, dbname: str = DATABASE) -> psycopg.Connection:
    port = settings.devstack.postgres_port
    return psycopg.connect(
        host="127.0.0.1", port=port, dbname=dbname, user=SUPERUSER, connect_timeout=3, autocommit=True
    )


def ensure_database(settings: DevSettings, name: str = DATABASE, owner: str | None = None) -> bool:
    """Create database ``name`` if it does not exist; return whether it was created.

    ``owner`` (a role such as :data:`APP_ROLE`) owns it, and with it the ``public`` schema.
    """
    with _connect(settings, "postgres") as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if owner is not None:
            create = sql.SQL("{} OWNER {}").format(create, sql.Identifier(owner))
        conn.execute(create)
    logger.info("created database %s", name)
    return True


def drop_database(settings: DevSettings, name: str) -> None:
    """Drop database ``name`` (disconnecting its sessions); a missing one is fine."""
    with _connect(settings, "postgres") as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _answers(settings: DevSettings) -> bool:
    try:
        with _connect(settings, "postgres") as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)
    except psycopg.OperationalError as exc:
        logger.debug("PostgreSQL not ready yet: %s", exc)
        return False


def wait_ready(settings: DevSettings, timeout_s: float = 120.0) -> None:
    """Block until the server answers a query, then make sure the ``mediavec`` database exists."""
    paths = PostgresPaths.of(settings)

    def ready() -> bool:
        if pid(settings) is None:
            raise DevStackError(f"PostgreSQL is not running; see {paths.log_file}:\n{tail(paths.log_file)}")
        return _answers(settings)

    if not wait_for(ready, timeout_s):
        raise DevStackError(f"PostgreSQL did not answer within {timeout_s:.0f} s; see {paths.log_file}")
    ensure_database(settings)
    ensure_app_role(settings)
    if _write_hba(paths):  # a server started by an older version still trusts the app role
        _reload(settings, timeout_s)


def ensure_app_role(settings: DevSettings) -> None:
    """Create or update the password-checked login role.

    The password goes to the server as a SCRAM verifier computed here (as psql's ``\\password``
    does), so its plain text is in no statement the server could log.
    """
    creds = credentials.load_or_create(settings)
    with _connect(settings, "postgres") as conn:
        verifier = conn.pgconn.encrypt_password(
            creds.postgres_password.get_secret_value().encode(), APP_ROLE.encode(), b"scram-sha-256"
        ).decode()
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,)).fetchone()
        verb = sql.SQL("ALTER ROLE" if exists else "CREATE ROLE")
        statement = sql.SQL("{} {} WITH LOGIN CREATEDB PASSWORD {}")
        conn.execute(statement.format(verb, sql.Identifier(APP_ROLE), sql.Literal(verifier)))


def _reload(settings: DevSettings, timeout_s: float) -> None:
    """Make the server re-read pg_hba.conf and wait until new sessions see the reload."""
    with _connect(settings, "postgres") as conn:
        before = conn.execute("SELECT pg_conf_load_time()").fetchone()
        conn.execute("SELECT pg_reload_conf()")

    def reloaded() -> bool:
        with _connect(settings, "postgres") as conn:
            return conn.execute("SELECT pg_conf_load_time()").fetchone() != before

    if not wait_for(reloaded, timeout_s):
        raise DevStackError("PostgreSQL did not reload its configuration")


def stop(settings: DevSettings, timeout_s: float = 60.0) -> None:
    """Stop the server with a fast shutdown (SIGINT: sessions are ended, data is flushed).

    SIGTERM would be PostgreSQL's "smart" shutdown, which waits for every client to leave.
    """
    running = pid(settings)
    if running is not None:
        logger.info("stopping PostgreSQL pid %d", running)
        stop_pid(running, _marker(settings), signal.SIGINT, timeout_s)
