"""A real website for crawl tests: a threaded HTTP server on 127.0.0.1 serving a generated
multi-page site from a temporary folder, with conditional-request support and misbehaving
endpoints.

Layout written by :func:`generate_site` (``{other}`` is the same server reached as
``localhost``, which counts as a different host):

    /robots.txt              Disallow: /private/, Sitemap: /sitemap.xml
    /sitemap.xml             index.html, docs/*, orphan.html (linked from nowhere), private/hidden.html
    /index.html              -> docs/, blog/post1.html, private/secret.html, excluded/skip.html,
                                {other}/docs/a.html, mailto:, javascript:, a nofollow link, #top
    /docs/index.html         -> a.html, b.html, deep/d1.html, ../index.html?utm_source=x
    /docs/a.html, b.html     (b links to notes.txt and guide.md)
    /docs/deep/d1.html -> d2.html -> d3.html
    /blog/post1.html         -> /blog/post2.html
    /private/secret.html, /private/hidden.html  (disallowed by robots.txt)
    /excluded/skip.html
    /orphan.html             only in the sitemap
    /docs/notes.txt, /docs/guide.md, /image.gif (a type no parser reads)

Special endpoints (not files): /slow (sleeps ``hang_seconds`` before answering), /error500,
/loop-a <-> /loop-b, /endless/N -> /endless/N+1, /huge (declares its length), /huge-chunked
(no length), /gone (410), /redirect-to?to=URL, /html-no-type (HTML without Content-Type),
/count-links?n=N (a page with N links), /trickle?rate=R&size=N (an HTML body of N bytes sent
at R bytes a second; the request paths it is serving are in ``trickling``). Anything else
missing is a 404.
``server.overrides[path] = (status, headers, body)`` replaces any path for a test.
"""

from __future__ import annotations

import email.utils
import functools
import gzip
import hashlib
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
    ".pdf": "application/pdf",
    ".xml": "application/xml",
    ".gz": "application/gzip",
    ".png": "image/png",
    ".gif": "image/gif",
}


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    status: int = 0


def page(title: str, body: str, links: list[str] | None = None, extra_head: str = "") -> str:
    anchors = "\n".join(f'<li><a href="{href}">{href}</a></li>' for href in links or [])
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>{extra_head}</head>"
        f"<body><nav><a href='/index.html'>Home</a></nav><main><h1>{title}</h1><p>{body}</p>"
        f"<ul>{anchors}</ul></main><footer>Site footer</footer></body></html>"
    )


def generate_site(root: Path, *, port: int) -> None:
    other = f"http://localhost:{port}"
    files = {
        "robots.txt": f"User-agent: *\nDisallow: /private/\n\nSitemap: http://127.0.0.1:{port}/sitemap.xml\n",
        "index.html": page(
            "Home",
            "Welcome to the test site. It documents the frobnicator in several pages.",
            [
                "docs/",
                "blog/post1.html",
                "private/secret.html",
                "excluded/skip.html",
                f"{other}/docs/a.html",
                "mailto:someone@example.com",
                "javascript:void(0)",
                "#top",
            ],
        ).replace("</ul>", '<li><a rel="nofollow" href="/nofollowed.html">nf</a></li></ul>'),
        "docs/index.html": page(
            "Docs",
            "The documentation index for the frobnicator.",
            ["a.html", "b.html", "deep/d1.html", "../index.html?utm_source=x"],
        ),
        "docs/a.html": page("Page A", "Alpha page explains installation of the frobnicator.", ["b.html"]),
        "docs/b.html": page("Page B", "Beta page explains configuration.", ["a.html", "notes.txt", "guide.md"]),
        "docs/deep/d1.html": page("Deep 1", "First deep page.", ["d2.html"]),
        "docs/deep/d2.html": page("Deep 2", "Second deep page.", ["d3.html"]),
        "docs/deep/d3.html": page("Deep 3", "Third deep page.", []),
        "blog/post1.html": page("Post 1", "A blog post about releases.", ["/blog/post2.html"]),
        "blog/post2.html": page("Post 2", "Another blog post about releases.", []),
        "private/secret.html": page("Secret", "Robots say do not crawl this.", []),
        "private/hidden.html": page("Hidden", "Robots say do not crawl this either.", []),
        "excluded/skip.html": page("Skip", "Excluded by pattern in tests.", []),
        "orphan.html": page("Orphan", "Only the sitemap knows this page.", []),
        "nofollowed.html": page("Nofollowed", "Reached only through a nofollow link.", []),
        "docs/notes.txt": "Plain text notes about the frobnicator.\n",
        "docs/guide.md": "# Guide\n\nA markdown guide to the frobnicator.\n",
    }
    sitemap_pages = ["index.html", "docs/index.html", "docs/a.html", "orphan.html", "private/hidden.html"]
    files["sitemap.xml"] = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'
        + "".join(
            f"<url><loc>http://127.0.0.1:{port}/{p}</loc><lastmod>2024-01-01</lastmod></url>\n" for p in sitemap_pages
        )
        + "</urlset>\n"
    )
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (root / "image.gif").write_bytes(b"GIF89a" + b"\0" * 64)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request, client_address) -> None:
        # Clients that give up (timeouts, size caps) reset connections; that is the point.
        pass


@dataclass
class SiteServer:
    root: Path
    hang_seconds: float = 3.0
    # Added before every file response, to keep a crawl busy long enough to interrupt it.
    page_delay: float = 0.0
    huge_bytes: int = 3 * 1024 * 1024
    requests: list[Request] = field(default_factory=list)
    overrides: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    trickling: list[str] = field(default_factory=list)
    httpd: ThreadingHTTPServer | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def other_host_url(self) -> str:
        return f"http://localhost:{self.port}"

    def start(self) -> SiteServer:
        server = self

        class Handler(SiteHandler):
            site = server

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()

    def paths(self, method: str = "GET") -> list[str]:
        with self.lock:
            return [r.path for r in self.requests if r.method == method]

    def count(self, path: str) -> int:
        return self.paths().count(path)

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()


