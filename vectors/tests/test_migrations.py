"""The embedding cache moved from documents to vectors with its rows (a state-only move + rename)."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import connection

pytestmark = pytest.mark.django_db(transaction=True)


def test_migrate_from_before_the_move_keeps_the_cached_vectors_and_their_content_type():
    from django.contrib.contenttypes.models import ContentType

    from vectors.models import EmbeddingCache

    # The schema of the release before the move: the cache is documents' table.
    call_command("migrate", "vectors", "zero", verbosity=0)
    call_command("migrate", "documents", "0007_apikey_moved_to_accounts", verbosity=0)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO documents_embeddingcache (model, content_hash, dimension, vector, created_at) "
                "VALUES ('m', 'h1', 1, '\\x0000803f'::bytea, now()), ('m', 'h2', 1, '\\x00000040'::bytea, now())"
            )
        ContentType.objects.filter(app_label="vectors", model="embeddingcache").delete()
        old_type = ContentType.objects.get_or_create(app_label="documents", model="embeddingcache")[0]
    finally:
        call_command("migrate", verbosity=0)

    rows = {row.content_hash: bytes(row.vector) for row in EmbeddingCache.objects.all()}
    assert rows == {"h1": b"\x00\x00\x80\x3f", "h2": b"\x00\x00\x00\x40"}
    assert EmbeddingCache._meta.db_table == "vectors_embeddingcache"
    ContentType.objects.clear_cache()
    assert ContentType.objects.get_for_model(EmbeddingCache).pk == old_type.pk  # its permissions kept
