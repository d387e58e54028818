"""Planner statistics after bulk writes.

PostgreSQL plans every query from statistics that ANALYZE gathers; autovacuum runs it after
enough rows changed, but it can be off (this project's own test machine) or minutes late. A
table loaded in bulk and never analyzed makes the planner guess: after `manage.py evaluate`
loaded SciFact into a fresh database, keyword queries with a source filter took 0.7-7 s instead
of ~10 ms (bench/results/planner.md). So every bulk writer (ingest, evaluate, crawl, reindex,
and the background task that follows ingestion) calls ``tables_analyze`` when it is done.
"""

from __future__ import annotations

import logging

from django.db import connection

from documents.models import Chunk, Document, Source

logger = logging.getLogger(__name__)

# Analyze a table again once this share of its rows changed since its last ANALYZE (autovacuum's
# own default is 10% plus 50 rows): below it the statistics are still close enough.
MIN_CHANGED_FRACTION = 0.1


def tables_analyze(models=(Source, Document, Chunk), *, min_changed: float = MIN_CHANGED_FRACTION) -> list[str]:
    """ANALYZE the tables of ``models`` that were never analyzed or changed enough since.

    Cheap when little changed (one catalog query). Tables another session is analyzing right
    now (autovacuum) are skipped, not waited for. Returns the names of the tables analyzed.
    """
    tables = [model._meta.db_table for model in models]
    with connection.cursor() as cursor:
        if connection.pg_version >= 150000:
            # This session's own latest writes reach the statistics views only when it next
            # idles; make them count now (PostgreSQL 15+).
            cursor.execute("SELECT pg_stat_force_next_flush()")
        cursor.execute(
            """
            SELECT relname FROM pg_stat_user_tables
            WHERE relid = ANY(%s::regclass[]) AND n_mod_since_analyze > 0
              AND ((last_analyze IS NULL AND last_autoanalyze IS NULL)
                   OR n_mod_since_analyze >= %s * greatest(n_live_tup, 1))
            ORDER BY relname
            """,
            [tables, min_changed],
        )
        stale = [name for (name,) in cursor.fetchall()]
        for name in stale:
            cursor.execute(f"ANALYZE (SKIP_LOCKED) {connection.ops.quote_name(name)}")
    if stale:
        logger.info("analyzed %s", ", ".join(stale))
    return stale
