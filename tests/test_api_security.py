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
    env = production_env(
        tmp_path,
        CORS_ORIGINS="https://app.example.com",
        THROTTLE_ANON="30/min",
        THROTTLE_KEY="600/min",
        THROTTLE_BAD_KEY="5/min",
        SECURE_SSL_REDIRECT="true",
    )
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
    assert probe["throttle_rates"] == {"anon": "30/min", "key": "600/min", "bad_key": "5/min"}


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
    """Rates of 2/min (anonymous), 3/min (per key) and 3/min (invalid keys per address). DRF's
    throttles read their rates into a class attribute at import, so the attribute is what must
    change; the history lives in the cache, emptied before and after."""
    from rest_framework.throttling import SimpleRateThrottle

    rates = {"anon": "2/min", "key": "3/min", "bad_key": "3/min"}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", rates)
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


@pytest.mark.django_db
def test_a_spoofed_x_forwarded_for_does_not_escape_the_anonymous_throttle(client, settings, tiny_throttles):
    settings.SEARCH_PUBLIC = True
    # no proxy is trusted by default: the header is the client's own invention
    statuses = [client.get("/api/sources/", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}").status_code for n in range(3)]
    assert statuses[:2] == [200, 200]
    assert statuses[2] == 429


@pytest.mark.django_db
def test_behind_a_trusted_proxy_the_anonymous_throttle_counts_the_forwarded_client(client, settings, tiny_throttles):
    settings.SEARCH_PUBLIC = True
    settings.TRUSTED_PROXY_COUNT = 1
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    proxy = {"REMOTE_ADDR": "10.0.0.2"}
    # what the client wrote itself (left of the proxy's entry) does not make it someone else
    first = [
        client.get("/api/sources/", HTTP_X_FORWARDED_FOR=f"203.0.113.{n}, 192.0.2.10", **proxy).status_code
        for n in range(3)
    ]
    assert first == [200, 200, 429]
    other = client.get("/api/sources/", HTTP_X_FORWARDED_FOR="192.0.2.11", **proxy)
    assert other.status_code == 200


# --- Guessing API keys --------------------------------------------------------------------------


def bearer(key: str, **extra) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {key}", **extra}


@pytest.mark.django_db
def test_guessing_keys_from_one_address_gets_429_even_for_a_valid_key(client, api_key, tiny_throttles):
    valid = api_key("read")
    guesses = [client.get("/api/sources/", **bearer(f"rs_guess{n}")).status_code for n in range(3)]
    assert guesses == [401, 401, 401]
    assert_throttled(client.get("/api/sources/", **bearer("rs_guess3")))
    # a right guess now is indistinguishable from a wrong one: nothing to learn by guessing on
    response = client.get("/api/sources/", **bearer(valid))
    assert_throttled(response)
    assert "invalid API key" in error_of(response)["message"]


@pytest.mark.django_db
def test_valid_keys_are_never_counted_and_other_addresses_are_not_slowed(client, api_key, tiny_throttles):
    valid, other = api_key("read"), api_key("read")
    # as many valid requests as the bad-key rate allows failures: none of them counts as one
    assert [client.get("/api/sources/", **bearer(valid)).status_code for _ in range(3)] == [200, 200, 200]
    assert client.get("/api/sources/", **bearer("rs_wrong")).status_code == 401
    for n in range(3):
        client.get("/api/sources/", **bearer(f"rs_guess{n}", REMOTE_ADDR="192.0.2.66"))
    assert client.get("/api/sources/", **bearer(other, REMOTE_ADDR="192.0.2.66")).status_code == 429
    assert client.get("/api/sources/", **bearer(other, REMOTE_ADDR="192.0.2.67")).status_code == 200


@pytest.mark.django_db
def test_revoked_and_malformed_keys_count_as_guesses(client, tiny_throttles):
    from accounts.auth import api_key_create, api_key_revoke

    row, revoked = api_key_create(name="old", scope="read")
    api_key_revoke(key=row)
    assert client.get("/api/sources/", **bearer(revoked)).status_code == 401
    assert client.get("/api/sources/", HTTP_AUTHORIZATION="Bearer two parts").status_code == 401
    assert client.get("/api/sources/", **bearer("rs_nope")).status_code == 401
    assert_throttled(client.get("/api/sources/", **bearer("rs_nope2")))


@pytest.mark.django_db
def test_a_spoofed_x_forwarded_for_does_not_reset_key_guessing(client, tiny_throttles):
    for n in range(3):
        client.get("/api/sources/", **bearer(f"rs_guess{n}", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}"))
    assert_throttled(client.get("/api/sources/", **bearer("rs_guess9", HTTP_X_FORWARDED_FOR="198.51.100.99")))
