"""Apply database migrations while holding a PostgreSQL advisory lock.

Run by docker/entrypoint.sh when RUN_MIGRATIONS=true. Two containers that start together (an api
and a worker, or several api replicas) would otherwise both run `migrate` and the slower one fails
on a table the faster one just created. The lock is taken on a connection of its own, so it is
held for the whole run whatever Django does with its connections meanwhile; PostgreSQL releases
it if this process dies.

Usage: python docker/migrate.py [extra arguments for `manage.py migrate`]
"""

from __future__ import annotations

import os
import sys
import time
import zlib
from pathlib import Path

# A fixed key for "ragsite schema migrations" (advisory locks share one key space per database).
LOCK_KEY = zlib.crc32(b"ragsite.migrate")


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragsite.settings")

    import django
    import psycopg
    from django.core.management import call_command
    from django.db import connection

    django.setup()
    params = connection.get_connection_params()
    with psycopg.connect(**params, autocommit=True) as lock_conn:
        if not lock_conn.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY]).fetchone()[0]:
            print("migrate: another container is applying migrations; waiting for it", flush=True)
            started = time.monotonic()
            lock_conn.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
            print(f"migrate: lock acquired after {time.monotonic() - started:.1f}s", flush=True)
        try:
            call_command("migrate", "--noinput", *argv)
        finally:
            lock_conn.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
    connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
