"""stdio in embedded mode: find the running server and hand a call to it with the SDK's client."""

from __future__ import annotations

import json
import os
import socket
from urllib.parse import urlsplit

import httpx2
from django.conf import settings
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.lowlevel.helper_types import ReadResourceContents

from agents.http import address_file

CONNECT_TIMEOUT = 1.0
# A forwarded call may embed a large document or wait on a language model: the same bound as
# gunicorn's request timeout would be ideal; 300 s is the SDK client's own read timeout.
READ_TIMEOUT = 300.0


def running_server_url() -> str | None:
    """The /mcp URL of the process that owns the embedded store, if it is up; None otherwise."""
    if settings.QDRANT_URL:
        return None  # every process may open a Qdrant server: run the call here
    try:
        record = json.loads(address_file().read_text())
        url, pid = str(record["url"]), int(record["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # left behind by a server that was killed
    except PermissionError:
        pass  # alive, under another user
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or 80), timeout=CONNECT_TIMEOUT):
            return url
    except OSError:
        return None


def _http_client(key: str) -> httpx2.AsyncClient:
    host = next((h.lstrip(".") for h in settings.ALLOWED_HOSTS if h and h != "*"), None)
    headers = {"Authorization": f"Bearer {key}"}
    if host and host not in ("localhost", "127.0.0.1", "[::1]"):
        headers["Host"] = host  # the server checks ALLOWED_HOSTS on /mcp too
    return httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=READ_TIMEOUT))


async def forward_call_tool(url: str, key: str, name: str, arguments: dict):
    async with _http_client(key) as http, Client(streamable_http_client(url, http_client=http)) as client:
        return await client.call_tool(name, arguments)


async def forward_read_resource(url: str, key: str, uri: str):
    async with _http_client(key) as http, Client(streamable_http_client(url, http_client=http)) as client:
        result = await client.read_resource(uri)
    return [
        # The server's resources are all text (JSON or a document's text).
        ReadResourceContents(content=getattr(item, "text", ""), mime_type=item.mime_type)
        for item in result.contents
    ]
