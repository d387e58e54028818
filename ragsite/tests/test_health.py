from __future__ import annotations

import json


def test_health_answers_ok(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_every_response_carries_a_request_id(client):
    response = client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert response["X-Request-ID"] == "abc-123"
    assert len(client.get("/health")["X-Request-ID"]) == 32


def test_ready_answers_ok_when_the_database_is_up(db, client):
    response = client.get("/ready")
    body = response.json()
    assert body["checks"]["database"]["status"] == "ok", body
    assert response.status_code == 200, body


def test_ready_answers_503_naming_the_database_when_it_is_unreachable(manage, tmp_path):
    # A separate process whose DATABASE_URL points at a closed port: the real failure, not a mock.
    script = (
        "import json; from django.test import Client;"
        "r = Client().get('/ready'); print(r.status_code); print(r.content.decode())"
    )
    result = manage(
        "shell",
        "-c",
        script,
        env={
            "DATABASE_URL": "postgres://postgres@127.0.0.1:9/nothing",
            "DATA_DIR": str(tmp_path),
            "ALLOWED_HOSTS": "testserver",
        },
    )
    lines = result.stdout.strip().splitlines()
    assert lines[-2] == "503", result.stdout + result.stderr
    body = json.loads(lines[-1])
    assert "database" in body["failed"]
    assert body["checks"]["database"]["status"] == "error"


def test_the_api_docs_page_loads_its_assets_from_this_server(db, client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "drf_spectacular_sidecar" in page and "cdn." not in page.lower()
