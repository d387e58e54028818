"""`manage.py mcp [--key KEY]`: the MCP server over stdio, for local agents (Claude Desktop, Claude Code, Cursor).

It acts with an API key (``--key`` or ``RAGSITE_API_KEY``), exactly as that key would over HTTP:
a read key sees and calls the read tools only.

With a Qdrant server (``QDRANT_URL``) every process may open the vector store, so the tools run
here. In embedded mode the serving process owns the store's lock; a running server records its
/mcp address in the data folder (``agents.http``), and while it answers, each call is forwarded to
it over Streamable HTTP with the SDK's client. With no server running the call runs here and the
store is closed again after it, so a server started later can take the lock; a document added
here is embedded right away, since no background worker runs without the server.
"""

from __future__ import annotations

import os

import anyio
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from agents.forward import forward_call_tool, forward_read_resource, running_server_url
from agents.principal import KeyRefused, current_principal, principal_from_key
from agents.server import RagsiteMCP, build_server


class StdioMCP(RagsiteMCP):
    """Forwards each call to the running server when there is one; otherwise runs it here."""

    key: str = ""

    async def call_tool(self, name, arguments, context=None):
        url = await anyio.to_thread.run_sync(running_server_url)
        if url is not None:
            return await forward_call_tool(url, self.key, name, arguments)
        try:
            return await super().call_tool(name, arguments, context)
        finally:
            await anyio.to_thread.run_sync(_after_local_call)

    async def read_resource(self, uri, context=None):
        url = await anyio.to_thread.run_sync(running_server_url)
        if url is not None:
            return await forward_read_resource(url, self.key, str(uri))
        try:
            return await super().read_resource(uri, context)
        finally:
            await anyio.to_thread.run_sync(_after_local_call)


def _after_local_call() -> None:
    from django.db import close_old_connections

    from agents.tools import embed_pending, vector_store_release

    try:
        if not settings.QDRANT_URL:
            # No worker runs without the server: embed what the call stored (pending chunks), then
            # let go of the store so that a server starting now can open it.
            embed_pending()
            vector_store_release()
    finally:
        close_old_connections()


class Command(BaseCommand):
    help = "Serve the MCP tools over stdio for a local agent, acting with an API key (--key or RAGSITE_API_KEY)."

    def add_arguments(self, parser):
        parser.add_argument("--key", help="API key to act with (default: the RAGSITE_API_KEY environment variable)")

    def handle(self, *args, key: str | None, **options):
        plain = (key or os.environ.get("RAGSITE_API_KEY", "")).strip()
        if not plain:
            raise CommandError(
                "manage.py mcp needs an API key: --key KEY or RAGSITE_API_KEY "
                "(create one with `manage.py create_api_key NAME [--scope write]`)."
            )
        try:
            principal = principal_from_key(plain)
        except KeyRefused as exc:
            raise CommandError(f"The API key was refused: {exc}") from exc
        finally:
            from django.db import close_old_connections

            close_old_connections()
        server = build_server(StdioMCP)
        server.key = plain
        current_principal.set(principal)  # the SDK's tasks and worker threads copy this context
        anyio.run(server.run_stdio_async)
