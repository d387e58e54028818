"""Crawl benchmark: a real documentation site (the CPython HTML docs) served on 127.0.0.1.

Run from the project root; the script sets up everything itself (a fresh PostgreSQL database
``ragsite_crawlbench`` on 127.0.0.1 as user postgres, migrated; a temporary DATA_DIR; the site
server) and takes ~10-15 minutes on 2 shared cores:

    apt-get install -y python3-doc        # 530 HTML pages under /usr/share/doc/python3/html
    .venv/bin/python bench/crawl_bench.py --pages 600

The site is served by a plain threaded ``http.server`` (HTTP/1.1 keep-alive, ETag and
Last-Modified with 304 answers, as nginx would) running in this process; every measured phase
runs in a child process of its own (``--phase``), so each phase's peak RSS is that of a crawling
process and nothing is shared between phases but the database:

1. ``crawl, embedding off``: ``crawl_job_run`` of the whole site with TASKS_BACKEND=database and
   no worker running: pages are fetched, parsed, chunked and stored in PostgreSQL (keyword
   search works at commit); chunks stay ``pending`` for the vector sync.
2. ``vector sync of the crawled chunks``: ``vectors_sync_pending()`` on the chunks of phase 1 —
   what the db_worker does after (or while) a crawl runs. Embedding the whole site takes far
   longer than the time budget on shared cores, so it runs for ``--sync-seconds`` and the full
   time is extrapolated from the measured chunks/s (the results say so).
3. ``re-crawl, unchanged``: a second job on the same source; every page answers 304. The
   chunks are compared before and after: none added, removed or sent back to ``pending``, so
   nothing is re-embedded.
4. ``crawl, embedding inline``: TASKS_BACKEND=immediate, into a new source, with the embedding
   cache emptied first: each page's chunks are embedded and upserted right after its ingest, in
   the crawling thread. Cancelled after ``--inline-seconds``; pages/s is measured on the pages
   done and the full-site time extrapolated (the results say so).

Settings: CRAWL_ALLOW_PRIVATE_ADDRESSES=true (the site is on 127.0.0.1), CRAWL_DEFAULT_DELAY=0
(with the default 0.5 s per-host delay a 530-page crawl takes at least 265 s whatever the code
does), CRAWL_CONCURRENCY=4. Sphinx's "Show Source" copies (``/_sources/*``) are excluded, as a
user crawling these docs would. The machine load (os.getloadavg) is recorded before and after
each phase: the cores are shared with other work, so absolute numbers are noisy.

Writes bench/results/crawl.json and bench/results/crawl.md.
"""

from __future__ import annotations

import argparse
import email.utils
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SITE_CANDIDATES = [Path("/usr/share/doc/python3/html"), Path("/usr/share/doc/python3.11/html")]
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/ragsite_crawlbench"
EXCLUDE = ["/_sources/*"]


# --- the site (parent process) ----------------------------------------------------------------------


class DocSiteHandler(SimpleHTTPRequestHandler):
    """Static files with validators: ETag ("mtime-size", like nginx) and Last-Modified.

    ``If-None-Match`` wins over ``If-Modified-Since`` (RFC 9110 13.2.2). Directories serve their
    index.html (no listings); everything else is SimpleHTTPRequestHandler's.
    """

    protocol_version = "HTTP/1.1"  # keep-alive, as any production web server
    stats: Counter
    stats_lock: threading.Lock

    def log_message(self, format: str, *args: object) -> None:
        pass

    def send_response(self, code: int, message: str | None = None) -> None:
        with self.stats_lock:
            self.stats[code] += 1
        super().send_response(code, message)

    def send_head(self):
        path = self.translate_path(self.path)
        if os.path.isdir(path):
            if not urlsplit(self.path).path.endswith("/"):
                return super().send_head()  # 301 to the slash form
            path = os.path.join(path, "index.html")
        if not os.path.isfile(path):
            self.send_error(404, "File not found")
            return None
        try:
            f = open(path, "rb")  # closed by the caller (copyfile), as in http.server
        except OSError:
            self.send_error(404, "File not found")
            return None
        stat = os.fstat(f.fileno())
        etag = f'"{int(stat.st_mtime):x}-{stat.st_size:x}"'
        last_modified = email.utils.formatdate(stat.st_mtime, usegmt=True)
        if self._not_modified(etag, stat.st_mtime):
            f.close()
            self.send_response(304)
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", last_modified)
            self.end_headers()
            return None
        ctype = self.guess_type(path)
        if ctype.startswith("text/"):
            ctype += "; charset=utf-8"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(stat.st_size))
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", last_modified)
        self.end_headers()
        return f

    def _not_modified(self, etag: str, mtime: float) -> bool:
        if_none_match = self.headers.get("If-None-Match")
        if if_none_match is not None:
            tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
            return "*" in tags or etag in tags
        since = self.headers.get("If-Modified-Since")
        if since:
            try:
                parsed = email.utils.parsedate_to_datetime(since)
            except (TypeError, ValueError):
                return False
            return int(mtime) <= parsed.timestamp()
        return False


