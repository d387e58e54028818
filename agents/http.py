"""Streamable HTTP at /mcp, inside the WSGI app that gunicorn already serves.

The SDK's transport is ASGI; the web app is WSGI under gunicorn's threads. Rather than move the
whole app to an ASGI worker (Django would then run every synchronous view through one shared
thread unless each is rewritten), ``ragsite.wsgi`` sends the /mcp path here, and the SDK's app runs
behind a2wsgi's bridge on one event loop thread per process:

- the SDK in stateless, JSON-response mode: each POST is answered on its own, with no session
  kept in memory, so any gunicorn worker (Compose runs two) can serve any request;
- before the bridge, in the request's own thread: Django's ALLOWED_HOSTS check, the REST API's
  API-key authentication (401 with the API's error body) and its throttle classes and rates (429);
- the caller travels to the tools in the WSGI environ, then in a context variable.

In embedded mode the process also records its address in the data folder, so that
``manage.py mcp`` (stdio) forwards to it instead of opening the vector store this process owns.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import os
import threading
from pathlib import Path

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.handlers.wsgi import WSGIRequest
from django.db import close_old_connections
from mcp.server.transport_security import TransportSecuritySettings
from rest_framework.settings import api_settings
from rest_framework.views import APIView  # noqa: F401 - before ragsite.api, see below

from agents.principal import KeyRefused, current_principal, principal_from_request

# DRF's views module must load before ragsite.api: ragsite.api imports it, and its APIView class
# body imports the throttle classes from ragsite.api, which fails if ragsite.api is loading first
# (as it would be here, imported from ragsite.wsgi before any URLconf).
from ragsite.api import error_body

logger = logging.getLogger(__name__)

MCP_PATH = "/mcp"
PRINCIPAL_KEY = "ragsite.mcp.principal"
ADDRESS_FILE = "mcp-server.json"


def _json_response(start_response, status: str, body: dict, headers: list | None = None):
    payload = json.dumps(body).encode()
    start_response(
        status,
        [("Content-Type", "application/json"), ("Content-Length", str(len(payload))), *(headers or [])],
    )
    return [payload]


class McpWsgiApp:
    """The /mcp endpoint as a WSGI app: checks in this thread, then the SDK's ASGI app over a2wsgi."""

    def __init__(self) -> None:
        self._bridge = None
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        try:
            refusal = self._admit(environ)
        finally:
            # Outside Django's request cycle nothing else hands the connection back to the pool.
            close_old_connections()
        if refusal is not None:
            return refusal(start_response)
        return self.bridge()(environ, start_response)

    def _admit(self, environ):
        request = WSGIRequest(environ)
        try:
            request.get_host()
        except DisallowedHost as exc:
            host_message = str(exc)  # `exc` is unbound once the except block ends
            return lambda sr: _json_response(sr, "400 Bad Request", error_body("bad_request", host_message))
        try:
            principal = principal_from_request(request)
        except KeyRefused as exc:
            message = str(exc)
            return lambda sr: _json_response(
                sr,
                "401 Unauthorized",
                error_body("not_authenticated", message),
                [("WWW-Authenticate", 'Bearer realm="mcp"')],
            )
        # What DRF's throttles read: the key as request.auth, the user, and META for the client address.
        request.user, request.auth = principal.user, principal.key
        for throttle_class in api_settings.DEFAULT_THROTTLE_CLASSES:
            throttle = throttle_class()
            if not throttle.allow_request(request, None):
                wait = throttle.wait()
                retry = [("Retry-After", str(max(1, round(wait))))] if wait is not None else []
                message = "Request was throttled." + (f" Expected available in {round(wait)} seconds." if wait else "")
                return lambda sr: _json_response(sr, "429 Too Many Requests", error_body("throttled", message), retry)
        environ[PRINCIPAL_KEY] = principal
        return None

    def bridge(self):
        with self._lock:
            if self._bridge is None:
                self._bridge = _start_bridge()
            return self._bridge


def _start_bridge():
    """Build the SDK's app and run its session manager on an event loop thread of its own."""
    from a2wsgi import ASGIMiddleware

    from agents.server import build_server

    server = build_server()
    server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        stateless_http=True,
        json_response=True,
        # The same body limit as the REST API (INGEST_MAX_BYTES plus room for the fields).
        max_request_body_size=settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
        # Hosts are checked against ALLOWED_HOSTS above, with Django's own rules, and every
        # request needs an API key, which a page rebinding a name to this server does not have.
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    manager = server.session_manager

    async def app(scope, receive, send):
        principal = scope.get("wsgi_environ", {}).get(PRINCIPAL_KEY)
        if principal is None:  # only McpWsgiApp calls this, after admitting the request
            raise RuntimeError("MCP request without an admitted caller")
        token = current_principal.set(principal)
        try:
            await manager.handle_request(scope, receive, send)
        finally:
            current_principal.reset(token)

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="ragsite-mcp-loop", daemon=True).start()
    started = threading.Event()

    async def run_manager():
        async with manager.run():
            started.set()
            await asyncio.Event().wait()  # until the process exits (the thread is a daemon)

    future = asyncio.run_coroutine_threadsafe(run_manager(), loop)
    if not started.wait(timeout=30):
        future.cancel()
        raise RuntimeError("the MCP session manager did not start")
    return ASGIMiddleware(app, loop=loop)


class McpRouter:
    """WSGI: /mcp to the MCP endpoint, every other path to Django."""

    def __init__(self, django_app) -> None:
        self.django_app = django_app
        self.mcp_app = McpWsgiApp()

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO", "").rstrip("/") == MCP_PATH:
            return self.mcp_app(environ, start_response)
        return self.django_app(environ, start_response)


# --- the server's address, for stdio in embedded mode ------------------------------------------


def address_file() -> Path:
    return Path(settings.DATA_DIR) / ADDRESS_FILE


def local_url_for_bind(bind: str) -> str | None:
    """http://host:port/mcp reachable from this machine for a gunicorn bind, or None (unix socket)."""
    if not bind or bind.startswith(("unix:", "fd://")):
        return None
    host, _, port = bind.rpartition(":")
    if not port.isdigit():
        return None
    host = host.strip("[]")
    if host in ("", "0.0.0.0"):  # noqa: S104 - a wildcard bind; loopback reaches it
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}{MCP_PATH}"


def server_address_record() -> None:
    """Write this serving process's /mcp URL into the data folder; removed again at exit.

    Only under gunicorn (`make run`, `manage.py serve`, the image), whose bind is known here.
    """
    import sys

    if "gunicorn.arbiter" not in sys.modules:
        return
    bind = os.environ.get("GUNICORN_BIND") or f"0.0.0.0:{os.environ.get('PORT', '8000')}"
    url = local_url_for_bind(bind.split(",")[0].strip())
    if url is None:
        return
    path = address_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_text(json.dumps({"url": url, "pid": os.getpid()}))
        temporary.replace(path)
    except OSError as exc:
        logger.warning("could not record the MCP address in %s: %s", path, exc)
        return
    pid = os.getpid()

    def forget() -> None:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text()).get("pid") == pid:
                path.unlink()

    atexit.register(forget)
