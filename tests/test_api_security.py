"""Exposing the API safely: production settings pass `check --deploy` and send the security
headers, CORS follows CORS_ORIGINS, oversized bodies get a 413 before they are stored, and
throttling answers 429 with Retry-After, all in the API's one error shape.
"""

from __future__ import annotations

import json
import secrets

import pytest
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile

from conftest import run_manage
from documents.models import Document


def error_of(response) -> dict:
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert set(body) == {"error"} and {"code", "message", "fields"} <= set(body["error"]), body
    return body["error"]


# --- Production settings ------------------------------------------------------------------------


def production_env(tmp_path, **extra: str) -> dict[str, str]:
    return {
        "DJANGO_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "rag.example.org",
        "DATA_DIR": str(tmp_path / "data"),
        "STATIC_ROOT": str(tmp_path / "static"),
        "QDRANT_URL": "",
        "LOG_LEVEL": "WARNING",
        **extra,
    }


@pytest.mark.slow
def test_check_deploy_is_clean_with_production_settings(tmp_path):
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", env=production_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


PROBE = """
import json
from django.test import Client
from django.conf import settings
client = Client(HTTP_HOST="rag.example.org")
https = {"HTTP_X_FORWARDED_PROTO": "https"}
health = client.get("/health", **https)
allowed = client.get("/health", HTTP_ORIGIN="https://app.example.com", **https)
other = client.get("/health", HTTP_ORIGIN="https://evil.example.net", **https)
plain = client.get("/api/sources/")
print("PROBE " + json.dumps({
    "status": health.status_code,
    "headers": dict(health.headers),
    "cors_allowed": allowed.headers.get("Access-Control-Allow-Origin"),
    "cors_other": other.headers.get("Access-Control-Allow-Origin"),
    "plain_status": plain.status_code,
    "plain_location": plain.headers.get("Location"),
    "throttle_rates": settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
}))
"""


