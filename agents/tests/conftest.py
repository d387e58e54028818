"""A real ragsite server for the MCP tests: gunicorn with the project's config, its own database and
data folder (embedded vector store), and `manage.py mcp` processes pointed at the same ones."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

ROOT = Path(__file__).resolve().parents[2]

LONG_DOCUMENT = "# Field guide to teas\n\n" + "\n\n".join(
    f"## Chapter {n}\n\n"
    + " ".join(f"Paragraph {n}.{i} describes leaf grade {n * 10 + i} and its brewing time." for i in range(12))
    for n in range(1, 31)
)
DOCUMENTS = [
    {
        "title": "Green tea",
        "text": "Green tea is steamed or pan-fired soon after picking, which stops oxidation.",
        "source": "teas",
    },
    {"title": "Black tea", "text": "Black tea leaves are rolled and fully oxidised before drying.", "source": "teas"},
    {
        "title": "Espresso",
        "text": "Espresso forces hot water through finely ground coffee under pressure.",
        "source": "coffee",
    },
    {"title": "Field guide to teas", "text": LONG_DOCUMENT, "source": "teas", "metadata": {"kind": "guide"}},
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _database(name: str) -> str:
    import psycopg
    from psycopg import sql

    url = os.environ.get("DATABASE_URL")
    if not url:
        pytest.skip("needs DATABASE_URL pointing at a PostgreSQL server")
    parts = urlsplit(url)
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return urlunsplit(parts._replace(path=f"/{name}"))


def _drop(url: str) -> None:
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(parts.path.lstrip("/"))))


class App:
    """One database and data folder; optionally a gunicorn server over them."""

    def __init__(self, tmp: Path, name: str) -> None:
        base = urlsplit(os.environ.get("DATABASE_URL", "")).path.lstrip("/") or "ragsite"
        self.database_url = _database(f"{base[:30]}_{name}_{uuid.uuid4().hex[:8]}")
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/mcp"
        self.data_dir = tmp / "data"
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(tmp),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "DJANGO_SETTINGS_MODULE": "ragsite.settings",
            "DJANGO_ENV": "development",
            "DATABASE_URL": self.database_url,
            "DATA_DIR": str(self.data_dir),
            "EMBEDDING_MODEL_DIR": str(ROOT / "var" / "models"),
            "QDRANT_URL": "",
            # ingestion embeds inline (after commit), so a search right after add_document sees it
            "TASKS_BACKEND": "immediate",
            "EMBEDDED_WORKER": "false",
            "LOG_LEVEL": "WARNING",
            "THROTTLE_KEY": "100000/min",
            "THROTTLE_ANON": "100000/min",
            "GUNICORN_BIND": f"127.0.0.1:{self.port}",
            "GUNICORN_THREADS": "4",
        }
        self.log = tmp / "server.log"
        self.proc: subprocess.Popen | None = None
        self.manage("migrate", "--noinput")
        self.write_key = self.manage("create_api_key", "tests-write", "--scope", "write").strip()
        self.read_key = self.manage("create_api_key", "tests-read").strip()

    def manage(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=300
        )
        if check and result.returncode != 0:
            raise AssertionError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout if check else result

    def start(self) -> None:
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "ragsite/gunicorn.conf.py", "ragsite.wsgi"],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=out,
            )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"gunicorn exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.base}/health", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.3)
        raise AssertionError(f"the server did not answer:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def rest(self, method: str, path: str, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.write_key}"}
        return httpx.request(method, f"{self.base}{path}", headers=headers, timeout=120, **kwargs)

    @asynccontextmanager
    async def http_client(self, key: str, mode: str = "auto"):
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=120) as http:
            async with Client(streamable_http_client(self.url, http_client=http), mode=mode) as client:
                yield client

    @asynccontextmanager
    async def stdio_client(self, key: str):
        params = StdioServerParameters(
            command=sys.executable, args=[str(ROOT / "manage.py"), "mcp", "--key", key], env=self.env, cwd=str(ROOT)
        )
        async with Client(params) as client:
            yield client


def run(coro):
    return asyncio.run(coro)


def payload(result) -> dict:
    """A tool result's JSON (the SDK puts it in the text content and the structured content)."""
    assert not result.is_error, result.content[0].text
    return json.loads(result.content[0].text)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A running server with the DOCUMENTS ingested through the REST API."""
    app = App(tmp_path_factory.mktemp("mcp-live"), "mcp")
    try:
        app.start()
        app.ids = {}
        for doc in DOCUMENTS:
            response = app.rest("POST", "/api/documents/", json=doc)
            assert response.status_code == 201, response.text
            app.ids[doc["title"]] = response.json()["id"]
        yield app
    finally:
        app.stop()
        _drop(app.database_url)


@pytest.fixture
def offline(tmp_path):
    """A database and data folder with no server running."""
    app = App(tmp_path, "mcpoff")
    try:
        yield app
    finally:
        _drop(app.database_url)


@pytest.fixture(params=["http", "stdio"])
def transport(request, live):
    """An MCP client factory over each transport, against the live server's data."""
    if request.param == "http":
        return live.http_client
    return live.stdio_client