class DocSiteServer:
    def __init__(self, root: Path) -> None:
        handler = type(
            "Handler",
            (DocSiteHandler,),
            {"stats": Counter(), "stats_lock": threading.Lock(), "directory_root": str(root)},
        )
        handler.__init__ = lambda self, *a, **kw: DocSiteHandler.__init__(self, *a, directory=str(root), **kw)
        self.handler = handler
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True

        def handle_error(request, client_address) -> None:
            # A client that stops reading (an unsupported content type, a size cap) resets the
            # connection mid-body: count it instead of printing a traceback.
            with handler.stats_lock:
                handler.stats["reset by client"] += 1

        self.httpd.handle_error = handle_error
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def take_stats(self) -> dict[str, int]:
        with self.handler.stats_lock:
            stats = {str(code): n for code, n in sorted(self.handler.stats.items(), key=lambda kv: str(kv[0]))}
            self.handler.stats.clear()
        return stats

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def find_site(explicit: str | None) -> tuple[Path, int, int]:
    candidates = [Path(explicit)] if explicit else SITE_CANDIDATES
    for root in candidates:
        if root.is_dir():
            pages = [p for p in root.rglob("*.html") if "_sources" not in p.parts]
            if pages:
                return root, len(pages), sum(p.stat().st_size for p in pages)
    raise SystemExit(
        "No documentation site found: install it with `apt-get install -y python3-doc` or pass --site DIR."
    )


# --- database (parent process) ----------------------------------------------------------------------


def recreate_database(url: str, env: dict[str, str]) -> None:
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not name.startswith("ragsite_crawlbench"):
        raise SystemExit(f"Refusing to drop {name!r}: the bench only recreates databases named ragsite_crawlbench*.")
    admin = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "migrate", "-v0", "--skip-checks"], env=env, check=True, cwd=ROOT
    )


# --- phases (child processes) -----------------------------------------------------------------------


class Timers:
    """Wall time inside wrapped functions, summed per name (thread-safe; nested calls count in both)."""

    def __init__(self) -> None:
        self.seconds: Counter = Counter()
        self.calls: Counter = Counter()
        self.lock = threading.Lock()
        self.names: list[str] = []

    def wrap(self, owner: object, attribute: str, name: str) -> None:
        original = getattr(owner, attribute)
        timers = self

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                with timers.lock:
                    timers.seconds[name] += elapsed
                    timers.calls[name] += 1

        setattr(owner, attribute, timed)
        self.names.append(name)

    def report(self) -> dict:
        # In the order the steps were wrapped, so nested steps sit under their parent.
        return {
            name: {"s": round(self.seconds[name], 2), "calls": self.calls[name]}
            for name in self.names
            if self.calls[name]
        }


def instrument(timers: Timers) -> None:
    """Time the steps of a crawl (for "what dominated the time"); behaviour is unchanged."""
    import crawl.fetching
    import crawl.frontier
    import crawl.runner
    import documents.services
    import vectors.sync

    timers.wrap(crawl.fetching.Fetcher, "fetch", "fetch (HTTP, on the fetch threads; robots.txt and sitemap too)")
    timers.wrap(crawl.runner, "parse_links", "link extraction (lxml)")
    timers.wrap(crawl.runner._JobRun, "_previous", "previous-crawl lookup")
    timers.wrap(crawl.frontier.Frontier, "next_pages", "frontier query")
    timers.wrap(crawl.runner._JobRun, "_finish_page", "page bookkeeping (CrawlPage, links, counters)")
    timers.wrap(documents.services, "document_ingest", "document_ingest (all)")
    timers.wrap(documents.services, "parse_document", "  parse_document (HTML -> text)")
    timers.wrap(documents.services, "chunk_token_budget", "  chunk_token_budget")
    timers.wrap(documents.services, "chunk_document", "  chunk_document (tokenize + split)")
    timers.wrap(documents.services, "_chunks_replace", "  chunk rows (diff + insert)")
    timers.wrap(vectors.sync, "vectors_sync_pending", "vectors_sync_pending (embed + upsert)")
    timers.wrap(vectors.sync, "embed_chunks", "  embed_chunks (model)")


