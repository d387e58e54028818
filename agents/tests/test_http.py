"""The /mcp endpoint's checks before the SDK: hosts, API keys and the REST API's throttles."""

from __future__ import annotations

import io
import json

import pytest
from django.core.cache import cache

from agents.http import McpRouter, McpWsgiApp, local_url_for_bind


def call(app, *, key: str | None = None, host: str = "127.0.0.1:8000", path: str = "/mcp"):
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "HTTP_HOST": host,
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.input": io.BytesIO(b"{}"),
        "wsgi.url_scheme": "http",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": "2",
    }
    if key is not None:
        environ["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    seen = {}

    def start_response(status, headers):
        seen["status"], seen["headers"] = status, dict(headers)

    refusal = app._admit(environ)
    if refusal is None:
        return 200, {}, None
    body = b"".join(refusal(start_response))
    return int(seen["status"].split()[0]), seen["headers"], json.loads(body)


@pytest.mark.django_db
def test_requests_without_a_valid_key_are_refused_before_the_sdk(api_key):
    from accounts.auth import api_key_revoke
    from accounts.models import ApiKey

    app = McpWsgiApp()
    status, headers, body = call(app)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert body["error"]["code"] == "not_authenticated" and "Bearer <key>" in body["error"]["message"]
    assert call(app, key="rs_not_a_key")[0] == 401
    revoked = api_key("read")
    api_key_revoke(key=ApiKey.objects.get(name="test-read"))
    assert call(app, key=revoked)[2]["error"]["message"] == "Invalid or revoked API key."
    assert call(app, key=api_key("write"))[0] == 200


@pytest.mark.django_db
def test_a_host_outside_allowed_hosts_is_refused(api_key):
    status, _, body = call(McpWsgiApp(), key=api_key("read"), host="evil.example")
    assert status == 400 and "evil.example" in body["error"]["message"]


@pytest.mark.django_db
def test_the_rest_apis_per_key_throttle_applies(api_key, monkeypatch, settings):
    from rest_framework.throttling import SimpleRateThrottle

    # DRF's throttles read their rates into a class attribute at import (see tests/test_api_security.py).
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"anon": "100/min", "key": "3/min", "bad_key": "100/min"})
    cache.clear()
    try:
        app, key, other = McpWsgiApp(), api_key("read"), api_key("write")
        assert [call(app, key=key)[0] for _ in range(3)] == [200, 200, 200]
        status, headers, body = call(app, key=key)
        assert status == 429 and body["error"]["code"] == "throttled"
        assert 0 < int(headers["Retry-After"]) <= 60
        assert call(app, key=other)[0] == 200  # per key, not per address
    finally:
        cache.clear()


def test_only_the_mcp_path_leaves_django():
    seen = []
    router = McpRouter(lambda environ, start_response: seen.append(environ["PATH_INFO"]) or [])
    router.mcp_app = lambda environ, start_response: seen.append("mcp") or []
    for path in ["/mcp", "/mcp/", "/api/search/", "/mcpx", "/"]:
        router({"PATH_INFO": path}, None)
    assert seen == ["mcp", "mcp", "/api/search/", "/mcpx", "/"]


@pytest.mark.parametrize(
    ("bind", "url"),
    [
        ("0.0.0.0:8000", "http://127.0.0.1:8000/mcp"),
        ("127.0.0.1:9001", "http://127.0.0.1:9001/mcp"),
        ("[::]:8000", "http://[::1]:8000/mcp"),
        ("unix:/run/ragsite.sock", None),
    ],
)
def test_the_recorded_address_is_reachable_from_this_machine(bind, url):
    assert local_url_for_bind(bind) == url
