"""Background processes of the dev stack: start detached, find again by PID file, stop.

A service is "running" only when its PID is alive, not a zombie, and its command line still
carries the service's marker (``kafka.Kafka``, ``postgres``): a PID file left behind by a crash
must not make a reused PID look like our broker.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

POLL_S = 0.1


class DevStackError(RuntimeError):
    """The dev stack could not do what was asked; the message says why and where the logs are."""


def read_pid(pid_file: Path) -> int | None:
    """First line of a PID file (Kafka's and PostgreSQL's ``postmaster.pid`` alike)."""
    try:
        first = pid_file.read_text().splitlines()[0].strip()
    except (FileNotFoundError, IndexError):
        return None
    return int(first) if first.isdigit() else None


def pid_alive(pid: int, marker: str) -> bool:
    """Whether ``pid`` is a live (non-zombie) process whose command line contains ``marker``."""
    _reap(pid)
    proc = Path(f"/proc/{pid}")
    try:
        status = dict(line.split(":", 1) for line in (proc / "status").read_text().splitlines() if ":" in line)
        cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return False
    # A JVM's main thread can exit (state Z) while its other threads still shut the broker down.
    zombie = status.get("State", "").split()[:1] in (["Z"], ["X"]) and int(status.get("Threads", "1")) <= 1
    if zombie:
        return False
    if not cmdline:  # exiting (memory already released) or in the middle of exec; not a kernel thread
        return status.get("PPid", "").strip() != "2"
    return marker in cmdline


def running_pid(pid_file: Path, marker: str) -> int | None:
    pid = read_pid(pid_file)
    return pid if pid is not None and pid_alive(pid, marker) else None


def _reap(pid: int) -> None:
    """Collect ``pid`` if it is our own exited child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def spawn(cmd: Sequence[str], log_path: Path, cwd: Path, marker: str, env: Mapping[str, str] | None = None) -> int:
    """Start ``cmd`` in its own session, detached from this process, output appended to ``log_path``.

    Returns once ``/proc`` shows the new program (its command line holds ``marker``): Popen may
    return in the instant between exec's point of no return and the new command line appearing.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            list(cmd),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    wait_for(lambda: proc.poll() is not None or pid_alive(proc.pid, marker), 10.0)
    logger.debug("started pid %d: %s", proc.pid, " ".join(cmd))
    return proc.pid


def stop_pid(pid: int, marker: str, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> bool:
    """Send ``sig``, wait up to ``timeout_s`` for the process to exit, then SIGKILL it.

    Returns True when it exited on ``sig`` alone, False when it had to be killed.
    """
    if not pid_alive(pid, marker):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    if wait_for(lambda: not pid_alive(pid, marker), timeout_s):
        return True
    logger.warning("pid %d (%s) still running %.0f s after signal %d; killing it", pid, marker, timeout_s, sig)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not wait_for(lambda: not pid_alive(pid, marker), 30.0):
        raise DevStackError(f"pid {pid} ({marker}) survived SIGKILL")
    return False


def wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could not bind ``host:port`` now (same SO_REUSEADDR as the servers use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def port_open(port: int, host: str = "127.0.0.1", timeout_s: float = 1.0) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def require_free_ports(service: str, ports: Mapping[str, int]) -> None:
    busy = {name: port for name, port in ports.items() if port_in_use(port)}
    if busy:
        listed = ", ".join(f"{name} {port}" for name, port in busy.items())
        raise DevStackError(
            f"cannot start {service}: port(s) already taken on 127.0.0.1: {listed}. "
            "Another stack or program uses them; stop it or choose other ports "
            "(MEDIAVEC_DEVSTACK__KAFKA_PORT, __CONTROLLER_PORT, __POSTGRES_PORT, __REGISTRY_PORT)."
        )


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock, so two processes bringing the same stack up or down take turns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