def chunk_snapshot(source_name: str) -> dict[str, tuple[str, str]]:
    from documents.models import Chunk

    return {
        str(pk): (digest, status)
        for pk, digest, status in Chunk.objects.filter(document__source__name=source_name).values_list(
            "id", "content_hash", "index_status"
        )
    }


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def phase_crawl(args: argparse.Namespace) -> dict:
    from crawl.jobs import crawl_job_cancel, crawl_job_create
    from crawl.models import CrawlJob
    from crawl.runner import crawl_job_run
    from documents.models import Chunk, Document

    timers = Timers()
    instrument(timers)
    before = chunk_snapshot(args.source) if args.compare_chunks else {}
    job = crawl_job_create(
        start_url=args.url, source=args.source, max_pages=args.pages, max_depth=args.max_depth, exclude=EXCLUDE
    )
    cancel_timer = None
    if args.cancel_after:
        cancel_timer = threading.Timer(args.cancel_after, lambda: crawl_job_cancel(job=job))
        cancel_timer.daemon = True
    # Load what a long-running worker has loaded already (the tokenizer, and the embedding model,
    # which document_ingest asks for its input size), so the crawl is timed in steady state.
    from documents.tokenizer import get_tokenizer
    from vectors.embedders import get_embedder

    load_started = time.perf_counter()
    get_tokenizer()
    get_embedder()
    load_s = time.perf_counter() - load_started
    rss_before = peak_rss_mb()
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    if cancel_timer:
        cancel_timer.start()
    job = crawl_job_run(job.pk)
    wall = time.perf_counter() - started
    cpu = cpu_seconds() - cpu_before
    if cancel_timer:
        cancel_timer.cancel()
    # Pages with an outcome (fetched, or skipped by robots rules / noindex); not the ones a
    # cancel marked skipped without fetching them.
    done = job.pages.exclude(fetched_at=None).count()
    chunks = Chunk.objects.filter(document__source__name=args.source)
    result = {
        "job_status": job.status,
        "model_load_s": round(load_s, 2),
        "seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),
        "pages_done": done,
        "pages_per_s": round(done / wall, 2),
        "counters": {
            "discovered": job.discovered_count,
            "fetched": job.fetched_count,
            "ingested": job.ingested_count,
            "unchanged": job.unchanged_count,
            "failed": job.failed_count,
            "gone": job.gone_count,
            "skipped": job.skipped_count,
        },
        "documents": Document.objects.filter(source__name=args.source).count(),
        "chunks": chunks.count(),
        "chunks_pending": chunks.filter(index_status=Chunk.IndexStatus.PENDING).count(),
        "chunks_indexed": chunks.filter(index_status=Chunk.IndexStatus.INDEXED).count(),
        "text_chars": sum(
            len(t) for t in Document.objects.filter(source__name=args.source).values_list("text", flat=True)
        ),
        "peak_rss_mb_before_crawl": rss_before,  # Django + tokenizer + model loaded
        "peak_rss_mb": peak_rss_mb(),
        "timers": timers.report(),
        "failures": [
            f"{url}: {error.rstrip('.')}"
            for url, error in job.pages.filter(status="failed").values_list("url", "error")[:10]
        ],
        "gone": list(job.pages.filter(status="gone").values_list("url", flat=True)[:10]),
    }
    if job.status != CrawlJob.Status.SUCCEEDED and not args.cancel_after:
        result["error"] = job.error
    if args.compare_chunks:
        after = chunk_snapshot(args.source)
        result["chunk_changes"] = {
            "before": len(before),
            "after": len(after),
            "added": len(after.keys() - before.keys()),
            "removed": len(before.keys() - after.keys()),
            "content_changed": sum(1 for k in before.keys() & after.keys() if before[k][0] != after[k][0]),
            "sent_back_to_pending": sum(
                1 for k in before.keys() & after.keys() if before[k][1] != "pending" and after[k][1] == "pending"
            ),
            "pending_before": sum(1 for _, s in before.values() if s == "pending"),
            "pending_after": sum(1 for _, s in after.values() if s == "pending"),
        }
    return result


