"""WSGI entry point (gunicorn ragsite.wsgi)."""

import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragsite.settings")

application = get_wsgi_application()

if settings.EMBEDDED_WORKER:
    # Embedded mode: this process owns the local vector store, so it runs the tasks too.
    # (Do not combine with gunicorn --preload: threads do not survive the fork.)
    from ragsite.worker import start_embedded_worker

    start_embedded_worker()
