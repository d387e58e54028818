"""WSGI entry point (gunicorn ragsite.wsgi)."""

import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragsite.settings")

django_application = get_wsgi_application()

# /mcp (the MCP server's Streamable HTTP endpoint, an ASGI app behind a bridge) on the same host
# and port as the web app; every other path goes to Django. See agents.http.
from agents.http import McpRouter, server_address_record  # noqa: E402 - needs the app registry

application = McpRouter(django_application)
# Started now, not on the first /mcp request: a worker whose MCP server cannot start fails to boot,
# so the api service's health gating (Compose) covers /mcp too.
application.mcp_app.bridge()

if settings.EMBEDDED_WORKER:
    # Embedded mode: this process owns the local vector store, so it runs the tasks too.
    # (Do not combine with gunicorn --preload: threads do not survive the fork.)
    from ragsite.worker import start_embedded_worker

    start_embedded_worker()

if not settings.QDRANT_URL:
    # This process owns the local vector store: `manage.py mcp` (stdio) forwards its calls here.
    server_address_record()