class _Budget(Exception):
    pass


def phase_sync(args: argparse.Namespace) -> dict:
    timers = Timers()
    instrument(timers)
    from vectors.embedders import get_embedder
    from vectors.sync import pending_chunks, vectors_sync_pending

    pending_before = pending_chunks().count()
    load_started = time.perf_counter()
    embedder = get_embedder()
    load_s = time.perf_counter() - load_started
    done = {"chunks": 0}
    started = time.perf_counter()
    deadline = started + args.sync_seconds

    def progress(n: int) -> None:
        # vectors_sync_pending has no budget of its own: stop it between batches (each batch is
        # committed as indexed before this is called, so what was done stays done).
        done["chunks"] += n
        if time.perf_counter() > deadline:
            raise _Budget

    cpu_before = cpu_seconds()
    stopped = False
    try:
        report = vectors_sync_pending(progress=progress)
    except _Budget:
        report, stopped = None, True
    wall = time.perf_counter() - started
    indexed = done["chunks"] if report is None else report.indexed
    return {
        "model_id": embedder.model_id,
        "model_load_s": round(load_s, 2),
        "pending_before": pending_before,
        "chunks_indexed": indexed,
        "stopped_by_budget": stopped,
        "seconds": round(wall, 2),
        "cpu_seconds": round(cpu_seconds() - cpu_before, 2),
        "chunks_per_s": round(indexed / wall, 2),
        "pending_after": pending_chunks().count(),
        "peak_rss_mb": peak_rss_mb(),
        "timers": timers.report(),
    }


