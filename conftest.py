"""Fixtures shared by every app's tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent


def run_manage(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `manage.py` in a fresh process with the real settings module."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST"))}
    base["DJANGO_SETTINGS_MODULE"] = "ragsite.settings"
    base.update(env or {})
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=base,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def manage():
    return run_manage


@pytest.fixture
def staff_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("admin", "admin@example.com", "pw")
    client.force_login(user)
    return client


# A real OpenAI-compatible HTTP server on 127.0.0.1 (embeddings and, later, chat completions).
from documents.tests.openai_server import openai_server_fixture, openai_server_session_fixture  # noqa: E402, F401


@pytest.fixture
def fresh_store(settings):
    """A collection of its own for the test; the embedded store lives in the session's DATA_DIR."""
    import uuid

    from documents.vectorstore import get_vector_store

    settings.QDRANT_COLLECTION = f"test_{uuid.uuid4().hex[:12]}"
    return get_vector_store()


@pytest.fixture
def embed_spy(monkeypatch):
    """Counts the texts that reach the real embedder."""
    from documents.embeddings import get_embedder

    embedder = get_embedder()
    calls: list[str] = []
    original = embedder.embed_documents

    def counting(texts):
        calls.extend(texts)
        return original(texts)

    monkeypatch.setattr(embedder, "embed_documents", counting)
    return calls


@pytest.fixture
def run_commit_hooks(django_capture_on_commit_callbacks):
    """Run on_commit callbacks (signals -> tasks) inside the test transaction, as a commit would."""
    from contextlib import contextmanager

    @contextmanager
    def hooks():
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            yield callbacks

    return hooks


@pytest.fixture
def api_key(db):
    from accounts.auth import api_key_create

    def make(scope="write"):
        return api_key_create(name=f"test-{scope}", scope=scope)[1]

    return make


@pytest.fixture
def api(client, api_key):
    """A test client that sends a write-scoped API key."""
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {api_key('write')}"
    return client
