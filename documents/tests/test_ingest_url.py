"""`manage.py ingest URL` against real local HTTP servers: the crawler's guards apply to it too."""

from __future__ import annotations

import gzip
import threading
import time
import tracemalloc
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from documents.models import Document
from ragsite import outbound

pytestmark = pytest.mark.django_db

PAGE = b"<html><head><title>Internal</title></head><body><p>Secret intranet notes about the payroll.</p></body></html>"


class Server:
    """A threaded HTTP server on ``host``; ``routes[path] = (status, headers, body)``, or a callable
    ``(handler) -> None`` that writes the response itself."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.routes: dict = {}
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append(self.path)
                route = server.routes.get(self.path)
                if callable(route):
                    return route(self)
                status, headers, body = route or (404, {}, b"not found")
                self.send_response(status)
                for key, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(key, value)
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                return None

        class Quiet(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

            def handle_error(self, request, client_address) -> None:
                pass  # clients that give up reset connections; that is the point

        self.httpd = Quiet((host, 0), Handler)
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def internal():
    """A service on the loopback address, which no download may reach unless allowed."""
    server = Server("127.0.0.1")
    server.routes["/payroll.html"] = (200, {"Content-Type": "text/html"}, PAGE)
    yield server
    server.stop()


@pytest.fixture
def public(monkeypatch):
    """A server standing in for a public website: on 127.0.0.2, which this test's address
    policy counts as public (every other address keeps its real classification)."""
    real = outbound.address_refusal
    monkeypatch.setattr(outbound, "address_refusal", lambda ip: None if str(ip) == "127.0.0.2" else real(ip))
    server = Server("127.0.0.2")
    yield server
    server.stop()


def ingest(*targets: str) -> tuple[str, str | None]:
    """The command's stderr, and its error (None when it succeeded)."""
    err = StringIO()
    try:
        call_command("ingest", *targets, "--no-embed", "--source", "web", stdout=StringIO(), stderr=err)
    except CommandError as exc:
        return err.getvalue(), str(exc)
    return err.getvalue(), None


def test_a_redirect_to_a_private_address_is_refused_and_never_requested(settings, public, internal):
    settings.CRAWL_ALLOW_PRIVATE_ADDRESSES = False
    public.routes["/docs"] = (302, {"Location": f"{internal.url}/payroll.html"}, b"")
    err, error = ingest(f"{public.url}/docs")
    assert error == "every input failed"
    assert "loopback address 127.0.0.1" in err and "CRAWL_ALLOW_PRIVATE_ADDRESSES" in err
    assert public.requests == ["/docs"]
    assert internal.requests == []
    assert not Document.objects.exists()


def test_a_public_page_still_ingests_with_the_guard_on(settings, public):
    settings.CRAWL_ALLOW_PRIVATE_ADDRESSES = False
    public.routes["/about"] = (302, {"Location": "/about.html"}, b"")
    public.routes["/about.html"] = (
        200,
        {"Content-Type": "text/html; charset=utf-8"},
        PAGE.replace(b"Secret intranet", b"Public"),
    )
    err, error = ingest(f"{public.url}/about")
    assert error is None, err
    assert Document.objects.get().url == f"{public.url}/about.html"


def test_a_private_url_is_refused_before_any_request(settings, internal):
    settings.CRAWL_ALLOW_PRIVATE_ADDRESSES = False
    err, error = ingest(f"{internal.url}/payroll.html")
    assert error == "every input failed"
    assert "loopback address 127.0.0.1" in err
    assert internal.requests == []


def test_private_addresses_are_fetched_when_explicitly_allowed(settings, internal):
    settings.CRAWL_ALLOW_PRIVATE_ADDRESSES = True
    internal.routes["/go"] = (302, {"Location": "/payroll.html"}, b"")
    err, error = ingest(f"{internal.url}/go")
    assert error is None, err
    assert Document.objects.get().title == "Internal"


def test_a_layered_compression_bomb_fails_cleanly_at_the_size_limit(settings, internal):
    settings.INGEST_MAX_BYTES = 1024 * 1024
    compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    inner = compressor.compress(b"<html><body>") + b"".join(compressor.compress(b" " * (1 << 20)) for _ in range(64))
    bomb = gzip.compress(inner + compressor.flush())
    internal.routes["/bomb.html"] = (200, {"Content-Type": "text/html", "Content-Encoding": "gzip, gzip"}, bomb)
    tracemalloc.start()
    try:
        err, error = ingest(f"{internal.url}/bomb.html")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Reading stops at the 1 MiB limit; inflating the inner layer whole would take 64 MiB.
    assert peak < 16 * 1024 * 1024, f"{peak} bytes allocated for a {len(bomb)}-byte response"
    assert error == "every input failed"
    assert "over the limit of 1048576 bytes once decoded" in err
    assert not Document.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_trickled_download_fails_at_the_total_deadline(settings, internal):
    settings.CRAWL_TIMEOUT = 0.5  # 2 s in all; each byte comes well within the 0.5 s read timeout

    def trickle(handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Content-Length", "10000")
        handler.end_headers()
        try:
            for _ in range(10000):
                handler.wfile.write(b"x")
                handler.wfile.flush()
                time.sleep(1 / 9)
        except (BrokenPipeError, ConnectionResetError):
            pass

    internal.routes["/slow.txt"] = trickle
    result = {}

    def run() -> None:
        try:
            result["r"] = ingest(f"{internal.url}/slow.txt")
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the download outlasted its deadline"
    err, error = result["r"]
    assert error == "every input failed"
    assert "timed out" in err