def run_phase(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    result = phase_crawl(args) if args.phase == "crawl" else phase_sync(args)
    Path(args.out).write_text(json.dumps(result))


# --- orchestration (parent process) -----------------------------------------------------------------


def child(args: argparse.Namespace, env: dict[str, str], phase: str, extra: list[str], tasks_backend: str) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = fh.name
    command = [
        sys.executable,
        __file__,
        "--phase",
        phase,
        "--out",
        out,
        "--pages",
        str(args.pages),
        "--max-depth",
        str(args.max_depth),
        "--sync-seconds",
        str(args.sync_seconds),
        *extra,
    ]
    load_before = [round(x, 2) for x in os.getloadavg()]
    started = time.perf_counter()
    subprocess.run(command, env={**env, "TASKS_BACKEND": tasks_backend}, check=True, cwd=ROOT)
    result = json.loads(Path(out).read_text())
    os.unlink(out)
    result["process_seconds"] = round(time.perf_counter() - started, 2)  # includes Django + model start-up
    result["tasks_backend"] = tasks_backend
    result["loadavg_before"] = load_before
    result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=600, help="max_pages of each crawl job (at least 500)")
    parser.add_argument("--max-depth", type=int, default=20)
    parser.add_argument("--site", help="folder with the HTML site (default: the python3-doc package's)")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="dropped and recreated")
    parser.add_argument("--sync-seconds", type=float, default=180.0, help="time budget of the vector-sync phase")
    parser.add_argument("--inline-seconds", type=float, default=180.0, help="time budget of the inline-embedding crawl")
    parser.add_argument(
        "--runtime",
        default=os.environ.get("EMBEDDING_RUNTIME", "onnx-int8"),
        choices=["onnx-int8", "onnx-fp32", "torch"],
        help="EMBEDDING_RUNTIME of every phase (default: the production default)",
    )
    # child-process arguments
    parser.add_argument("--phase", choices=["crawl", "sync"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--cancel-after", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--compare-chunks", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--render", action="store_true", help="only rewrite crawl.md from crawl.json")
    args = parser.parse_args()
    if args.phase:
        run_phase(args)
        return
    if args.render:
        (RESULTS / "crawl.md").write_text(render(json.loads((RESULTS / "crawl.json").read_text())))
        return

    total_started = time.perf_counter()
    site, html_pages, html_bytes = find_site(args.site)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "ragsite.settings",
        "DATABASE_URL": args.database_url,
        "DATA_DIR": tempfile.mkdtemp(prefix="crawlbench-"),
        "CRAWL_ALLOW_PRIVATE_ADDRESSES": "true",
        "CRAWL_DEFAULT_DELAY": "0",
        "CRAWL_CONCURRENCY": "4",
        "EMBEDDED_WORKER": "false",
        "LOG_LEVEL": "WARNING",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "EMBEDDING_BACKEND": "local",
        "EMBEDDING_RUNTIME": args.runtime,
        # The ONNX export is shared (built once by `make setup`), not redone in each temporary DATA_DIR.
        "EMBEDDING_MODEL_DIR": os.environ.get("EMBEDDING_MODEL_DIR", str(ROOT / "var" / "models")),
    }
    env.pop("QDRANT_URL", None)  # the embedded store under DATA_DIR
    if args.runtime != "torch":
        subprocess.run([sys.executable, str(ROOT / "manage.py"), "embedder_export"], env=env, check=True, cwd=ROOT)
    # The inline phase needs a database of its own: with TASKS_BACKEND=immediate each page's
    # commit runs vectors_sync_pending(), which would embed every chunk phase 1 left pending, and
    # an empty embedding cache, so that nothing embedded in phase 2 comes back as a cache hit.
    env_inline = {
        **env,
        "DATABASE_URL": args.database_url + "_inline",
        "DATA_DIR": tempfile.mkdtemp(prefix="crawlbench-"),
    }
    print(f"site {site}: {html_pages} HTML pages, {html_bytes / 1e6:.1f} MB; DATA_DIR {env['DATA_DIR']}", flush=True)
    recreate_database(env["DATABASE_URL"], env)
    recreate_database(env_inline["DATABASE_URL"], env_inline)
    server = DocSiteServer(site)
    phases: dict[str, dict] = {}
    partial = Path(env["DATA_DIR"]) / "phases.json"

    def run(name: str, title: str, phase_env: dict, phase: str, extra: list[str], backend: str, show: tuple) -> None:
        print(title, flush=True)
        phases[name] = child(args, phase_env, phase, extra, backend)
        if phase == "crawl":
            phases[name]["http"] = server.take_stats()
        partial.write_text(json.dumps(phases, indent=1))
        print(json.dumps({k: phases[name][k] for k in show}), flush=True)

    try:
        base = ["--url", server.url]
        run(
            "crawl_embedding_off",
            "1/4 crawl, embedding off ...",
            env,
            "crawl",
            [*base, "--source", "docs"],
            "database",
            ("seconds", "pages_done", "chunks"),
        )
        run(
            "vector_sync",
            f"2/4 vector sync of the crawled chunks (budget {args.sync_seconds:g} s) ...",
            env,
            "sync",
            [],
            "database",
            ("seconds", "chunks_indexed"),
        )
        run(
            "recrawl_unchanged",
            "3/4 re-crawl, unchanged ...",
            env,
            "crawl",
            [*base, "--source", "docs", "--compare-chunks"],
            "database",
            ("seconds", "pages_done"),
        )
        run(
            "crawl_embedding_inline",
            f"4/4 crawl, embedding inline (budget {args.inline_seconds:g} s) ...",
            env_inline,
            "crawl",
            [*base, "--source", "docs", "--cancel-after", str(args.inline_seconds)],
            "immediate",
            ("seconds", "pages_done", "chunks"),
        )
    finally:
        server.stop()
        print(f"phase results so far: {partial}", flush=True)

    results = {
        "bench": "crawl",
        "site": {
            "path": str(site),
            "html_pages": html_pages,
            "html_mb": round(html_bytes / 1e6, 1),
            "exclude": EXCLUDE,
        },
        "settings": {
            "max_pages": args.pages,
            "max_depth": args.max_depth,
            "CRAWL_CONCURRENCY": 4,
            "CRAWL_DEFAULT_DELAY": 0,
            "CRAWL_ALLOW_PRIVATE_ADDRESSES": True,
            "EMBEDDING_RUNTIME": args.runtime,
            "sync_seconds": args.sync_seconds,
            "inline_seconds": args.inline_seconds,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        },
        "phases": phases,
        "derived": derive(phases),
        "total_seconds": round(time.perf_counter() - total_started, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "crawl.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "crawl.md").write_text(render(results))
    print((RESULTS / "crawl.md").read_text())


def derive(phases: dict) -> dict:
    off, sync, inline = phases["crawl_embedding_off"], phases["vector_sync"], phases["crawl_embedding_inline"]
    chunks = off["chunks"]
    sync_full_s = chunks / sync["chunks_per_s"] if sync["chunks_per_s"] else None
    inline_chunks_per_page = inline["chunks"] / inline["pages_done"] if inline["pages_done"] else None
    # Inline: time per page = crawl-only time per page + embedding of that page's chunks.
    inline_embed_s = inline["timers"].get("vectors_sync_pending (embed + upsert)", {}).get("s", 0.0)
    inline_chunk_rate = inline["chunks_indexed"] / inline_embed_s if inline_embed_s else None
    full_inline_s = off["seconds"] + chunks / inline_chunk_rate if inline_chunk_rate else None
    return {
        "chunks_per_page": round(chunks / off["pages_done"], 1),
        "sync_full_site_s_extrapolated": round(sync_full_s, 0) if sync_full_s else None,
        "crawl_then_sync_pages_per_s_extrapolated": round(off["pages_done"] / (off["seconds"] + sync_full_s), 3)
        if sync_full_s
        else None,
        "inline_chunks_per_page_subset": round(inline_chunks_per_page, 1) if inline_chunks_per_page else None,
        "inline_embed_chunks_per_s": round(inline_chunk_rate, 2) if inline_chunk_rate else None,
        "inline_full_site_s_extrapolated": round(full_inline_s, 0) if full_inline_s else None,
        "inline_pages_per_s_extrapolated": round(off["pages_done"] / full_inline_s, 3) if full_inline_s else None,
        "sync_chunks_per_cpu_s": round(sync["chunks_indexed"] / sync["cpu_seconds"], 1)
        if sync["cpu_seconds"]
        else None,
        "crawl_pages_per_cpu_s": round(off["pages_done"] / off["cpu_seconds"], 1) if off["cpu_seconds"] else None,
    }


def render(r: dict) -> str:
    p, d, s = r["phases"], r["derived"], r["site"]
    off, sync, re, inline = (
        p["crawl_embedding_off"],
        p["vector_sync"],
        p["recrawl_unchanged"],
        p["crawl_embedding_inline"],
    )
    changes = re["chunk_changes"]

    def load(ph: dict) -> str:
        return f"{ph['loadavg_before'][0]:.1f} / {ph['loadavg_after'][0]:.1f}"

    def cpu(ph: dict) -> str:
        return f"{ph['cpu_seconds']:.0f}"

    def t(ph: dict, prefix: str) -> dict:
        return next((v for k, v in ph["timers"].items() if k.strip().startswith(prefix)), {"s": 0.0, "calls": 0})

    def crawler_s(ph: dict) -> float:
        names = ("link extraction", "previous-crawl lookup", "frontier query", "page bookkeeping")
        return sum(t(ph, name)["s"] for name in names)

    def steps(ph: dict) -> list[str]:
        rows = ["| step | seconds | calls |", "|---|---|---|"]
        return rows + [
            f"| {name.replace('  ', '&nbsp;&nbsp;')} | {v['s']} | {v['calls']} |" for name, v in ph["timers"].items()
        ]

    lines = [
        "# Crawl throughput (CPython docs from python3-doc, served on 127.0.0.1)",
        "",
        f"Site: `{s['path']}` ({s['html_pages']} HTML pages, {s['html_mb']} MB; `/_sources/*` excluded) served by a plain "
        "threaded `http.server` with HTTP/1.1 keep-alive, ETag and Last-Modified (304 answers), in the bench's own "
        f"process. Every phase runs in a fresh process. `max_pages={r['settings']['max_pages']}`, "
        f"`max_depth={r['settings']['max_depth']}`, CRAWL_CONCURRENCY=4, **CRAWL_DEFAULT_DELAY=0** (with the default "
        "0.5 s per-host delay a one-host crawl cannot exceed 2 pages/s whatever the code does), "
        f"CRAWL_ALLOW_PRIVATE_ADDRESSES=true. Embedder `{sync['model_id']}` (EMBEDDING_RUNTIME="
        f"{r['settings']['EMBEDDING_RUNTIME']}, the default), CPU, default threads, batches of 32. "
        f"Timings start after Django, the tokenizer and the model are loaded ({off['model_load_s']:.0f} s in phase 1), "
        f"as in a running worker. Total {r['total_seconds']:.0f} s. Script: `bench/crawl_bench.py --pages 600`.",
        "",
        f"**Machine load:** {r['machine']['cpus']} cores shared with other agents; the 1-minute load average stayed "
        f"around {sum(ph['loadavg_before'][0] for ph in p.values()) / len(p):.0f} (column *load*), and the phases got "
        f"{min(ph['cpu_seconds'] / ph['seconds'] for ph in p.values()):.2f}-"
        f"{max(ph['cpu_seconds'] / ph['seconds'] for ph in p.values()):.2f} CPU-seconds per second (*CPU s* / *seconds*). "
        "Absolute rates are therefore several times lower than on an idle machine; the ratios between phases are the "
        "figures to use.",
        "",
        "| phase | what runs | pages | seconds | pages/s | CPU s | chunks | peak RSS MB | load before / after |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| 1. crawl, embedding off (measured) | fetch, extract, chunk, store in PostgreSQL (keyword-searchable at commit); "
        f"chunks stay pending | {off['pages_done']} | {off['seconds']:.0f} | **{off['pages_per_s']}** | {cpu(off)} "
        f"| {off['chunks']} | {off['peak_rss_mb']:.0f} | {load(off)} |",
        f"| 2. vector sync (measured subset) | `vectors_sync_pending()` on phase 1's chunks, stopped after "
        f"{r['settings']['sync_seconds']:g} s (whole 256-chunk batches) | - | {sync['seconds']:.0f} | - | {cpu(sync)} "
        f"| {sync['chunks_indexed']} embedded: **{sync['chunks_per_s']} chunks/s** | {sync['peak_rss_mb']:.0f} | {load(sync)} |",
        f"| 1 + 2, whole site (extrapolated) | crawl, then embed all {off['chunks']} chunks at phase 2's rate "
        f"| {off['pages_done']} | {off['seconds']:.0f} + {d['sync_full_site_s_extrapolated']:.0f} "
        f"| **{d['crawl_then_sync_pages_per_s_extrapolated']}** | - | {off['chunks']} | - | - |",
        f"| 3. crawl, embedding inline (measured subset) | TASKS_BACKEND=immediate, own database, empty embedding "
        f"cache: each page's chunks embedded and upserted right after its ingest; cancelled after "
        f"{r['settings']['inline_seconds']:g} s | {inline['pages_done']} | {inline['seconds']:.0f} | {inline['pages_per_s']} "
        f"| {cpu(inline)} | {inline['chunks']} ({inline['chunks_indexed']} indexed) | {inline['peak_rss_mb']:.0f} | {load(inline)} |",
        f"| 3, whole site (extrapolated) | phase 1's time + all {off['chunks']} chunks at phase 3's embedding rate "
        f"({d['inline_embed_chunks_per_s']} chunks/s) | {off['pages_done']} | {d['inline_full_site_s_extrapolated']:.0f} "
        f"| **{d['inline_pages_per_s_extrapolated']}** | - | {off['chunks']} | - | - |",
        f"| 4. re-crawl, unchanged (measured) | a second job on phase 1's source: conditional requests, all 304 "
        f"| {re['pages_done']} | {re['seconds']:.1f} | **{re['pages_per_s']}** | {cpu(re)} | {changes['added']} added, "
        f"{changes['sent_back_to_pending']} re-queued | {re['peak_rss_mb']:.0f} | {load(re)} |",
        "",
        "Phases ran in the order 1, 2, 4, 3 (3 uses its own database, so it is listed next to the other embedding "
        "figures).",
        "",
        f"- **Re-crawl, 0 re-embeddings:** HTTP answers {re['http']}; job counters {re['counters']}. Chunks of the "
        f"source before {changes['before']}, after {changes['after']}: {changes['added']} added, {changes['removed']} "
        f"removed, {changes['content_changed']} with changed content, {changes['sent_back_to_pending']} indexed chunks "
        f"sent back to pending (pending before / after: {changes['pending_before']} / {changes['pending_after']}).",
        f"- **First crawl:** HTTP answers {off['http']}; counters {off['counters']}; {off['documents']} documents, "
        f"{off['text_chars'] / 1e6:.1f} M characters of extracted text, {d['chunks_per_page']} chunks per page. "
        f"Failed: {'; '.join(off['failures']) or 'none'}. Gone (404): {', '.join(off['gone']) or 'none'} (the other "
        "404s are robots.txt and sitemap.xml, which the site does not have).",
        "- **Which embedding figure is which.** *1 + 2* is the production shape: the crawl job and the vector sync are "
        "both tasks of the database backend; one `db_worker` runs them one after the other (as measured here), two "
        "overlap them and the total is then bounded by the sync alone. *3* is one process embedding every page's "
        "chunks before it processes the next page (TASKS_BACKEND=immediate, as the tests run). Both extrapolations "
        "take the measured chunks/s for the rest of the site; chunks are all at most ~250 tokens, so the rate per "
        f"chunk carries over, while pages do not (the first pages of phase 3 have {d['inline_chunks_per_page_subset']} "
        f"chunks per page, the site {d['chunks_per_page']}), hence the extrapolation by chunks. Per CPU-second the "
        f"embedder did {d['sync_chunks_per_cpu_s']} chunks and the embedding-off crawl {d['crawl_pages_per_cpu_s']} "
        "pages: roughly what one idle core would do.",
        f"- **Peak RSS** is `getrusage(RUSAGE_SELF).ru_maxrss` of the phase's process. {off['peak_rss_mb_before_crawl']:.0f} MB "
        "of phase 1's is there before the crawl starts: Django, the tokenizer and the embedding model, which is "
        "loaded even with embedding off because `document_ingest` asks `get_embedder()` for the model's input size. "
        "Most of the rest comes from extracting the largest pages (contents.html, 2.6 MB, and genindex-all.html, "
        "1.7 MB, the whole table of contents and index on one page each). The processes that embed peak "
        f"{min(sync['peak_rss_mb'], inline['peak_rss_mb']) - off['peak_rss_mb']:.0f}-"
        f"{max(sync['peak_rss_mb'], inline['peak_rss_mb']) - off['peak_rss_mb']:.0f} MB higher: ONNX Runtime's CPU "
        "memory arena keeps the peak of an embedding batch (see *API under load* in bench/README.md).",
        "",
        "**What dominates.**",
        "",
        f"- Embedding: of the extrapolated whole-site crawl + sync, the sync is "
        f"{d['sync_full_site_s_extrapolated'] / (off['seconds'] + d['sync_full_site_s_extrapolated']):.0%}.",
        f"- Without embedding, text extraction: `parse_document` (trafilatura on HTML) took "
        f"{t(off, 'parse_document')['s']:.0f} s of phase 1's {off['seconds']:.0f} s "
        f"({t(off, 'parse_document')['s'] / off['seconds']:.0%}); chunking "
        f"{t(off, 'chunk_document')['s']:.0f} s, storing chunks {t(off, 'chunk rows')['s']:.0f} s. The crawler's own "
        f"per-page work (link extraction, previous-crawl lookup, frontier query, page bookkeeping) took "
        f"{crawler_s(off):.0f} s ({crawler_s(off) / off['seconds']:.0%}). The job thread waited for fetches "
        f"{max(0.0, off['seconds'] - crawler_s(off) - t(off, 'document_ingest')['s']):.1f} s in all: with 4 fetch "
        "threads the next pages are on hand long before the job thread is done with the current one.",
        f"- Re-crawl: no bodies, so the crawler's per-page database round trips are most of it "
        f"({crawler_s(re):.1f} s of {re['seconds']:.1f} s, about {1000 * crawler_s(re) / re['pages_done']:.0f} ms a page); "
        "with any politeness delay (0.5 s by default) the delay is the bound.",
        "",
        "Where the time of phase 1 went (wall seconds inside each step, nested steps indented; everything but "
        "the fetches runs on the job's thread, one page after another; the fetches run on 4 threads and overlap "
        "with it):",
        "",
        *steps(off),
        "",
        "Phase 3 (`vectors_sync_pending` runs inside `document_ingest` here: the immediate task backend runs the "
        "vector sync when the ingest's transaction commits):",
        "",
        *steps(inline),
        "",
        "Phase 4:",
        "",
        *steps(re),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
