"""The database schema: migrations, generated search vectors and their GIN indexes."""

from __future__ import annotations

from django.core.management import call_command
from django.db import connection

from documents.models import Chunk, Document, Source


def test_migrations_are_complete(db):
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


def test_system_check_is_clean(db):
    call_command("check", fail_level="WARNING")


def test_migrations_apply_on_an_empty_database(manage):
    # The test database itself was built by applying every migration; this proves the same from a
    # separate process against a brand-new database.
    import uuid

    import psycopg

    name = f"ragsite_migrate_{uuid.uuid4().hex[:8]}"
    settings = connection.settings_dict
    host = settings["HOST"] or "127.0.0.1"
    conninfo = dict(host=host, port=settings["PORT"] or 5432, user=settings["USER"], dbname="postgres", autocommit=True)
    with psycopg.connect(**conninfo) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        if host.startswith("/"):
            url = f"postgres://{settings['USER']}@/{name}?host={host}"
        else:
            url = f"postgres://{settings['USER']}@{host}:{settings['PORT'] or 5432}/{name}"
        result = manage("migrate", "--noinput", env={"DATABASE_URL": url})
        assert result.returncode == 0, result.stderr
    finally:
        with psycopg.connect(**conninfo) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _vector(model, pk) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT search_vector::text FROM {model._meta.db_table} WHERE id = %s", [pk])
        return cursor.fetchone()[0]


def test_editing_a_chunk_updates_its_search_vector_without_application_code(db):
    source = Source.objects.create(name="s")
    doc = Document.objects.create(source=source, title="t", text="x")
    chunk = Chunk.objects.create(document=doc, ordinal=0, context="Kittens", text="Small cats play.", content_hash="h")
    assert "'kitten':1A" in _vector(Chunk, chunk.pk)
    # A raw UPDATE: no model code runs, yet the stored vector follows the row.
    with connection.cursor() as cursor:
        cursor.execute("UPDATE documents_chunk SET context = 'Puppies' WHERE id = %s", [chunk.pk])
    after = _vector(Chunk, chunk.pk)
    assert "'puppi':1A" in after and "kitten" not in after
    Chunk.objects.filter(pk=chunk.pk).update(text="Dogs bark loudly.")
    assert "'bark'" in _vector(Chunk, chunk.pk)


def test_chunk_search_vector_weighs_context_above_text(db):
    source = Source.objects.create(name="s")
    doc = Document.objects.create(source=source, title="t", text="x")
    chunk = Chunk.objects.create(document=doc, ordinal=0, context="Gardening", text="Roses need sun.", content_hash="h")
    vector = _vector(Chunk, chunk.pk)
    assert "'garden':1A" in vector
    assert "'rose'" in vector


def _plan(sql: str, params) -> str:
    with connection.cursor() as cursor:
        # Tiny test tables make a sequential scan cheapest; forbid it to learn whether the index
        # is usable for the query at all.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


def test_full_text_queries_use_the_gin_indexes(db):
    source = Source.objects.create(name="s")
    doc = Document.objects.create(source=source, title="Kittens", text="Small cats")
    Chunk.objects.create(document=doc, ordinal=0, text="Small cats", content_hash="h")
    from django.contrib.postgres.search import SearchQuery

    qs = Chunk.objects.filter(search_vector=SearchQuery("cats", config="english"))
    sql, params = qs.query.sql_with_params()
    assert "chunk_search_vector_gin" in _plan(sql, params)
