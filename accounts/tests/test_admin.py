"""API keys made in the admin: the key is shown once on the page, only its hash is kept, and it works."""

from __future__ import annotations

import re

import pytest

from accounts.models import ApiKey

pytestmark = pytest.mark.django_db


def test_an_api_key_made_in_the_admin_is_shown_once_and_authenticates(staff_client, client):
    form = staff_client.get("/admin/accounts/apikey/add/")
    assert form.status_code == 200 and 'name="name"' in form.content.decode()

    response = staff_client.post("/admin/accounts/apikey/add/", {"name": "ci-uploader", "scope": "write", "user": ""})

    assert response.status_code == 200, response.content
    assert "no-store" in response["Cache-Control"]
    page = response.content.decode()
    plain = re.search(r'value="([^"]+)" id="api-key"', page).group(1)
    key = ApiKey.objects.get(name="ci-uploader")
    assert key.scope == "write" and plain.startswith(key.prefix) and plain not in key.key_hash
    assert "shown this once" in page

    # The key works for the API, and the admin never shows it again.
    search = client.get("/api/search/", {"q": "anything", "mode": "keyword"}, HTTP_AUTHORIZATION=f"Bearer {plain}")
    assert search.status_code == 200, search.content
    assert plain not in staff_client.get(f"/admin/accounts/apikey/{key.pk}/change/").content.decode()
    assert plain not in staff_client.get("/admin/accounts/apikey/").content.decode()


def test_a_key_without_a_name_is_refused_and_nothing_is_made(staff_client):
    response = staff_client.post("/admin/accounts/apikey/add/", {"name": "", "scope": "read", "user": ""})
    assert response.status_code == 200 and "This field is required" in response.content.decode()
    assert not ApiKey.objects.exists()