@pytest.mark.slow
def test_production_responses_carry_the_security_headers_and_cors_from_the_environment(tmp_path):
    env = production_env(tmp_path, CORS_ORIGINS="https://app.example.com", THROTTLE_ANON="30/min",
                         THROTTLE_KEY="600/min", SECURE_SSL_REDIRECT="true")
    result = run_manage("shell", "-c", PROBE, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("PROBE "))
    probe = json.loads(line.removeprefix("PROBE "))
    headers = {k.lower(): v for k, v in probe["headers"].items()}
    assert probe["status"] == 200
    assert headers["strict-transport-security"].startswith("max-age=31536000")
    assert "includeSubDomains" in headers["strict-transport-security"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "same-origin"
    assert headers["cross-origin-opener-policy"] == "same-origin"
    # CORS_ORIGINS decides who may read responses from a browser
    assert probe["cors_allowed"] == "https://app.example.com"
    assert probe["cors_other"] is None
    # plain HTTP is redirected to HTTPS (the proxy says which it was)
    assert probe["plain_status"] == 301 and probe["plain_location"] == "https://rag.example.org/api/sources/"
    assert probe["throttle_rates"] == {"anon": "30/min", "key": "600/min"}


# --- CORS -----------------------------------------------------------------------------------------


@pytest.fixture
def cors(settings):
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com"]
    return settings


@pytest.mark.django_db
def test_an_allowed_origin_may_read_api_responses_and_another_may_not(api, cors):
    allowed = api.get("/api/sources/", HTTP_ORIGIN="https://app.example.com")
    assert allowed.status_code == 200
    assert allowed["Access-Control-Allow-Origin"] == "https://app.example.com"
    other = api.get("/api/sources/", HTTP_ORIGIN="https://evil.example.net")
    assert other.status_code == 200  # CORS is enforced by the browser: it just gets no grant
    assert "Access-Control-Allow-Origin" not in other


@pytest.mark.django_db
def test_a_preflight_from_an_allowed_origin_is_granted_with_the_authorization_header(client, cors):
    preflight = client.options(
        "/api/documents/",
        HTTP_ORIGIN="https://app.example.com",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type",
    )
    assert preflight.status_code == 200
    assert preflight["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "authorization" in preflight["Access-Control-Allow-Headers"].lower()
    refused = client.options(
        "/api/documents/", HTTP_ORIGIN="https://evil.example.net", HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST"
    )
    assert "Access-Control-Allow-Origin" not in refused


# --- Size limits --------------------------------------------------------------------------------


@pytest.fixture
def small_limits(settings):
    settings.INGEST_MAX_BYTES = 2048
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048 + 1024
    return settings


@pytest.mark.django_db
def test_a_multipart_upload_over_the_limit_is_a_413_json_error(api, small_limits):
    big = SimpleUploadedFile("big.txt", b"word " * 4000, content_type="text/plain")  # 20 000 bytes
    response = api.post("/api/documents/", {"file": big, "title": "Big"})
    assert response.status_code == 413
    error = error_of(response)
    assert error["code"] == "too_large" and "INGEST_MAX_BYTES" in error["message"]
    assert not Document.objects.exists()


@pytest.mark.django_db
def test_a_file_over_the_limit_in_a_small_request_is_refused_as_it_streams_in(api, small_limits):
    # the whole request fits DATA_UPLOAD_MAX_MEMORY_SIZE, the file does not fit INGEST_MAX_BYTES
    file = SimpleUploadedFile("just-over.txt", b"x" * 2500, content_type="text/plain")
    response = api.post("/api/documents/", {"file": file})
    assert response.status_code == 413
    error = error_of(response)
    assert error["code"] == "too_large" and "file" in error["fields"]
    # refused by the upload handler while reading, not by ingestion after the whole file arrived
    assert error["message"].startswith("The file is larger than the limit"), error["message"]
    assert not Document.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("content_type", ["application/json", "application/x-www-form-urlencoded", "multipart"])
def test_a_body_over_the_limit_is_a_413_json_error_in_every_format(api, small_limits, content_type):
    body = {"title": "Big", "text": "word " * 2000}
    if content_type == "application/json":
        response = api.post("/api/documents/", body, content_type=content_type)
    elif content_type == "multipart":
        response = api.post("/api/documents/", body)  # a large form field, no file
    else:
        from urllib.parse import urlencode

        response = api.post("/api/documents/", urlencode(body), content_type=content_type)
    assert response.status_code == 413, response.content
    assert error_of(response)["code"] == "too_large"
    assert not Document.objects.exists()


@pytest.mark.django_db
def test_too_many_form_fields_is_a_400_json_error(api, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 5
    from urllib.parse import urlencode

    form = urlencode({f"field{n}": "x" for n in range(20)})
    response = api.post("/api/sources/", form, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400
    assert error_of(response)["code"] == "bad_request"


# --- Throttling ---------------------------------------------------------------------------------


@pytest.fixture
def tiny_throttles(monkeypatch, settings):
    """Rates of 2/min (anonymous) and 3/min (per key). DRF's throttles read their rates into a
    class attribute at import, so the attribute is what must change; the history lives in the
    cache, emptied before and after."""
    from rest_framework.throttling import SimpleRateThrottle

    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"anon": "2/min", "key": "3/min"}}
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"anon": "2/min", "key": "3/min"})
    cache.clear()
    yield
    cache.clear()


def assert_throttled(response):
    assert response.status_code == 429
    assert error_of(response)["code"] == "throttled"
    assert 0 < int(response["Retry-After"]) <= 60


@pytest.mark.django_db
def test_a_key_over_its_rate_gets_429_with_retry_after_and_other_keys_do_not(client, api_key, tiny_throttles):
    first, second = api_key("read"), api_key("read")
    statuses = [client.get("/api/sources/", HTTP_AUTHORIZATION=f"Bearer {first}").status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    assert_throttled(client.get("/api/sources/", HTTP_AUTHORIZATION=f"Bearer {first}"))
    assert client.get("/api/sources/", HTTP_AUTHORIZATION=f"Bearer {second}").status_code == 200


@pytest.mark.django_db
def test_anonymous_callers_are_throttled_per_address(client, settings, tiny_throttles):
    settings.SEARCH_PUBLIC = True  # otherwise anonymous reads stop at 401, before the throttle
    assert [client.get("/api/sources/").status_code for _ in range(2)] == [200, 200]
    assert_throttled(client.get("/api/sources/"))
    assert client.get("/api/sources/", REMOTE_ADDR="192.0.2.7").status_code == 200
