"""Moving ApiKey from documents to accounts keeps every key: `migrate` from the schema before the move."""

from __future__ import annotations

import hashlib

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from accounts.models import ApiKey


def _migrate(targets) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets if targets else executor.loader.graph.leaf_nodes())
    return executor


@pytest.mark.django_db(transaction=True)
def test_api_keys_stored_before_the_move_survive_migrate_and_still_authenticate(client, django_user_model):
    # Back to the schema of before the move: documents owns the model and its table.
    executor = _migrate([("accounts", None)])
    old_apps = executor.loader.project_state([("documents", "0006_document_original_file")]).apps
    old_key = old_apps.get_model("documents", "ApiKey")
    owner = django_user_model.objects.create_user("owner", is_staff=False)
    plain = "rs_key-made-before-the-move"
    old_key.objects.create(
        name="ci-uploader",
        prefix=plain[:10],
        key_hash=hashlib.sha256(plain.encode()).hexdigest(),
        scope="write",
        user_id=owner.pk,
    )
    old_key.objects.create(name="revoked", prefix="rs_revoked", key_hash="0" * 64, revoked_at="2026-01-01T00:00:00Z")

    _migrate(None)

    kept = {key.name: key for key in ApiKey.objects.all()}
    assert set(kept) == {"ci-uploader", "revoked"}
    assert kept["ci-uploader"].scope == "write" and kept["ci-uploader"].user == owner
    assert not kept["revoked"].is_active
    assert ApiKey._meta.db_table == "accounts_apikey"
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {plain}"
    assert client.get("/api/documents/").status_code == 200
    # A new key gets the next id, not one of the kept ones (the id sequence came along).
    assert ApiKey.objects.create(name="new", prefix="rs_new", key_hash="1" * 64).pk not in {k.pk for k in kept.values()}