class SiteHandler(BaseHTTPRequestHandler):
    site: SiteServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _record(self) -> Request:
        request = Request(method=self.command, path=self.path, headers={k.lower(): v for k, v in self.headers.items()})
        with self.site.lock:
            self.site.requests.append(request)
        return request

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD" and body:
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        request = self._record()
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        if self.path in self.site.overrides or path in self.site.overrides:
            status, headers, body = self.site.overrides.get(self.path) or self.site.overrides[path]
            request.status = status
            return self._send(status, body, headers)
        if path == "/slow":
            time.sleep(self.site.hang_seconds)
            return self._send(200, b"<html><body>late</body></html>", {"Content-Type": "text/html"})
        if path == "/error500":
            return self._send(500, b"boom", {"Content-Type": "text/plain"})
        if path in ("/loop-a", "/loop-b"):
            return self._send(302, b"", {"Location": "/loop-b" if path == "/loop-a" else "/loop-a"})
        if path.startswith("/endless/"):
            n = int(path.rsplit("/", 1)[1] or 0)
            return self._send(302, b"", {"Location": f"/endless/{n + 1}"})
        if path == "/redirect-to":
            return self._send(302, b"", {"Location": parse_qs(parts.query)["to"][0]})
        if path == "/gone":
            return self._send(410, b"gone", {"Content-Type": "text/plain"})
        if path == "/html-no-type":
            body = b"<!doctype html><html><head><title>No type</title></head><body><p>Sniffed.</p></body></html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return None
        if path == "/count-links":
            n = int(parse_qs(parts.query).get("n", ["10"])[0])
            links = "".join(f'<a href="/generated/{i}.html">{i}</a>' for i in range(n))
            return self._send(200, f"<html><body>{links}</body></html>".encode(), {"Content-Type": "text/html"})
        if path == "/trickle":
            query = parse_qs(parts.query)
            return self._send_trickle(float(query.get("rate", ["9"])[0]), int(query.get("size", ["10000"])[0]))
        if path in ("/huge", "/huge-chunked"):
            return self._send_huge(chunked=path == "/huge-chunked")
        return self._send_file(path)

    def _send_huge(self, *, chunked: bool) -> None:
        block = b"<p>" + b"x" * 8186 + b"</p>\n"
        total = self.site.huge_bytes
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(total))
        self.end_headers()
        sent = 0
        try:
            while sent < total:
                data = block[: total - sent]
                if chunked:
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                else:
                    self.wfile.write(data)
                sent += len(data)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _send_trickle(self, rate: float, size: int) -> None:
        body = (b"<html><body><p>" + b"slow " * size)[:size]
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        with self.site.lock:
            self.site.trickling.append(self.path)
        try:
            for offset in range(size):
                self.wfile.write(body[offset : offset + 1])
                self.wfile.flush()
                time.sleep(1.0 / rate)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            with self.site.lock:
                self.site.trickling.remove(self.path)

    def _send_file(self, path: str) -> None:
        if self.site.page_delay and path != "/robots.txt":
            time.sleep(self.site.page_delay)
        root = self.site.root.resolve()
        target = (root / path.lstrip("/")).resolve()
        if not target.is_relative_to(root):
            return self._send(404, b"not found", {"Content-Type": "text/plain"})
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            return self._send(404, b"not found", {"Content-Type": "text/plain"})
        body = target.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        mtime = int(target.stat().st_mtime)
        last_modified = email.utils.formatdate(mtime, usegmt=True)
        headers = {
            "Content-Type": CONTENT_TYPES.get(target.suffix, "application/octet-stream"),
            "ETag": etag,
            "Last-Modified": last_modified,
        }
        if_none_match = self.headers.get("If-None-Match")
        if_modified_since = self.headers.get("If-Modified-Since")
        if if_none_match is not None:
            if if_none_match == etag:
                return self._send(304, b"", {"ETag": etag, "Last-Modified": last_modified, "Content-Length": "0"})
        elif if_modified_since:
            since = email.utils.parsedate_to_datetime(if_modified_since).timestamp()
            if mtime <= since:
                return self._send(304, b"", {"ETag": etag, "Last-Modified": last_modified, "Content-Length": "0"})
        return self._send(200, body, headers)


def start_site(root: Path, **options: object) -> SiteServer:
    server = SiteServer(root=root, **options).start()  # type: ignore[arg-type]
    generate_site(root, port=server.port)
    return server


@functools.cache
def layered_gzip(head: bytes, fill: int, layers: int) -> bytes:
    """``head`` followed by ``fill`` newlines, gzip-compressed ``layers`` times (a decompression
    bomb when ``fill`` is large: 128 MiB of newlines are about 300 bytes after three layers)."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b"\n" * (1 << 20)
    parts = [compressor.compress(head)] + [compressor.compress(block) for _ in range(fill >> 20)]
    body = b"".join(parts) + compressor.flush()
    for _ in range(layers - 1):
        body = gzip.compress(body, compresslevel=9)
    return body


def in_thread(action, *, join_timeout: float = 60):
    """Run ``action`` in a thread; return its result, or fail if it is still running at the timeout."""
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("result", action()), daemon=True)
    thread.start()
    thread.join(join_timeout)
    if thread.is_alive():
        pytest.fail(f"still running after {join_timeout:g} s")
    return outcome["result"]
