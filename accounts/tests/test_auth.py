"""API keys through the real interfaces: HTTP requests to the REST API and the create_api_key command."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from accounts.models import ApiKey

pytestmark = pytest.mark.django_db


def post_text(client, **body):
    body.setdefault("title", "Tea")
    body.setdefault("text", "Green tea is steamed soon after picking. Black tea is fully oxidised.")
    return client.post("/api/documents/", body, content_type="application/json")


def error(response):
    body = response.json()
    assert set(body) == {"error"} and {"code", "message", "fields"} <= set(body["error"]), body
    return body["error"]


# --- authentication and permissions ------------------------------------------------------------


def test_unauthenticated_requests_get_401(client):
    for method, path in [
        ("get", "/api/documents/"),
        ("post", "/api/documents/"),
        ("get", "/api/sources/"),
        ("get", "/api/chunks/"),
    ]:
        response = getattr(client, method)(path)
        assert response.status_code == 401, path
        assert error(response)["code"] == "not_authenticated"


def test_a_revoked_or_unknown_key_is_refused(client, api_key):
    client.defaults["HTTP_AUTHORIZATION"] = "Bearer rs_not-a-real-key"
    assert client.get("/api/documents/").status_code == 401
    key = api_key("read")
    ApiKey.objects.update(revoked_at="2026-01-01T00:00:00Z")
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    assert client.get("/api/documents/").status_code == 401


def test_a_read_only_key_can_read_but_not_write(client, api_key):
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {api_key('read')}"
    assert client.get("/api/documents/").status_code == 200
    response = post_text(client)
    assert response.status_code == 403
    assert "write" in error(response)["message"]
    assert ApiKey.objects.get(scope="read").last_used_at is not None


def test_staff_users_may_write_through_their_session(staff_client, fresh_store, run_commit_hooks):
    with run_commit_hooks():
        assert post_text(staff_client).status_code == 201


def test_reading_can_be_made_public_by_a_setting(client, settings):
    settings.SEARCH_PUBLIC = True
    assert client.get("/api/documents/").status_code == 200
    assert post_text(client).status_code == 401


# --- create_api_key ------------------------------------------------------------------------------


def test_create_api_key_prints_a_key_that_authenticates_with_its_scope(client, capsys):
    call_command("create_api_key", "ci-uploader", "--scope", "read")
    key = capsys.readouterr().out.strip()
    row = ApiKey.objects.get(name="ci-uploader")
    assert row.scope == "read" and key.startswith(row.prefix) and key not in row.key_hash
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    assert client.get("/api/documents/").status_code == 200
    assert post_text(client).status_code == 403


def test_create_api_key_refuses_an_unknown_user_and_stores_nothing():
    with pytest.raises(CommandError, match="no user named 'nobody'"):
        call_command("create_api_key", "ci", "--user", "nobody")
    assert not ApiKey.objects.exists()
