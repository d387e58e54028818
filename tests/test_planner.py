"""The query planner after bulk writes: statistics are refreshed by the bulk commands, and a
source-filtered keyword query keeps a sane plan even when they are stale (autovacuum off or late)."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import connection

from documents.maintenance import tables_analyze
from documents.models import Chunk, Source
from documents.services import document_ingest_many, source_get_or_create
from search.filters import SearchFilters
from search.keyword import keyword_search

GIN_INDEX = "chunk_search_vector_gin"


def _reltuples(table: str) -> float:
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", [table])
        return cursor.fetchone()[0]


def _ingest(source: Source, count: int, word: str) -> None:
    items = [
        {
            "title": f"{word} note {i}",
            "text": f"Field report {i}: the {word} crossed river {i % 7}.",
            "mime": "text/plain",
        }
        for i in range(count)
    ]
    for result in document_ingest_many(source=source, items=items):
        assert not isinstance(result, Exception), result


@pytest.mark.django_db(transaction=True)
def test_ingest_command_leaves_fresh_planner_statistics(tmp_path):
    for i in range(30):
        (tmp_path / f"note{i}.txt").write_text(f"Note {i} about gazelles and the savanna, entry {i}.")
    call_command("ingest", str(tmp_path), "--no-embed", "--source", "notes")
    # ANALYZE read every row of these small tables, so the planner's row count is exact.
    assert _reltuples(Chunk._meta.db_table) == Chunk.objects.count() > 0


@pytest.mark.django_db(transaction=True)
def test_statistics_follow_ingestion_and_a_small_change_costs_no_analyze():
    chunks = Chunk._meta.db_table
    source = source_get_or_create(name="quiet", kind=Source.Kind.UPLOAD)
    _ingest(source, 40, "heron")  # the task queued after ingestion analyzes
    assert _reltuples(chunks) == Chunk.objects.count() == 40
    _ingest(source, 1, "egret")  # 1 changed row of 41: under the 10% threshold
    assert tables_analyze() == []
    assert _reltuples(chunks) == 40
    _ingest(source, 10, "ibis")
    assert _reltuples(chunks) == Chunk.objects.count() == 51


def _bulk_load(source: Source, *, documents: int, chunks_per_document: int, word: str, every: int) -> None:
    """A bulk load the size of SciFact's (10k chunks), written in two statements: the query
    planner's problem is the volume, not how the rows were made. ``word`` is in one chunk of
    every ``every``-th document."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO documents_document
                (title, url, mime_type, text, content_hash, metadata, status, created_at, updated_at, source_id)
            SELECT 'report ' || i, '', 'text/plain', 'Field report ' || i, md5(i::text), '{}', 'active',
                   now(), now(), %s
            FROM generate_series(1, %s) i
            """,
            [source.pk, documents],
        )
        cursor.execute(
            """
            INSERT INTO documents_chunk (id, ordinal, text, context, token_count, char_start, char_end,
                heading_path, content_hash, metadata, index_status, last_error, sync_attempts, created_at, document_id)
            SELECT gen_random_uuid(), o,
                   'Field report ' || d.id || ' part ' || o || CASE WHEN o = 0 AND d.id %% %s = 0 THEN ' ' || %s ELSE '' END,
                   '', 8, 0, 0, '[]', md5(d.id || '-' || o), '{}', 'indexed', '', 0, now(), d.id
            FROM documents_document d CROSS JOIN generate_series(0, %s - 1) o
            WHERE d.source_id = %s
            """,
            [every, word, chunks_per_document, source.pk],
        )


def _forget_statistics(*tables: str) -> None:
    """Put the tables back in the state of a fresh database after a bulk load, never analyzed
    (autovacuum off or late), whatever earlier tests of the session analyzed. Superuser only;
    undone with the test's transaction."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        if not cursor.fetchone()[0]:
            pytest.skip("needs a superuser to reset the planner statistics")
        cursor.execute("DELETE FROM pg_statistic WHERE starelid = ANY(%s::regclass[])", [list(tables)])
        cursor.execute(
            "UPDATE pg_class SET reltuples = -1, relpages = 0 WHERE oid = ANY(%s::regclass[])", [list(tables)]
        )


def _plan_nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from _plan_nodes(child)


@pytest.mark.django_db
@pytest.mark.parametrize("budget", [3000, 50], ids=["narrow-filter", "wide-filter"])
def test_source_filtered_keyword_query_scans_the_full_text_index_at_most_once_on_stale_statistics(settings, budget):
    settings.SEARCH_KEYWORD_CANDIDATE_BUDGET = budget
    other = source_get_or_create(name="other", kind=Source.Kind.UPLOAD)
    _ingest(other, 50, "walrus")
    loaded = source_get_or_create(name="loaded", kind=Source.Kind.UPLOAD)
    _bulk_load(loaded, documents=2500, chunks_per_document=4, word="zebra", every=50)
    _forget_statistics("documents_source", "documents_document", "documents_chunk")

    statements = []

    def capture(execute, sql, params, many, context):
        if "CROSS JOIN LATERAL" in sql:
            statements.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        hits = keyword_search("zebra", limit=10, filters=SearchFilters(source_ids=[loaded.pk]))
    assert len(hits) == 10
    sql, params = statements[0]
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)
        plan = cursor.fetchone()[0][0]["Plan"]
    gin_loops = [node["Actual Loops"] for node in _plan_nodes(plan) if node.get("Index Name") == GIN_INDEX]
    # Not one index scan per document of the source (400 here; 5,183 and 3 s on SciFact).
    assert all(loops <= 1 for loops in gin_loops), gin_loops
