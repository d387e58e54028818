"""Load test of the REST API under gunicorn with the production settings, over 127.0.0.1.

    .venv/bin/python bench/load_bench.py                      # 1000 documents, 45 s, 8 clients
    .venv/bin/python bench/load_bench.py --docs 2000 --duration 60 --clients 12

What runs, and why this way:
- The server is the production command, ``gunicorn -c ragsite/gunicorn.conf.py ragsite.wsgi``,
  with DJANGO_ENV=production, a random SECRET_KEY, ALLOWED_HOSTS=127.0.0.1 and plain HTTP
  (SECURE_SSL_REDIRECT=false: no TLS proxy in front here), on a database of its own
  (``ragsite_load_bench`` on the server DATABASE_URL names, dropped afterwards) and a temporary
  DATA_DIR. The embedder is the production default (EMBEDDING_RUNTIME=onnx-int8, exported first
  as the image build does).
- There is no Qdrant server here, so the vector store is the embedded one (QDRANT_LOCAL_ENGINE:
  qdrant-edge by default, or qdrant-client's local mode), which only one process may open:
  gunicorn runs ONE worker process (4 gthread threads), which also runs the embedded task
  worker. That is the honest configuration without a Qdrant server; Compose's production setup
  runs 4 workers against a Qdrant server. The settings the server resolved are recorded.
- Throttling is raised out of the way (THROTTLE_KEY=1000000/min; the default 1200/min per key
  would turn a single-key load test into a throttling test).
- The corpus (SciFact abstracts) is ingested through the API; the load waits until every chunk
  is indexed, so semantic and hybrid searches see all of it.
- The load comes from this process (a separate process from the server): N client threads,
  closed loop (each sends its next request when the previous answered), keep-alive connections,
  a weighted mix of keyword / semantic / hybrid searches with SciFact claims as queries and a few
  ingests of new abstracts. A short warm-up is not counted.
- Recorded: requests/s, p50/p95/p99 latency per request type, errors (non-2xx or transport
  failures), the gunicorn worker's RSS (psutil) after start-up, at the start and end of the load
  and its peak, and os.getloadavg() before and after: the 2 CPU cores are shared with other jobs,
  so absolute numbers move with the machine's load.

Writes bench/results/load.json and bench/results/load.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx
import psutil
from harness import DATASETS, drop_database, free_port, fresh_database, percentile

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
DATASET = DATASETS / "scifact-train"
RESULTS = ROOT / "bench" / "results"
GUNICORN_CMD = [str(VENV_BIN / "gunicorn"), "-c", "ragsite/gunicorn.conf.py", "ragsite.wsgi"]
MIX = {"keyword": 0.32, "semantic": 0.32, "hybrid": 0.32, "ingest": 0.04}


RESOLVED_SETTINGS = (
    "import json; from django.conf import settings as s; print(json.dumps({n: getattr(s, n, None) for n in "
    "['QDRANT_LOCAL_ENGINE', 'EMBEDDING_RUNTIME', 'EMBEDDING_BATCH_SIZE', 'DB_POOL_MAX_SIZE', 'SEARCH_DEFAULT_MODE', "
    "'SEARCH_CANDIDATES']}))"
)


def read_jsonl(path: Path) -> list[dict]:
    with path.open() as handle:
        return [json.loads(line) for line in handle if line.strip()]


class Server:
    """The production command, with its own database and data folder."""

    def __init__(self, database_url: str, data_dir: Path, log_path: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": str(data_dir),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "DJANGO_ENV": "production",
            "DEBUG": "false",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": "127.0.0.1",
            "SECURE_SSL_REDIRECT": "false",
            "DATABASE_URL": database_url,
            "DATA_DIR": str(data_dir),
            "STATIC_ROOT": str(data_dir / "static"),
            "QDRANT_URL": "",
            "EMBEDDED_WORKER": "true",
            "EMBEDDING_BACKEND": "local",
            "EMBEDDING_RUNTIME": "onnx-int8",
            "GUNICORN_WORKERS": "1",
            "GUNICORN_BIND": f"127.0.0.1:{self.port}",
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
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(GUNICORN_CMD, cwd=ROOT, env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"gunicorn exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.base}/ready", timeout=30).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(1)
        raise SystemExit(f"/ready did not answer 200 in 300 s:\n{self.log_path.read_text()[-3000:]}")

    def worker(self) -> psutil.Process:
        children = psutil.Process(self.proc.pid).children()
        if len(children) != 1:
            raise SystemExit(f"expected one gunicorn worker, found {len(children)}")
        return children[0]

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=10)


def ingest_body(doc: dict) -> dict:
    return {
        "title": doc.get("title", ""),
        "text": doc["text"],
        "source": "scifact",
        "url": f"https://scifact.example/{doc['_id']}",
        "metadata": {"corpus": "scifact"},
    }


def preload(base: str, headers: dict, docs: list[dict], threads: int) -> dict:
    """Ingest docs through the API with a few clients; then wait until every chunk is indexed."""
    todo = list(docs)
    lock = threading.Lock()
    failures: list[str] = []

    def run() -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
            while True:
                with lock:
                    if not todo:
                        return
                    doc = todo.pop()
                response = client.post("/api/documents/", json=ingest_body(doc))
                if response.status_code not in (200, 201):
                    failures.append(f"{response.status_code} {response.text[:200]}")

    started = time.monotonic()
    pool = [threading.Thread(target=run) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    ingested_s = time.monotonic() - started
    if failures:
        raise SystemExit(f"{len(failures)} ingests failed, e.g. {failures[0]}")
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        while True:
            pending = client.get("/api/chunks/", params={"index_status": "pending", "limit": 1}).json()["count"]
            if pending == 0:
                break
            time.sleep(2)
        chunks = client.get("/api/chunks/", params={"limit": 1}).json()["count"]
        failed = client.get("/api/chunks/", params={"index_status": "failed", "limit": 1}).json()["count"]
    return {
        "documents": len(docs),
        "chunks": chunks,
        "failed_chunks": failed,
        "ingest_s": round(ingested_s, 1),
        "indexed_s": round(time.monotonic() - started, 1),
    }


class Load:
    def __init__(self, base: str, headers: dict, queries: list[str], new_docs: list[dict], seed: int):
        self.base, self.headers = base, headers
        self.queries, self.new_docs = queries, list(new_docs)
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.statuses: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.errors: list[str] = []
        self.recording = False

    def next_request(self) -> tuple[str, str, dict]:
        with self.lock:
            kind = self.random.choices(list(MIX), weights=list(MIX.values()))[0]
            if kind == "ingest" and self.new_docs:
                return kind, "POST", ingest_body(self.new_docs.pop())
            kind = "hybrid" if kind == "ingest" else kind
            return kind, "GET", {"q": self.random.choice(self.queries), "mode": kind, "limit": 10}

    def client_loop(self, stop_at: float) -> None:
        with httpx.Client(base_url=self.base, headers=self.headers, timeout=60) as client:
            while time.monotonic() < stop_at:
                kind, method, payload = self.next_request()
                began = time.perf_counter()
                try:
                    if method == "POST":
                        response = client.post("/api/documents/", json=payload)
                    else:
                        response = client.get("/api/search/", params=payload)
                    status, detail = response.status_code, response.text[:200]
                except httpx.HTTPError as exc:
                    status, detail = 0, repr(exc)
                elapsed_ms = (time.perf_counter() - began) * 1000
                if not self.recording:
                    continue
                with self.lock:
                    self.latencies[kind].append(elapsed_ms)
                    self.statuses[kind][status] += 1
                    if not 200 <= status < 300:
                        self.errors.append(f"{kind} {status} {detail}")

    def run(self, *, clients: int, seconds: float, warmup: float) -> float:
        stop_at = time.monotonic() + warmup + seconds
        pool = [threading.Thread(target=self.client_loop, args=(stop_at,)) for _ in range(clients)]
        for t in pool:
            t.start()
        time.sleep(warmup)
        self.recording = True
        started = time.monotonic()
        for t in pool:
            t.join()
        return time.monotonic() - started


def sample_rss(process: psutil.Process, samples: list[int], stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            samples.append(process.memory_info().rss)
        except psutil.Error:
            return
        stop.wait(0.5)


def mib(value: int) -> float:
    return round(value / 2**20, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=1000, help="SciFact abstracts to preload (default 1000)")
    parser.add_argument("--duration", type=float, default=45, help="measured seconds of load (default 45)")
    parser.add_argument("--warmup", type=float, default=5, help="seconds of load not counted (default 5)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads (default 8)")
    parser.add_argument("--preload-clients", type=int, default=4)
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
        help="any database on the server to use; the bench creates ragsite_load_bench there",
    )
    parser.add_argument("--keep", action="store_true", help="keep the database and data folder")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for gunicorn, e.g. MALLOC_ARENA_MAX=2 (repeatable)",
    )
    parser.add_argument("--results-name", default="load", help="bench/results/<name>.json and .md (default load)")
    args = parser.parse_args()

    corpus = read_jsonl(DATASET / "corpus.jsonl")
    queries = [q["text"] for q in read_jsonl(DATASET / "queries.jsonl")]
    random.Random(args.seed).shuffle(corpus)
    preload_docs, new_docs = corpus[: args.docs], corpus[args.docs :]

    data_dir = Path(tempfile.mkdtemp(prefix="ragsite-load-"))
    database_url = fresh_database(args.database_url, "ragsite_load_bench")
    server = Server(database_url, data_dir, data_dir / "gunicorn.log")
    server.env.update(dict(item.split("=", 1) for item in args.server_env))
    result: dict = {}
    try:
        print("migrate, export the ONNX embedder, create a key ...", flush=True)
        server.manage("migrate", "--no-input")
        server.manage("embedder_export")
        key = server.manage("create_api_key", "load-bench", "--scope", "write").strip()
        # the settings the server will run with, as Django resolves them from this environment
        resolved = json.loads(server.manage("shell", "-c", RESOLVED_SETTINGS).strip().splitlines()[-1])
        headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
        print(f"start gunicorn on {server.base} ...", flush=True)
        started = time.monotonic()
        server.start()
        startup_s = time.monotonic() - started
        worker = server.worker()
        rss_started = worker.memory_info().rss

        print(f"preload {len(preload_docs)} documents through the API ...", flush=True)
        corpus_info = preload(server.base, headers, preload_docs, args.preload_clients)
        print(f"  {corpus_info}", flush=True)

        load = Load(server.base, headers, queries, new_docs, args.seed)
        load_before = os.getloadavg()
        rss_before = worker.memory_info().rss
        samples: list[int] = []
        stop = threading.Event()
        sampler = threading.Thread(target=sample_rss, args=(worker, samples, stop), daemon=True)
        sampler.start()
        print(f"load: {args.clients} clients, {args.warmup:.0f} s warm-up + {args.duration:.0f} s ...", flush=True)
        elapsed = load.run(clients=args.clients, seconds=args.duration, warmup=args.warmup)
        stop.set()
        sampler.join()
        rss_after = worker.memory_info().rss
        load_after = os.getloadavg()
        # which embedding runtime's libraries the worker actually mapped (torch costs ~350 MB)
        mapped = {Path(m.path).name for m in worker.memory_maps() if m.path}
        libraries = {
            "torch": any(name.startswith("libtorch") for name in mapped),
            "onnxruntime": any("onnxruntime" in name for name in mapped),
        }
        exit_code = server.stop()

        per_type = {}
        for kind in MIX:
            values = load.latencies.get(kind, [])
            if not values:
                continue
            per_type[kind] = {
                "requests": len(values),
                "requests_per_s": round(len(values) / elapsed, 2),
                "p50_ms": round(percentile(values, 50), 1),
                "p95_ms": round(percentile(values, 95), 1),
                "p99_ms": round(percentile(values, 99), 1),
                "max_ms": round(max(values), 1),
                "statuses": {str(k): v for k, v in sorted(load.statuses[kind].items())},
            }
        everything = [v for values in load.latencies.values() for v in values]
        result = {
            "config": {
                "command": "gunicorn -c ragsite/gunicorn.conf.py ragsite.wsgi",
                "django_env": "production",
                "gunicorn_workers": 1,
                "gunicorn_threads": 4,
                "vector_store": f"embedded, engine {resolved['QDRANT_LOCAL_ENGINE']} (no QDRANT_URL; one process owns it)",
                "embedding_runtime": resolved["EMBEDDING_RUNTIME"],
                "settings": resolved,
                "throttle_key": server.env["THROTTLE_KEY"],
                "clients": args.clients,
                "duration_s": round(elapsed, 1),
                "warmup_s": args.warmup,
                "mix": MIX,
                "queries": "SciFact train claims",
                "server_env_extra": dict(item.split("=", 1) for item in args.server_env),
            },
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "loadavg_before": [round(x, 2) for x in load_before],
                "loadavg_after": [round(x, 2) for x in load_after],
            },
            "corpus": corpus_info,
            "startup_s": round(startup_s, 1),
            "totals": {
                "requests": len(everything),
                "requests_per_s": round(len(everything) / elapsed, 2),
                "p50_ms": round(percentile(everything, 50), 1),
                "p95_ms": round(percentile(everything, 95), 1),
                "p99_ms": round(percentile(everything, 99), 1),
                "errors": len(load.errors),
            },
            "per_type": per_type,
            "errors_sample": load.errors[:10],
            "worker_rss_mib": {
                "after_startup": mib(rss_started),
                "load_start": mib(rss_before),
                "load_end": mib(rss_after),
                "load_peak": mib(max([*samples, rss_after])),
                "growth_during_load": mib(rss_after - rss_before),
            },
            "worker_libraries_mapped": libraries,
            "server_exit_code": exit_code,
        }
    finally:
        server.stop()
        if not args.keep:
            drop_database(database_url)
            subprocess.run(["rm", "-rf", str(data_dir)], check=False)
        else:
            print(f"kept {database_url} and {data_dir}")

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.results_name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{args.results_name}.md").write_text(markdown(result))
    print(markdown(result))


def markdown(r: dict) -> str:
    c, m, t, rss = r["config"], r["machine"], r["totals"], r["worker_rss_mib"]
    lines = [
        "# API load test (bench/load_bench.py)",
        "",
        f"`{c['command']}` with DJANGO_ENV=production on 127.0.0.1: {c['gunicorn_workers']} worker x "
        f"{c['gunicorn_threads']} threads ({c['vector_store']}), {c['embedding_runtime']} embedder, "
        f"throttle raised to {c['throttle_key']}. {r['corpus']['documents']} SciFact abstracts "
        f"({r['corpus']['chunks']} chunks, all indexed) ingested through the API first "
        f"({r['corpus']['ingest_s']} s to ingest, {r['corpus']['indexed_s']} s until indexed).",
        "",
        f"Load: {c['clients']} closed-loop clients (keep-alive) from a separate process, {c['duration_s']} s measured "
        f"after {c['warmup_s']:.0f} s warm-up; mix {', '.join(f'{k} {v:.0%}' for k, v in c['mix'].items())}; "
        f"queries: {c['queries']}. Machine: {m['cpus']} CPUs shared with other jobs, load average "
        f"{m['loadavg_before'][0]} before / {m['loadavg_after'][0]} after (1 min).",
        "",
        "| request | count | req/s | p50 ms | p95 ms | p99 ms | max ms | statuses |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for kind, s in r["per_type"].items():
        statuses = ", ".join(f"{k}: {v}" for k, v in s["statuses"].items())
        lines.append(
            f"| {kind} | {s['requests']} | {s['requests_per_s']} | {s['p50_ms']} | {s['p95_ms']} | "
            f"{s['p99_ms']} | {s['max_ms']} | {statuses} |"
        )
    lines.append(
        f"| **all** | {t['requests']} | {t['requests_per_s']} | {t['p50_ms']} | {t['p95_ms']} | "
        f"{t['p99_ms']} | | errors: {t['errors']} |"
    )
    lines += [
        "",
        f"Worker RSS: {rss['after_startup']} MiB after start-up, {rss['load_start']} MiB at the start of the load, "
        f"{rss['load_end']} MiB at the end (growth {rss['growth_during_load']:+} MiB, peak {rss['load_peak']} MiB). "
        f"Libraries mapped in the worker: {', '.join(k for k, v in r['worker_libraries_mapped'].items() if v) or 'neither'}. "
        f"Server stopped with exit code {r['server_exit_code']} (SIGTERM).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
