"""Soak: concurrent writers on a few dozen documents for minutes, a worker killed every minute,
then a full consistency check of PostgreSQL against the vector store.

    DATABASE_URL=postgres://... .venv/bin/python bench/soak_bench.py              # 10 min, 8 clients
    DATABASE_URL=postgres://... .venv/bin/python bench/soak_bench.py --duration 120 --results-name soak-short

What runs, and why this way:
- The server is started as ``make run`` starts it: ``manage.py serve`` (which replaces itself with
  gunicorn: one worker process, 8 gthread threads) on the embedded defaults: the embedded vector
  store in a temporary DATA_DIR, owned by that one worker process, which also runs the task worker
  (EMBEDDED_WORKER) — the configuration a single-machine install has. PostgreSQL is the machine's
  server named by DATABASE_URL, on a database of its own (``<name>_soak``, dropped afterwards),
  instead of the embedded PostgreSQL, so this process can read it while the server runs.
- Every --kill-every seconds the gunicorn worker process is killed with SIGKILL; the arbiter
  starts a new one, which opens the store again and starts the task worker (its start-up hook
  queues a sync if chunks are pending). In embedded mode that process is both the web server and
  the worker: there is no separate db_worker to kill.
- 8 client threads (closed loop, each its own HTTP connection) mix: create (POST a url not known
  to exist), re-ingest (POST a known url with another text or title), PATCH (title or metadata),
  DELETE, and search (keyword, semantic, hybrid). 24 urls in one source, so writers collide on
  the same documents all the time. Texts and titles come from small pools, so the embedder works
  mostly from its cache and the run measures consistency, not embedding speed.
- Afterwards: wait (up to --settle seconds) until no chunk is pending and no task is queued, stop
  the server (SIGTERM), open the same database and store in this process, and check:
  acknowledged documents lost (a url whose last acknowledged ingest was followed by no DELETE
  of its documents, yet no document has that url), deleted documents back (a DELETE answered 204
  for an id that exists), documents whose chunks are not what their text chunks into or whose
  chunk contexts and hashes do not follow their title, chunks not indexed, indexed chunks without
  a point, points without a chunk, and 5xx answers. Transport errors (requests cut by a kill) are
  counted apart: they are not answers.

Writes bench/results/<name>.json and .md (default soak).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
import psycopg

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SOURCE = "soak"
URLS = [f"https://soak.example.com/doc/{i}" for i in range(24)]
TITLES = ["Green tea", "Black tea", "Oolong"]
PARAGRAPH = (
    "The {word} harvest begins when the leaves are young and the weather is dry. Pickers take the bud and "
    "two leaves, which are withered in the shade, rolled by hand and left to oxidise before they are fired. "
)
TEXTS = [
    "\n\n".join(PARAGRAPH.format(word=f"{season} {i}") * reps for i in range(paragraphs))
    for season, reps, paragraphs in [("spring", 3, 3), ("summer", 2, 4), ("autumn", 4, 2), ("winter", 1, 2)]
]
QUERIES = ["spring harvest", "leaves withered in the shade", "oxidise before fired", "autumn tea", "rolled by hand"]
MIX = {"create": 0.16, "reingest": 0.2, "patch": 0.2, "delete": 0.12, "search": 0.32}
sys.path.insert(0, str(ROOT))

from harness import drop_database, free_port, fresh_database, percentile  # noqa: E402


class Server:
    """``manage.py serve`` as ``make run`` runs it, on a database and data folder of its own."""

    def __init__(self, database_url: str, data_dir: Path, log_path: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "GUNICORN_", "QDRANT_"))},
            "PYTHONUNBUFFERED": "1",
            "DATABASE_URL": database_url,
            "DATA_DIR": str(data_dir),
            "EMBEDDING_MODEL_DIR": str(ROOT / "var" / "models"),
            "LOG_LEVEL": "WARNING",
            "THROTTLE_KEY": "1000000/min",
            "THROTTLE_ANON": "1000000/min",
        }
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=600
        )
        if result.returncode != 0:
            raise SystemExit(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def start(self) -> None:
        log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=log,
        )
        self.wait_ready(300)

    def wait_ready(self, seconds: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.base}/ready", timeout=10).status_code == 200:
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"/ready did not answer 200 in {seconds} s:\n{self.log_path.read_text()[-3000:]}")

    def worker(self) -> psutil.Process | None:
        """The gunicorn worker: `serve` supervises the gunicorn arbiter, whose one child it is.

        (Killing `serve`'s own child, the arbiter, stops the service: `serve` exits with it.)
        """
        arbiters = psutil.Process(self.proc.pid).children()
        if len(arbiters) != 1:
            return None
        workers = arbiters[0].children()
        return workers[0] if len(workers) == 1 else None

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=10)


@dataclass
class Event:
    op: str
    url: str
    doc_id: int | None
    start: float
    end: float
    status: int | None  # None: no HTTP answer (the worker was killed mid-request)
    result_id: int | None = None


@dataclass
class Shared:
    ids: dict[str, int] = field(default_factory=dict)  # url -> last id an answer named
    urls_by_id: dict[int, str] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    latency: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)


class Client:
    def __init__(self, base: str, headers: dict, shared: Shared, seed: int):
        self.base = base
        self.headers = headers
        self.shared = shared
        self.random = random.Random(seed)

    def pick_op(self) -> str:
        return self.random.choices(list(MIX), weights=list(MIX.values()))[0]

    def run(self, stop_at: float) -> None:
        while time.monotonic() < stop_at:
            # A new connection after a request the kill cut off.
            with httpx.Client(base_url=self.base, headers=self.headers, timeout=120) as http:
                while time.monotonic() < stop_at and self.step(http, self.pick_op()):
                    pass

    def step(self, http: httpx.Client, op: str) -> bool:
        """Send one request; False if it got no answer."""
        rnd = self.random
        with self.shared.lock:
            known = dict(self.shared.ids)
        url, doc_id, method, path, body = "", None, "GET", "", None
        if op in ("create", "reingest"):
            choices = [u for u in URLS if (u not in known) == (op == "create")] or URLS
            url = rnd.choice(choices)
            method, path = "POST", "/api/documents/"
            body = {"source": SOURCE, "url": url, "title": rnd.choice(TITLES), "text": rnd.choice(TEXTS)}
        elif op in ("patch", "delete"):
            if not known:
                return True
            url = rnd.choice(sorted(known))
            doc_id = known[url]
            path = f"/api/documents/{doc_id}/"
            if op == "patch":
                method = "PATCH"
                body = rnd.choice([{"title": rnd.choice(TITLES)}, {"metadata": {"n": rnd.randrange(1000)}}])
            else:
                method = "DELETE"
        else:
            mode = rnd.choice(["keyword", "semantic", "hybrid"])
            path = f"/api/search/?q={rnd.choice(QUERIES)}&mode={mode}&limit=5"
            op = f"search-{mode}"
        start = time.monotonic()
        status, result_id = None, None
        try:
            response = http.request(method, path, json=body)
            status = response.status_code
            if op in ("create", "reingest") and status in (200, 201):
                result_id = response.json()["id"]
        except httpx.TransportError:
            pass
        end = time.monotonic()
        with self.shared.lock:
            self.shared.events.append(Event(op, url, doc_id, start, end, status, result_id))
            if status is not None:
                self.shared.latency[op].append((end - start) * 1000)
            if result_id is not None:
                self.shared.ids[url] = result_id
                self.shared.urls_by_id[result_id] = url
            elif op == "delete" and status in (204, 404) and self.shared.ids.get(url) == doc_id:
                del self.shared.ids[url]
        return status is not None


def killer(server: Server, every: float, stop_at: float, kills: list[dict]) -> None:
    while True:
        wake = time.monotonic() + every
        if wake >= stop_at:
            return
        time.sleep(max(0.0, wake - time.monotonic()))
        worker = server.worker()
        if worker is None:
            kills.append({"at_s": round(time.monotonic(), 1), "error": "no single worker to kill"})
            continue
        os.kill(worker.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        back = server.wait_ready(120)
        kills.append({"pid": worker.pid, "at": killed_at, "ready_again_s": round(back, 2)})


def settle(database_url: str, seconds: float) -> dict:
    """Wait until nothing is pending or queued (stuck RUNNING tasks of killed workers stay)."""
    started = time.monotonic()
    state = {}
    with psycopg.connect(database_url, autocommit=True) as conn:
        while True:
            pending = conn.execute("SELECT count(*) FROM documents_chunk WHERE index_status = 'pending'").fetchone()[0]
            tasks = dict(
                conn.execute(
                    "SELECT status, count(*) FROM django_tasks_database_dbtaskresult GROUP BY status"
                ).fetchall()
            )
            state = {"pending_chunks": pending, "tasks": tasks, "waited_s": round(time.monotonic() - started, 1)}
            if (pending == 0 and not tasks.get("READY")) or time.monotonic() - started > seconds:
                return state
            time.sleep(2)


def check(shared: Shared) -> dict:
    """The consistency check, in this process, on the server's database and store (server stopped)."""
    import django

    django.setup()
    from documents.models import Chunk, Document
    from documents.services import _document_hash, _document_prepare, _sha256, chunk_context, embedding_input
    from vectors.embedders import get_embedder
    from vectors.stores import get_vector_store

    versions = set()
    for title in TITLES:
        for text in TEXTS:
            prepared = _document_prepare(title=title, text=text, mime="text/plain")
            versions.add((prepared.text, tuple(d.text for d in prepared.drafts)))

    documents = {d.pk: d for d in Document.objects.all()}
    by_url = defaultdict(list)
    for d in documents.values():
        by_url[d.url].append(d.pk)
    mismatched_documents, stale_contexts = [], 0
    chunks_by_status = Counter()
    chunk_ids, indexed_ids = set(), set()
    for document in documents.values():
        chunks = list(document.chunks.order_by("ordinal"))
        if (document.text, tuple(c.text for c in chunks)) not in versions or document.content_hash != _document_hash(
            document.title, document.text, document.metadata
        ):
            mismatched_documents.append(document.pk)
        for chunk in chunks:
            chunks_by_status[chunk.index_status] += 1
            chunk_ids.add(str(chunk.pk))
            if chunk.index_status == Chunk.IndexStatus.INDEXED:
                indexed_ids.add(str(chunk.pk))
            if chunk.context != chunk_context(document.title, chunk.heading_path) or chunk.content_hash != _sha256(
                embedding_input(chunk, chunk.context)
            ):
                stale_contexts += 1

    store = get_vector_store()
    store.ensure_collection(dimension=get_embedder().dimension, model_id=get_embedder().model_id)
    points = {i for ids in store.iter_ids(batch_size=2000) for i in ids}

    events = shared.events
    deleted_ok = {e.doc_id for e in events if e.op == "delete" and e.status == 204}
    resurrected = sorted(i for i in deleted_ok if i in documents)
    lost = []
    for url in URLS:
        ingests = [e for e in events if e.url == url and e.op in ("create", "reingest") and e.status in (200, 201)]
        if not ingests:
            continue
        last = max(ingests, key=lambda e: e.start)
        # Any DELETE of this url's documents that may have been served after that ingest began
        # (answered 204, or cut off with no answer) could have removed it legitimately.
        later_deletes = [
            e for e in events if e.op == "delete" and e.url == url and e.end > last.start and e.status in (204, None)
        ]
        if not later_deletes and not by_url.get(url):
            lost.append(url)

    statuses = Counter(f"{e.op} {e.status if e.status is not None else 'no answer'}" for e in events)
    return {
        "documents": len(documents),
        "chunks": len(chunk_ids),
        "chunks_by_status": dict(chunks_by_status),
        "points": len(points),
        "acknowledged_documents_lost": len(lost),
        "lost_urls": lost,
        "deleted_documents_back": len(resurrected),
        "mismatched_documents": len(mismatched_documents),
        "mismatched_document_ids": mismatched_documents[:20],
        "chunks_with_stale_context": stale_contexts,
        "chunks_not_indexed": len(chunk_ids) - len(indexed_ids),
        "orphan_points": len(points - chunk_ids),
        "indexed_chunks_without_point": len(indexed_ids - points),
        "responses_5xx": sum(1 for e in events if e.status is not None and e.status >= 500),
        "no_answer": sum(1 for e in events if e.status is None),
        "statuses": dict(sorted(statuses.items())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600, help="seconds of load (default 600)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--kill-every", type=float, default=60, help="seconds between worker kills (default 60)")
    parser.add_argument("--settle", type=float, default=300, help="seconds to wait for pending work after the load")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--results-name", default="soak")
    args = parser.parse_args()

    base_url = os.environ.get("DATABASE_URL")
    if not base_url:
        raise SystemExit("DATABASE_URL must name a PostgreSQL server (the soak makes a database of its own there).")
    database_url = fresh_database(base_url, urlsplit(base_url).path.lstrip("/") + "_soak")
    data_dir = Path(tempfile.mkdtemp(prefix="ragsite-soak-"))
    server = Server(database_url, data_dir, data_dir / "server.log")
    try:
        server.manage("migrate", "--noinput")
        key = server.manage("create_api_key", "soak", "--scope", "write").strip().splitlines()[-1]
        server.start()
        shared = Shared()
        headers = {"Authorization": f"Bearer {key}"}
        load_avg_before = os.getloadavg()
        started = time.monotonic()
        stop_at = started + args.duration
        kills: list[dict] = []
        threads = [
            threading.Thread(target=Client(server.base, headers, shared, args.seed * 100 + i).run, args=(stop_at,))
            for i in range(args.clients)
        ]
        threads.append(threading.Thread(target=killer, args=(server, args.kill_every, stop_at, kills)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        load_seconds = time.monotonic() - started
        load_avg_after = os.getloadavg()
        settled = settle(database_url, args.settle)
        exit_code = server.stop()
        os.environ.update(server.env)
        os.environ["DJANGO_SETTINGS_MODULE"] = "ragsite.settings"
        os.environ["EMBEDDED_WORKER"] = "false"
        result = {
            "bench": "soak",
            "duration_s": round(load_seconds, 1),
            "clients": args.clients,
            "kill_every_s": args.kill_every,
            "kills": [{k: v for k, v in kill.items() if k != "at"} for kill in kills],
            "requests": len(shared.events),
            "latency_ms": {
                op: {"n": len(v), "p50": round(percentile(v, 50), 1), "p95": round(percentile(v, 95), 1)}
                for op, v in sorted(shared.latency.items())
            },
            "settle": settled,
            "server_exit_code": exit_code,
            "check": check(shared),
            "machine": {
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "load_avg_before": [round(x, 2) for x in load_avg_before],
                "load_avg_after": [round(x, 2) for x in load_avg_after],
            },
            "server": "manage.py serve (gunicorn, 1 worker process, 8 threads), embedded vector store and task worker",
        }
    finally:
        server.stop()
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # Django may never have been set up
            pass
        drop_database(database_url)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.results_name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{args.results_name}.md").write_text(markdown(result))
    print(markdown(result))
    print(f"server log: {server.log_path}")


def markdown(r: dict) -> str:
    c = r["check"]
    lines = [
        f"# Soak: concurrent writers with the worker killed every {r['kill_every_s']:g} s",
        "",
        f"{r['clients']} clients for {r['duration_s']} s against {r['server']}; the gunicorn "
        f"worker killed with SIGKILL every {r['kill_every_s']} s ({len(r['kills'])} kills); {r['requests']} requests. "
        "Then the check of PostgreSQL against the vector store, with the server stopped. "
        "Written by bench/soak_bench.py.",
        "",
        "| check | result | goal |",
        "|---|---:|---:|",
        f"| acknowledged documents lost | {c['acknowledged_documents_lost']} | 0 |",
        f"| deleted documents back (DELETE answered 204) | {c['deleted_documents_back']} | 0 |",
        f"| documents whose chunks do not match their text | {c['mismatched_documents']} | 0 |",
        f"| chunks whose context does not follow the title | {c['chunks_with_stale_context']} | 0 |",
        f"| chunks not indexed after settling | {c['chunks_not_indexed']} | 0 |",
        f"| indexed chunks without a point | {c['indexed_chunks_without_point']} | 0 |",
        f"| orphan points (no chunk) | {c['orphan_points']} | 0 |",
        f"| 5xx answers | {c['responses_5xx']} | 0 |",
        f"| requests cut off by a kill (no answer) | {c['no_answer']} | - |",
        "",
        f"At the end: {c['documents']} documents, {c['chunks']} chunks {c['chunks_by_status']}, {c['points']} points. "
        f"Settling: {r['settle']}.",
        "",
        "Worker back (/ready 200) after each kill, s: "
        + ", ".join(str(k.get("ready_again_s", k.get("error"))) for k in r["kills"]),
        "",
        "| request | n | p50 ms | p95 ms |",
        "|---|---:|---:|---:|",
        *(f"| {op} | {v['n']} | {v['p50']} | {v['p95']} |" for op, v in r["latency_ms"].items()),
        "",
        "Answers: " + ", ".join(f"{k}: {v}" for k, v in c["statuses"].items()),
        "",
        f"Machine: {r['machine']['cpus']} CPUs shared with other jobs, load average "
        f"{r['machine']['load_avg_before']} before and {r['machine']['load_avg_after']} after.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
