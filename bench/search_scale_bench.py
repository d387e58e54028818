"""Search latency at 10k, 30k and 100k chunks through the API, serving RSS, and a memory-growth soak.

Run from the project root, after `bench/ingest_bench.py --keep` left its database and data folder
(the real SciFact chunks, embedded by the pipeline, are the base corpus):

    .venv/bin/python bench/search_scale_bench.py --base-db ragsite_perf_ingest_onnx_int8 \\
        --base-data-dir /tmp/ragsite-ingest-bench-XXXX --sizes 10000,30000   # ~15 min on 2 shared cores
    .venv/bin/python bench/search_scale_bench.py --reuse --sizes 100000       # grows the same corpus
    .venv/bin/python bench/search_scale_bench.py --reuse --phases soak --soak-seconds 600
    .venv/bin/python bench/search_scale_bench.py --reuse --phases measure     # re-measure every size

Each size is frozen after its build (database ``<db>_<size>`` and data folder ``<work-dir>_<size>``)
and measured from that copy, so any size can be measured again after a code change.

Code path: every search is `GET /api/search/?q=...&mode=...` through Django's test `Client` in the
measuring process (the full middleware stack, API-key authentication, DRF validation,
`search.selectors.chunk_search`, hydration, snippets and JSON rendering; no HTTP socket), with
DJANGO_ENV=production settings, the embedded qdrant-edge store and the onnx-int8 embedder. Beside
each query's three requests the same process times `embedder.embed_query` alone (the reference
for the issue's goals), in rotating order, so all see the same load. Each size is measured in a
fresh process that only opens the store and serves, so its RSS is a serving process's.

Corpus (what is real and what is synthetic):
- Real: every SciFact document ingested by the pipeline (document_ingest + vectors_sync_pending:
  ~10k chunks with their real onnx-int8 vectors), copied from the ingest bench's database/store.
- Synthetic, to reach each size: "excerpt" documents built from SciFact text only. Excerpt round r
  of abstract d is a new document titled "<title of d> (excerpt r)" with two chunks, each a
  window of 2-4 consecutive sentences of d's abstract (the start and length shift with r, so
  rounds differ); context = that title. Its vector is *not* embedded: it is the vector of d's
  first real chunk plus Gaussian noise (sigma 0.025 per dimension, cosine ~0.9 to the original),
  re-normalised. Rows are inserted with bulk_create (index_status=indexed, real token counts and
  content hashes), points upserted into the store with the app's payload, then the keyword
  statistics are refreshed (search.keyword_stats.keyword_stats_refresh) and the tables analyzed.
  Keyword-wise this is pessimistic: SciFact's vocabulary does not grow with the copies, so every
  lexeme's document frequency (and the candidate sets) grow ~10x from 10k to 100k chunks.

Queries: SciFact train claims (queries.jsonl, first --queries, after a warm-up pass).
Soak: at the last size, a mixed load (keyword, semantic, hybrid searches in turn; every 20th
operation ingests a new document and embeds it in-process, as the embedded worker would) for
--soak-seconds, RSS sampled every 10 s between operations (the peak, VmHWM, is reported apart);
start/end/max and the least-squares slope are reported, with anonymous and file-backed RSS apart.
The soak calls Django's WSGI handler directly (as gunicorn does), not the test Client, whose
per-request signal receivers leak ~1 KB a request.
--soak-trace adds a diagnosis of any growth to the JSON (tracemalloc diff by source line, object
counts by type, anonymous RSS before/after malloc_trim: freed-but-kept heap vs live memory);
it slows the process, so its RSS figures are for finding a cause, not for reporting.

Writes bench/results/search_scale.json (merged per size), search_scale.md and search_latency.png.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from harness import proc_status, versions  # noqa: E402
from ingest_bench import PostgresCpu, database_url, recreate_database  # noqa: E402

DATASET = ROOT.parent / "shared" / "datasets" / "scifact-train"
RESULTS = ROOT / "bench" / "results"
DEFAULT_DB_URL = "postgres://postgres@127.0.0.1:5432/postgres"
MODES = ("keyword", "semantic", "hybrid")
NOISE_SIGMA = 0.025
SYNTH_URL = "synthetic://scifact-excerpt/"
SOAK_CHURN_KEEP = 5
SOAK_URL = "soak://scifact/"


# --- environment for the children -----------------------------------------------------------------


def child_env(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "ragsite.settings",
            "DJANGO_ENV": "production",
            "DEBUG": "false",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": "testserver,127.0.0.1",
            "SECURE_SSL_REDIRECT": "false",
            "DATABASE_URL": database_url(args.database_url, args.db),
            "DATA_DIR": str(args.work_dir),
            "STATIC_ROOT": str(args.work_dir / "static"),
            "QDRANT_URL": "",
            "EMBEDDED_WORKER": "false",
            "TASKS_BACKEND": "database",
            "EMBEDDING_BACKEND": "local",
            "EMBEDDING_RUNTIME": args.runtime,
            "LOG_LEVEL": "WARNING",
            "THROTTLE_KEY": "100000000/min",
            "THROTTLE_ANON": "100000000/min",
            # measure builds the index explicitly (or not, with --index off): no build racing the timing
            "QDRANT_EDGE_INDEX_THRESHOLD": "0",
        }
    )
    return env


def run_child(args: argparse.Namespace, phase: str, **extra) -> dict:
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    cmd = [
        sys.executable,
        __file__,
        "--child-phase",
        phase,
        "--child-out",
        str(out),
        "--db",
        args.db,
        "--database-url",
        args.database_url,
        "--work-dir",
        str(args.work_dir),
        "--runtime",
        args.runtime,
        "--queries",
        str(args.queries),
        "--soak-seconds",
        str(args.soak_seconds),
        "--index",
        args.index,
    ]
    for key, value in extra.items():
        flag = f"--{key.replace('_', '-')}"
        if isinstance(value, bool):
            cmd += [flag] if value else []
        else:
            cmd += [flag, str(value)]
    subprocess.run(cmd, check=True, env=child_env(args))
    result = json.loads(out.read_text())
    out.unlink()
    return result


# --- helpers ----------------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(ms: list[float]) -> dict:
    return {
        "p50_ms": round(pct(ms, 50), 2),
        "p95_ms": round(pct(ms, 95), 2),
        "mean_ms": round(statistics.fmean(ms), 2) if ms else None,
        "n": len(ms),
    }


def load_queries(limit: int) -> list[str]:
    queries = [json.loads(line)["text"] for line in open(DATASET / "queries.jsonl")]
    return queries[:limit] if limit else queries


_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")


def sentences(text: str) -> list[str]:
    parts = [p.strip() for p in _SENTENCE.split(text) if p.strip()]
    return parts or [text.strip()]


def window(parts: list[str], start: int, length: int) -> str:
    n = len(parts)
    length = min(length, n)
    return " ".join(parts[(start + i) % n] for i in range(length))


# --- phase: build (grow the corpus to a target size) --------------------------------------------------


def phase_build(args: argparse.Namespace) -> dict:
    import django

    django.setup()
    import numpy as np
    from django.db import connection, transaction

    from documents.models import Chunk, Document, Source
    from documents.services import embedding_input
    from documents.tokenizer import get_tokenizer
    from search.keyword_stats import keyword_stats_refresh
    from vectors.embedders import get_embedder
    from vectors.models import EmbeddingCache
    from vectors.stores import VectorPoint, get_vector_store
    from vectors.sync import point_payload

    started = time.perf_counter()
    target = int(args.target)
    current = Chunk.objects.count()
    report = {"target": target, "before": current}
    if current >= target:
        report.update(after=current, added=0, seconds=0.0)
        return report

    embedder = get_embedder()
    tokenizer = get_tokenizer()
    store = get_vector_store()
    store.ensure_collection(dimension=embedder.dimension, model_id=embedder.model_id)
    real_source = Source.objects.get(name="scifact")
    synth_source, _ = Source.objects.get_or_create(name="scifact-excerpts", defaults={"kind": Source.Kind.UPLOAD})

    # d -> (title, sentences, vector of its first real chunk)
    first_chunks = {
        c.document_id: c
        for c in Chunk.objects.filter(document__source=real_source, ordinal=0).select_related("document")
    }
    cache = {
        row.content_hash: np.frombuffer(bytes(row.vector), dtype="<f4")
        for row in EmbeddingCache.objects.filter(
            model=embedder.model_id, content_hash__in=[c.content_hash for c in first_chunks.values()]
        )
    }
    originals = []
    for doc_id in sorted(first_chunks):
        chunk = first_chunks[doc_id]
        vector = cache.get(chunk.content_hash)
        if vector is None:
            continue
        doc = chunk.document
        originals.append((doc.title, sentences(doc.text), vector, doc.metadata.get("beir_id", str(doc_id))))
    if not originals:
        raise SystemExit("no embedded real chunks found: run bench/ingest_bench.py --keep first")

    rng = np.random.default_rng(target)
    made = Document.objects.filter(source=synth_source).count()  # excerpt documents so far
    need = target - current
    batch_docs = 1000
    added = 0
    while added < need:
        docs: list[Document] = []
        specs = []
        for _ in range(min(batch_docs, (need - added + 1) // 2)):
            k = made + len(docs)
            round_no, index = divmod(k, len(originals))
            title, parts, vector, beir_id = originals[index]
            n = len(parts)
            length = 2 + round_no % 3
            texts = [window(parts, round_no, length), window(parts, round_no + max(1, n // 2), length)]
            if texts[0] == texts[1]:
                texts = texts[:1]
            doc_title = f"{title} (excerpt {round_no + 1})"
            body = "\n\n".join(texts)
            docs.append(
                Document(
                    source=synth_source,
                    title=doc_title,
                    url=f"{SYNTH_URL}{beir_id}/{round_no + 1}",
                    mime_type="text/plain",
                    text=body,
                    content_hash=hashlib.sha256(body.encode()).hexdigest(),
                    metadata={"beir_id": beir_id, "excerpt": round_no + 1, "synthetic": True},
                )
            )
            specs.append((texts, vector))
        if not docs:
            break
        with transaction.atomic():
            Document.objects.bulk_create(docs, batch_size=1000)
            chunks, vectors = [], []
            for doc, (texts, vector) in zip(docs, specs, strict=True):
                offset = 0
                for ordinal, text in enumerate(texts):
                    chunk = Chunk(
                        document=doc,
                        ordinal=ordinal,
                        text=text,
                        context=doc.title,
                        char_start=offset,
                        char_end=offset + len(text),
                        heading_path=[doc.title],
                        metadata={},
                        index_status=Chunk.IndexStatus.INDEXED,
                    )
                    chunk.content_hash = hashlib.sha256(embedding_input(chunk, chunk.context).encode()).hexdigest()
                    offset += len(text) + 2
                    noisy = vector + rng.normal(0.0, NOISE_SIGMA, size=vector.shape).astype(np.float32)
                    chunks.append(chunk)
                    vectors.append(noisy / np.linalg.norm(noisy))
            encodings = tokenizer.encode_batch([c.text for c in chunks], add_special_tokens=False)
            for chunk, enc in zip(chunks, encodings, strict=True):
                chunk.token_count = len(enc.ids)
            Chunk.objects.bulk_create(chunks, batch_size=1000)
        points = [
            VectorPoint(id=str(c.pk), vector=v, payload=point_payload(c)) for c, v in zip(chunks, vectors, strict=True)
        ]
        for start in range(0, len(points), 1000):
            store.upsert(points[start : start + 1000])
        made += len(docs)
        added += len(chunks)
        print(f"build: +{added}/{need} chunks", flush=True)
    keyword_stats_refresh()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE documents_chunk")
        cursor.execute("ANALYZE documents_document")
    store.close()
    report.update(
        after=Chunk.objects.count(),
        added=added,
        seconds=round(time.perf_counter() - started, 1),
    )
    return report


# --- phase: measure -------------------------------------------------------------------------------


def _client_and_key():
    from django.test import Client

    from accounts.auth import api_key_create

    _, key = api_key_create(name=f"bench-{time.time()}")
    return Client(HTTP_AUTHORIZATION=f"Bearer {key}", HTTP_ACCEPT="application/json"), key


class WsgiClient:
    """Calls Django's WSGI handler directly, as gunicorn does: the whole stack, nothing of the test client.

    The soak uses it because django.test.Client connects signal receivers on every request and
    the weakref finalizers it leaves behind grow the heap by ~1 KB a request (seen with
    tracemalloc): a leak of the test tool, not of the application.
    """

    def __init__(self, key: str) -> None:
        from django.core.handlers.wsgi import WSGIHandler

        self.app = WSGIHandler()
        self.key = key

    def get(self, path: str, params: dict):
        import io
        from types import SimpleNamespace
        from urllib.parse import urlencode

        environ = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": path,
            "QUERY_STRING": urlencode(params),
            "SERVER_NAME": "testserver",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": "testserver",
            "HTTP_AUTHORIZATION": f"Bearer {self.key}",
            "HTTP_ACCEPT": "application/json",
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(b""),
            "wsgi.errors": io.StringIO(),
        }
        status: list[str] = []
        chunks = self.app(environ, lambda line, headers, *exc: status.append(line))
        try:
            body = b"".join(chunks)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()  # fires request_finished, as a WSGI server does
        code = int(status[0].split()[0])
        return SimpleNamespace(status_code=code, content=body, json=lambda: json.loads(body))


def _search(client, query: str, mode: str) -> dict:
    response = client.get("/api/search/", {"q": query, "mode": mode})
    if response.status_code != 200:
        raise SystemExit(f"{mode} search answered {response.status_code}: {response.content[:300]!r}")
    return response.json()


def phase_measure(args: argparse.Namespace) -> dict:
    rss_start = proc_status()
    import django

    django.setup()
    from django.conf import settings

    from documents.models import Chunk
    from vectors.embedders import get_embedder
    from vectors.stores import get_vector_store

    t_open = time.perf_counter()
    store = get_vector_store()
    points = store.count()
    open_seconds = time.perf_counter() - t_open
    # The HNSW index as a serving process with the default settings has it: built by itself in
    # the background once QDRANT_EDGE_INDEX_THRESHOLD (default 20000) points lack it, so at 10k
    # chunks the store stays brute force. Built here and waited for, before timing (the setting
    # is 0 in this process so that no build starts during the timing). --index off: brute force.
    from vectors.stores.edge import DEFAULT_INDEX_THRESHOLD

    index: dict = {"mode": args.index, "threshold": DEFAULT_INDEX_THRESHOLD}
    if args.index == "on" and hasattr(store, "index_build_wait"):
        t_build = time.perf_counter()
        index["built_now"] = store.optimize(min_unindexed=DEFAULT_INDEX_THRESHOLD)
        if index["built_now"]:
            index["build_s"] = round(time.perf_counter() - t_build, 1)
            index["build"] = store.health().get("index_build")
    health = store.health()
    index["indexed_vectors"] = health.get("indexed_vectors")
    index["segments"] = health.get("segments")
    print(json.dumps({"index": index}), flush=True)
    # The state the app's background keyword-statistics task leaves after an ingestion: the GIN
    # pending list merged; and planner statistics, which a database copied from a template lacks
    # until autovacuum gets to it (without them one filtered plan took seconds).
    from django.db import connection

    from search.keyword_stats import keyword_index_flush

    keyword_index_flush()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    embedder = get_embedder()
    chunks = Chunk.objects.count()
    client, _ = _client_and_key()
    pg = PostgresCpu(args.db)
    queries = load_queries(args.queries)
    warm = load_queries(0)[-20:]
    for q in warm:  # warm-up: caches, lazy imports, first-run allocations
        embedder.embed_query(q)
        for mode in MODES:
            _search(client, q, mode)
    rss_warm = proc_status()

    wall: dict[str, list[float]] = {m: [] for m in (*MODES, "embed")}
    cpu: dict[str, list[float]] = {m: [] for m in (*MODES, "embed")}
    server: dict[str, list[float]] = {m: [] for m in MODES}
    counts: dict[str, list[int]] = {m: [] for m in MODES}
    kinds = ("embed", *MODES)
    load_before = os.getloadavg()
    pg.total()
    for i, q in enumerate(queries):
        order = kinds[i % 4 :] + kinds[: i % 4]  # rotate, so no kind always runs first or after another
        for kind in order:
            if i % 25 == 0:
                pg.sample()  # pick up new pooled backends (outside the timed window)
            db0 = pg.total(rescan=False)
            c0, t0 = time.process_time(), time.perf_counter()
            if kind == "embed":
                embedder.embed_query(q)
                body = None
            else:
                body = _search(client, q, kind)
            t1, c1 = time.perf_counter(), time.process_time()
            db1 = pg.total(rescan=False)
            wall[kind].append((t1 - t0) * 1000)
            cpu[kind].append((c1 - c0 + db1 - db0) * 1000)
            if body is not None:
                server[kind].append(body["took_ms"])
                counts[kind].append(body["count"])
    load_after = os.getloadavg()
    rss_end = proc_status()
    parts = breakdown(client, queries[: min(50, len(queries))], embedder, store)
    storage = storage_sizes(Path(settings.QDRANT_PATH))
    probe = payload_probe(store, embedder, queries[:30], depth=_depth(settings))
    result = {
        "chunks": chunks,
        "points": points,
        "store_open_s": round(open_seconds, 2),
        "vector_index": index,
        "queries": len(queries),
        "wall": {k: summary(v) for k, v in wall.items()},
        "cpu": {k: summary(v) for k, v in cpu.items()},
        "server_took_ms": {k: summary(v) for k, v in server.items()},
        "mean_result_count": {k: round(statistics.fmean(v), 1) for k, v in counts.items()},
        "rss_mb": {
            "before_django": round(rss_start["VmRSS"], 1),
            "after_warmup": round(rss_warm["VmRSS"], 1),
            "end": round(rss_end["VmRSS"], 1),
            "peak": round(rss_end["VmHWM"], 1),
        },
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "breakdown_wall_ms": parts,
        "storage_mb": storage,
        "vector_search_payload_probe": probe,
        "settings": {
            name: getattr(settings, name)
            for name in (
                "SEARCH_CANDIDATES",
                "SEARCH_MAX_PER_DOCUMENT",
                "SEARCH_KEYWORD_CANDIDATE_BUDGET",
                "EMBEDDING_RUNTIME",
                "EMBEDDING_BATCH_SIZE",
                "DB_POOL_MAX_SIZE",
            )
        },
    }
    result["goals"] = goals(result["wall"])
    result["goals_cpu"] = goals(result["cpu"])
    store.close()
    return result


def storage_sizes(qdrant_path: Path) -> dict:
    """On-disk size of the chunk table (with its indexes and TOAST), the documents, and the vector store."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_total_relation_size('documents_chunk'), pg_total_relation_size('documents_document'), "
            "pg_total_relation_size('vectors_embeddingcache'), pg_database_size(current_database())"
        )
        chunk, document, cache, database = cursor.fetchone()
    store = sum(f.stat().st_size for f in qdrant_path.rglob("*") if f.is_file())
    mb = 1024 * 1024
    return {
        "postgres_chunks": round(chunk / mb, 1),
        "postgres_documents": round(document / mb, 1),
        "postgres_embedding_cache": round(cache / mb, 1),
        "postgres_database": round(database / mb, 1),
        "vector_store": round(store / mb, 1),
    }


def _depth(settings) -> int:
    """The candidate depth chunk_search asks each side for with the API's defaults (limit 10, offset 0)."""
    depth = max(settings.SEARCH_CANDIDATES, 10)
    return min(depth * 2, 2000) if settings.SEARCH_MAX_PER_DOCUMENT else depth


def breakdown(client, queries: list[str], embedder, store) -> dict:
    """Mean wall ms per request spent in each part of the search path (a separate pass with timers).

    The timers wrap module attributes, so they see what the view calls; in hybrid mode the
    semantic side runs in its own thread, so parts can add up to more than the request.
    """
    import functools

    import search.api
    import search.keyword
    import search.selectors
    from accounts.auth import ApiKeyAuthentication

    spent: dict[str, float] = {}

    def wrap(owner, name: str, label: str):
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*a, **kw):
            started = time.perf_counter()
            try:
                return original(*a, **kw)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - started

        setattr(owner, name, timed)
        return owner, name, original

    patches = [
        wrap(ApiKeyAuthentication, "authenticate", "api key authentication"),
        wrap(search.api, "search_params", "parameter validation"),
        wrap(search.selectors, "keyword_candidates", "keyword candidates (SQL)"),
        wrap(search.selectors, "semantic_candidates", "semantic candidates"),
        wrap(embedder, "embed_query", "  of which query embedding"),
        wrap(store, "search", "  of which vector search"),
        wrap(search.keyword, "keyword_query_prepare", "  of which query lexemes and statistics (SQL)"),
        wrap(search.selectors, "_page", "hydration + snippets (SQL)"),
    ]
    out = {}
    try:
        for mode in MODES:
            spent.clear()
            started = time.perf_counter()
            for q in queries:
                _search(client, q, mode)
            total = (time.perf_counter() - started) * 1000 / len(queries)
            parts = {k: round(v * 1000 / len(queries), 2) for k, v in spent.items()}
            parts["request total"] = round(total, 2)
            out[mode] = parts
    finally:
        for owner, name, original in patches:
            if isinstance(owner, type | types.ModuleType):
                setattr(owner, name, original)
            else:  # an instance: drop the shadowing attribute, the class method shows again
                delattr(owner, name)
    return out


def payload_probe(store, embedder, queries: list[str], *, depth: int) -> dict | None:
    """Edge only: the app's vector search (all payload fields) vs the same query returning only document_id."""
    shard = getattr(store, "_shard", None)
    if shard is None:
        return None
    from qdrant_edge import PayloadSelector, Query, QueryRequest

    vectors = [embedder.embed_query(q) for q in queries]
    timings: dict[str, list[float]] = {"app search (all payload)": [], "document_id only": [], "no payload": []}
    for vector in vectors:
        started = time.perf_counter()
        store.search(vector, limit=depth)
        timings["app search (all payload)"].append((time.perf_counter() - started) * 1000)
        for label, with_payload in (
            ("document_id only", PayloadSelector.Include(["document_id"])),
            ("no payload", False),
        ):
            request = QueryRequest(
                limit=depth, query=Query.Nearest(vector.tolist()), with_payload=with_payload, with_vector=False
            )
            started = time.perf_counter()
            points = shard.query(request)
            [(str(p.id), p.payload) for p in points]
            timings[label].append((time.perf_counter() - started) * 1000)
    return {"limit": depth, **{k: summary(v) for k, v in timings.items()}}


def goals(stats: dict) -> dict:
    embed = stats["embed"]["p50_ms"]
    return {
        "hybrid_p50_ms": stats["hybrid"]["p50_ms"],
        "hybrid_limit_ms (2 x embed + 10)": round(2 * embed + 10, 2),
        "hybrid_met": stats["hybrid"]["p50_ms"] <= 2 * embed + 10,
        "keyword_p50_ms": stats["keyword"]["p50_ms"],
        "keyword_met (< 30 ms)": stats["keyword"]["p50_ms"] < 30,
        "semantic_p50_ms": stats["semantic"]["p50_ms"],
        "semantic_limit_ms (1.5 x embed)": round(1.5 * embed, 2),
        "semantic_met": stats["semantic"]["p50_ms"] <= 1.5 * embed,
    }


# --- phase: soak ----------------------------------------------------------------------------------


def phase_soak(args: argparse.Namespace) -> dict:
    import django

    django.setup()
    import random

    from documents.models import Chunk, Source
    from documents.services import document_delete, document_ingest
    from documents.signals import changes_batched
    from vectors.embedders import get_embedder
    from vectors.stores import get_vector_store
    from vectors.sync import vectors_sync_pending

    get_vector_store()
    get_embedder()
    _, key = _client_and_key()
    client = WsgiClient(key)
    queries = load_queries(0)
    corpus = [json.loads(line) for line in open(DATASET / "corpus.jsonl")]
    source, _ = Source.objects.get_or_create(name="soak", defaults={"kind": Source.Kind.UPLOAD})
    rng = random.Random(7)
    for q in queries[-10:]:
        for mode in MODES:
            _search(client, q, mode)

    run_id = f"{int(time.time())}-{os.getpid()}"  # every soak ingests new documents, never re-ingests

    live: list = []  # --soak-churn: this soak's documents still stored, oldest first

    def ingest(number: int) -> None:
        doc = rng.choice(corpus)
        with changes_batched(embed_here=True):
            result = document_ingest(
                source=source,
                title=f"{doc['title']} (soak {number})",
                url=f"{SOAK_URL}{run_id}/{doc['_id']}/{number}",
                text=doc["text"] or doc["title"],
                mime="text/plain",
            )
        vectors_sync_pending()
        if args.soak_churn:
            # Keep the corpus the same size: delete the document ingested SOAK_CHURN_KEEP ingests
            # ago, rows and points (the points directly, as the worker's deletion task would).
            live.append(result.document)
            if len(live) > SOAK_CHURN_KEEP:
                old = live.pop(0)
                chunk_ids = [str(pk) for pk in old.chunks.values_list("pk", flat=True)]
                document_delete(document=old)
                get_vector_store().delete(chunk_ids)

    ingest(0)  # warm-up of the ingest path too: parsing, chunking, the sync's first batch
    ingest(-1)

    trace = HeapTrace() if args.soak_trace else None
    samples: list[tuple[float, float]] = []
    split: list[tuple[float, float, float]] = []  # (seconds, anonymous MB, file-backed MB)

    def sample() -> None:
        # Between operations, never during one: a sample taken while an ingest embeds holds the
        # embedder's working memory (up to ~70 MB for a moment), which hides the trend; the
        # peak is reported apart (VmHWM).
        now = round(time.perf_counter() - t_start, 1)
        samples.append((now, round(proc_status()["VmRSS"], 1)))
        anon, file = rss_split()
        split.append((now, anon, file))

    ops = {m: [] for m in (*MODES, "ingest")}
    n = 0
    chunks_before = Chunk.objects.count()
    t_start = time.perf_counter()
    sample()
    next_sample = args.soak_interval
    while time.perf_counter() - t_start < args.soak_seconds:
        if time.perf_counter() - t_start >= next_sample:
            sample()
            next_sample += args.soak_interval
        n += 1
        t0 = time.perf_counter()
        if args.soak_ingest_every and n % args.soak_ingest_every == 0:
            ingest(n)
            ops["ingest"].append((time.perf_counter() - t0) * 1000)
        else:
            mode = MODES[n % 3]
            _search(client, rng.choice(queries), mode)
            ops[mode].append((time.perf_counter() - t0) * 1000)
    sample()
    rss = [r for _, r in samples]
    half = samples[len(samples) // 2 :]
    diagnosis = trace.report() if trace else None
    return {
        "seconds": round(time.perf_counter() - t_start, 1),
        "interval_s": args.soak_interval,
        "ingest_every": args.soak_ingest_every,
        "churn": bool(args.soak_churn),
        "operations": {k: len(v) for k, v in ops.items()},
        "latency": {k: summary(v) for k, v in ops.items() if v},
        "chunks_added": Chunk.objects.count() - chunks_before,
        "rss_start_mb": rss[0],
        "rss_end_mb": rss[-1],
        "rss_max_mb": max(rss),
        # The sampling misses short peaks (an ingest's embedding batch): VmHWM does not.
        "rss_peak_mb": round(proc_status()["VmHWM"], 1),
        "slope_mb_per_min": slope(samples),
        "slope_second_half_mb_per_min": slope(half),
        "samples": samples,
        # Anonymous memory is the heap (a leak shows there); file-backed is mapped files such as
        # the vector store's segments, which fill up to their size on disk as queries touch them.
        "rss_anon_file_samples": split,
        "anon_slope_mb_per_min": slope([(t, a) for t, a, _ in split]),
        "anon_slope_second_half_mb_per_min": slope([(t, a) for t, a, _ in split[len(split) // 2 :]]),
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        **({"diagnosis": diagnosis} if diagnosis else {}),
    }


class HeapTrace:
    """--soak-trace: what grew between the start and the end of the soak, to tell a leak from noise.

    - Python heap: tracemalloc snapshots (started after the warm-up) diffed by source line.
    - Live objects: gc.get_objects() counted by type, start vs end.
    - glibc: anonymous RSS before and after malloc_trim(0) at the end. What the trim gives back
      was free memory kept by the allocator (fragmentation, not a leak); what stays is in use.
    tracemalloc slows Python allocations and its own traces add to RSS: use it to find the
    cause, not for the soak's reported numbers.
    """

    def __init__(self) -> None:
        import gc
        import tracemalloc

        tracemalloc.start(8)
        gc.collect()
        self.types = self._type_counts()
        self.snapshot = tracemalloc.take_snapshot()
        self.anon_start = rss_split()[0]

    @staticmethod
    def _type_counts() -> dict[str, int]:
        import collections
        import gc

        return dict(collections.Counter(type(o).__qualname__ for o in gc.get_objects()))

    def report(self) -> dict:
        import ctypes
        import gc
        import tracemalloc

        gc.collect()
        end = tracemalloc.take_snapshot()
        filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
        by_line = end.filter_traces(filters).compare_to(self.snapshot.filter_traces(filters), "lineno")
        by_trace = end.filter_traces(filters).compare_to(self.snapshot.filter_traces(filters), "traceback")
        traced_now, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        types = self._type_counts()
        grown = sorted(((types.get(k, 0) - self.types.get(k, 0), k) for k in types | self.types), reverse=True)
        anon_before_trim = rss_split()[0]
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        anon_after_trim = rss_split()[0]
        return {
            "python_heap_growth_mb": round(sum(d.size_diff for d in by_line) / 2**20, 2),
            "python_traced_mb": round(traced_now / 2**20, 1),
            "top_lines": [
                {"kb": round(d.size_diff / 1024, 1), "count": d.count_diff, "where": str(d.traceback[0])}
                for d in by_line[:15]
            ],
            "top_tracebacks": [
                {"kb": round(d.size_diff / 1024, 1), "count": d.count_diff, "stack": [str(f) for f in d.traceback]}
                for d in by_trace[:5]
            ],
            "object_count_growth": {k: n for n, k in grown[:15] if n > 0},
            "anon_mb": {"start": self.anon_start, "end": anon_before_trim, "after_malloc_trim": anon_after_trim},
        }


def rss_split() -> tuple[float, float]:
    """(RssAnon, RssFile) of this process in MB."""
    out = proc_status("RssAnon", "RssFile")
    return round(out.get("RssAnon", 0.0), 1), round(out.get("RssFile", 0.0), 1)


def slope(samples: list[tuple[float, float]]) -> float | None:
    if len(samples) < 3:
        return None
    xs = [t / 60 for t, _ in samples]
    ys = [r for _, r in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return round(sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den, 3) if den else None


# --- report ---------------------------------------------------------------------------------------


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    sizes = sorted(report["sizes"].values(), key=lambda r: r["chunks"])
    xs = [r["chunks"] for r in sizes]
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    styles = {"keyword": "o-", "semantic": "s-", "hybrid": "^-", "embed": "x--"}
    labels = {"embed": "query embedding alone"}
    for kind in (*MODES, "embed"):
        p50 = [r["wall"][kind]["p50_ms"] for r in sizes]
        p95 = [r["wall"][kind]["p95_ms"] for r in sizes]
        ax.errorbar(
            xs,
            p50,
            yerr=[[0] * len(xs), [b - a for a, b in zip(p50, p95, strict=True)]],
            fmt=styles[kind],
            capsize=4,
            label=f"{labels.get(kind, kind)} (p50, bar to p95)",
        )
    base = sorted(report.get("baseline", {}).values(), key=lambda r: r["chunks"])
    for kind in ("keyword", "hybrid") if base else ():
        ax.plot(
            [r["chunks"] for r in base],
            [r["wall"][kind]["p50_ms"] for r in base],
            ":",
            color="grey",
            alpha=0.8,
            label=f"{kind} p50 before the fixes",
        )
    ax.set_xscale("log")
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{x / 1000:.0f}k" for x in xs])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("chunks indexed")
    ax.set_ylabel("latency per request, ms (wall)")
    ax.set_title("GET /api/search/ latency vs corpus size (2 shared CPU cores)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def markdown(report: dict) -> str:
    sizes = sorted(report["sizes"].values(), key=lambda r: r["chunks"])
    lines = [
        "# Search latency at scale (10k / 30k / 100k chunks)",
        "",
        "`GET /api/search/` through Django's test `Client` in the measuring process (full middleware, API-key "
        "auth, DRF, `chunk_search`, hydration, snippets, JSON; no socket), DJANGO_ENV=production settings, embedded "
        "qdrant-edge store, onnx-int8 embedder, default search settings (limit 10, candidates 100, one chunk per "
        "document). Beside each query's three requests, `embed_query` alone is timed in the same process, in "
        "rotating order. Corpus: the real SciFact chunks from the ingest pipeline plus synthetic excerpt "
        "documents (real SciFact sentences, vectors derived from real ones; see the script's docstring). "
        "Script: `bench/search_scale_bench.py`; plot: `search_latency.png`.",
        "",
        "Wall time, ms (p50 / p95):",
        "",
        "| chunks | query embedding alone | keyword | semantic | hybrid | load avg (1 min) |",
        "|---|---|---|---|---|---|",
    ]
    for r in sizes:
        w = r["wall"]
        lines.append(
            f"| {r['chunks']} | {w['embed']['p50_ms']} / {w['embed']['p95_ms']} | {w['keyword']['p50_ms']} / "
            f"{w['keyword']['p95_ms']} | {w['semantic']['p50_ms']} / {w['semantic']['p95_ms']} | "
            f"{w['hybrid']['p50_ms']} / {w['hybrid']['p95_ms']} | {r['load_average_before'][0]}-"
            f"{r['load_average_after'][0]} |"
        )
    base = sorted(report.get("baseline", {}).values(), key=lambda r: r["chunks"])
    if base:
        lines += [
            "",
            f"Before the fixes (commit {report.get('commits', {}).get('baseline', '?')}, same corpora, measured "
            "separately), wall ms p50 / p95 [CPU p50]:",
            "",
            "| chunks | query embedding alone | keyword | semantic | hybrid | load avg (1 min) |",
            "|---|---|---|---|---|---|",
        ]
        for r in base:
            w, c = r["wall"], r["cpu"]
            cells = " | ".join(f"{w[k]['p50_ms']} / {w[k]['p95_ms']} [{c[k]['p50_ms']}]" for k in ("embed", *MODES))
            lines.append(f"| {r['chunks']} | {cells} | {r['load_average_before'][0]}-{r['load_average_after'][0]} |")
    lines += [
        "",
        "CPU time, ms (p50 / p95): this process (all threads) plus its PostgreSQL backends, i.e. what a request "
        "costs on an otherwise idle machine:",
        "",
        "| chunks | query embedding alone | keyword | semantic | hybrid |",
        "|---|---|---|---|---|",
    ]
    for r in sizes:
        c = r["cpu"]
        lines.append(
            f"| {r['chunks']} | {c['embed']['p50_ms']} / {c['embed']['p95_ms']} | {c['keyword']['p50_ms']} / "
            f"{c['keyword']['p95_ms']} | {c['semantic']['p50_ms']} / {c['semantic']['p95_ms']} | "
            f"{c['hybrid']['p50_ms']} / {c['hybrid']['p95_ms']} |"
        )
    lines += [
        "",
        "Goals (issue 9) at each size, p50 wall (CPU in brackets):",
        "",
        "| chunks | hybrid <= 2 x embed + 10 ms | keyword < 30 ms | semantic <= 1.5 x embed |",
        "|---|---|---|---|",
    ]

    def verdict(ok: bool) -> str:
        return "met" if ok else "**not met**"

    for r in sizes:
        g, gc = r["goals"], r["goals_cpu"]
        lines.append(
            f"| {r['chunks']} | {g['hybrid_p50_ms']} vs {g['hybrid_limit_ms (2 x embed + 10)']}: "
            f"{verdict(g['hybrid_met'])} [{gc['hybrid_p50_ms']} vs {gc['hybrid_limit_ms (2 x embed + 10)']}: "
            f"{verdict(gc['hybrid_met'])}] | {g['keyword_p50_ms']}: {verdict(g['keyword_met (< 30 ms)'])} "
            f"[{gc['keyword_p50_ms']}: {verdict(gc['keyword_met (< 30 ms)'])}] | {g['semantic_p50_ms']} vs "
            f"{g['semantic_limit_ms (1.5 x embed)']}: {verdict(g['semantic_met'])} [{gc['semantic_p50_ms']} vs "
            f"{gc['semantic_limit_ms (1.5 x embed)']}: {verdict(gc['semantic_met'])}] |"
        )
    lines += [
        "",
        "Serving process memory (RSS, MB) and corpus:",
        "",
        "| chunks | points | store open s | RSS after warm-up | RSS end | peak (VmHWM) | PostgreSQL MB (chunks / "
        "database) | vector store MB | queries | mean results |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sizes:
        m = r["rss_mb"]
        st = r.get("storage_mb", {})
        counts = ", ".join(f"{k} {v}" for k, v in r["mean_result_count"].items())
        lines.append(
            f"| {r['chunks']} | {r['points']} | {r['store_open_s']} | {m['after_warmup']} | {m['end']} | {m['peak']} | "
            f"{st.get('postgres_chunks')} / {st.get('postgres_database')} | {st.get('vector_store')} | "
            f"{r['queries']} x 3 modes | {counts} |"
        )
    indexed = [r for r in sizes if r.get("vector_index")]
    if indexed:

        def index_cell(r: dict) -> str:
            vi = r["vector_index"]
            if not vi.get("indexed_vectors"):
                return f"{r['chunks']}: brute force (fewer than the {vi.get('threshold')} unindexed points that start a build)"
            build = vi.get("build") or {}
            when = "built for this run" if vi.get("built_now") else "built by an earlier run"
            cell = f"{r['chunks']}: HNSW over {vi['indexed_vectors']} points ({when}"
            if build.get("seconds") is not None:
                cell += (
                    f": {build['seconds']} s in the child process, shard copy {build.get('copy_seconds')} s and "
                    f"swap {build.get('swap_seconds')} s under the store's lock"
                )
                if build.get("load_average"):
                    cell += f", load average ~{build['load_average']}"
            return cell + ")"

        lines += ["", "Vector index at measurement time: " + "; ".join(index_cell(r) for r in indexed) + "."]
    largest = sizes[-1] if sizes else None
    if largest and largest.get("breakdown_wall_ms"):
        labels = list(dict.fromkeys(k for parts in largest["breakdown_wall_ms"].values() for k in parts))
        lines += [
            "",
            f"Where a request's time goes at {largest['chunks']} chunks (mean wall ms per request, a separate pass of "
            "50 queries with timers around each part; in hybrid the semantic side runs in its own thread):",
            "",
            "| part | " + " | ".join(MODES) + " |",
            "|---|" + "---|" * len(MODES),
        ]
        for label in labels:
            cells = " | ".join(str(largest["breakdown_wall_ms"][m].get(label, "")) for m in MODES)
            lines.append(f"| {label.strip()} | {cells} |")
        probe = largest.get("vector_search_payload_probe")
        if probe:
            lines += [
                "",
                f"Vector search alone at {largest['chunks']} points, limit {probe['limit']} (the depth chunk_search asks "
                f"for), p50 / p95 ms: store.search with every payload field (as the app did before c547fa4) "
                f"{probe['app search (all payload)']['p50_ms']} / {probe['app search (all payload)']['p95_ms']}; "
                f"only document_id (PayloadSelector.Include, what the app asks for now; raw shard call) "
                f"{probe['document_id only']['p50_ms']} / "
                f"{probe['document_id only']['p95_ms']}; no payload {probe['no payload']['p50_ms']} / "
                f"{probe['no payload']['p95_ms']}.",
            ]
    builds = report.get("builds", {})
    if builds:
        lines += [
            "",
            "Corpus builds (synthetic chunks added per size): "
            + "; ".join(
                f"{k}: +{v['added']} in {v['seconds']} s" for k, v in sorted(builds.items(), key=lambda kv: int(kv[0]))
            )
            + ".",
        ]
    soaks = [(key, report[key]) for key in ("soak", "soak_churn", "soak_search_only") if report.get(key)]
    if soaks:
        lines += ["", f"## Memory under load ({soaks[0][1]['chunks_at_start']} chunks)", ""]
    for key, soak in soaks:
        ops = ", ".join(f"{k} {v}" for k, v in soak["operations"].items() if v)
        lat = "; ".join(f"{k} p50 {v['p50_ms']} ms" for k, v in soak["latency"].items())
        kind = {
            "soak_search_only": "searches only",
            "soak_churn": "mixed load at a constant corpus size: searches of every mode, ingests and deletions "
            f"(each ingest deletes the document ingested {SOAK_CHURN_KEEP} ingests before)",
        }.get(key, "mixed load: searches of every mode and ingests")
        rss = [r for _, r in soak["samples"]]
        after_warmup = rss[min(3, len(rss) - 1)]
        lines += [
            f"- **{kind}**: {soak['seconds']} s of back-to-back operations in one serving process ({ops}; {lat}; "
            f"{soak['chunks_added']} chunks added), RSS sampled every {soak['interval_s']} s: start "
            f"{soak['rss_start_mb']} MB, {after_warmup} MB after 30 s, end {soak['rss_end_mb']} MB, max "
            f"{soak['rss_max_mb']} MB (peak {soak.get('rss_peak_mb', '?')} MB); slope {soak['slope_mb_per_min']} "
            "MB/min over the run, "
            f"{soak['slope_second_half_mb_per_min']} MB/min over its second half. Load average at the end: "
            f"{soak['load_average_end'][0]}. Samples (MB): {', '.join(str(r) for r in rss)}.",
        ]
        split = soak.get("rss_anon_file_samples")
        if split:
            lines[-1] += (
                f" Of which anonymous (heap): {split[0][1]} -> {split[-1][1]} MB, slope "
                f"{soak['anon_slope_mb_per_min']} MB/min ({soak['anon_slope_second_half_mb_per_min']} over the second "
                f"half); file-backed (mapped store segments and libraries): {split[0][2]} -> {split[-1][2]} MB."
            )
    lines += [
        "",
        f"Versions: {json.dumps(report.get('versions', {}))}; CPU: {report.get('cpu', '')}; "
        f"measured {report.get('measured_at', '')}. Absolute times are inflated by the other jobs on these 2 cores "
        "(load average shown); the ratios to the query embedding, measured side by side, are the robust figures.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,30000,100000")
    parser.add_argument("--phases", default="build,measure", help="build, measure and/or soak")
    parser.add_argument("--queries", type=int, default=200, help="SciFact claims per size (x 3 modes + embed)")
    parser.add_argument("--soak-seconds", type=float, default=600)
    parser.add_argument("--soak-interval", type=float, default=10)
    parser.add_argument(
        "--soak-ingest-every", type=int, default=20, help="every Nth soak operation ingests (0: searches only)"
    )
    parser.add_argument(
        "--soak-churn",
        action="store_true",
        help="each soak ingest also deletes an earlier soak document: mixed writes at a constant corpus size",
    )
    parser.add_argument("--soak-key", default="soak", help="where the soak's result goes in the JSON")
    parser.add_argument(
        "--soak-trace", action="store_true", help="diagnose growth: tracemalloc, object counts, malloc_trim"
    )
    parser.add_argument("--base-db", help="database left by `ingest_bench.py --keep` (the real chunks)")
    parser.add_argument("--base-data-dir", type=Path, help="its data folder (the vector store)")
    parser.add_argument("--reuse", action="store_true", help="keep growing the corpus of an earlier run")
    parser.add_argument("--db", default="ragsite_perf_search")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB_URL))
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "ragsite-search-scale")
    parser.add_argument("--runtime", default="onnx-int8")
    parser.add_argument(
        "--index",
        choices=("on", "off"),
        default="on",
        help="on: build the edge HNSW index before measuring (as the server does by itself); off: brute force",
    )
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument(
        "--results-key",
        default="sizes",
        help="where measurements go in the JSON: sizes (this code) or baseline (a run of the code before a fix)",
    )
    parser.add_argument("--commit", default="", help="the commit measured (recorded with --results-key)")
    parser.add_argument("--child-phase", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child_phase:
        phase = {"build": phase_build, "measure": phase_measure, "soak": phase_soak}[args.child_phase]
        Path(args.child_out).write_text(json.dumps(phase(args)))
        return

    if not args.reuse:
        if not (args.base_db and args.base_data_dir):
            raise SystemExit("give --base-db and --base-data-dir (from ingest_bench.py --keep), or --reuse")
        recreate_database(args.database_url, args.db, template=args.base_db)
        shutil.rmtree(args.work_dir, ignore_errors=True)
        args.work_dir.mkdir(parents=True)
        for name in ("qdrant", "models", "secret_key"):
            source = args.base_data_dir / name
            if source.is_dir():
                shutil.copytree(source, args.work_dir / name)
            elif source.exists():
                shutil.copy2(source, args.work_dir / name)

    def snapshot_args(size: int) -> argparse.Namespace:
        snap = argparse.Namespace(**vars(args))
        snap.db = f"{args.db}_{size}"
        snap.work_dir = Path(f"{args.work_dir}_{size}")
        return snap

    def snapshot(size: int) -> None:
        """Freeze the corpus at this size (database + store), so it can be measured again later."""
        snap = snapshot_args(size)
        recreate_database(args.database_url, snap.db, template=args.db)
        shutil.rmtree(snap.work_dir, ignore_errors=True)
        snap.work_dir.mkdir(parents=True)
        shutil.copytree(args.work_dir / "qdrant", snap.work_dir / "qdrant")
        (snap.work_dir / "qdrant" / "owner.lock").unlink(missing_ok=True)
        for name in ("models", "secret_key"):
            if (args.work_dir / name).exists():
                (snap.work_dir / name).symlink_to((args.work_dir / name).resolve())

    path = args.results_dir / "search_scale.json"
    report = json.loads(path.read_text()) if path.exists() else {}
    report.setdefault("sizes", {})
    report.setdefault("builds", {})
    report.setdefault(args.results_key, {})
    if args.commit:
        report.setdefault("commits", {})[args.results_key] = args.commit
    phases = [p.strip() for p in args.phases.split(",")]
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    for size in sizes:
        if "build" in phases:
            build = run_child(args, "build", target=size)
            print(json.dumps(build), flush=True)
            report["builds"][str(size)] = build
            snapshot(size)
        if "measure" in phases:
            measured = run_child(snapshot_args(size), "measure")
            print(json.dumps({k: measured[k] for k in ("chunks", "wall", "cpu", "goals", "rss_mb")}), flush=True)
            report[args.results_key][str(size)] = measured
    if "soak" in phases:
        soak = run_child(
            args,
            "soak",
            soak_interval=args.soak_interval,
            soak_ingest_every=args.soak_ingest_every,
            soak_trace=args.soak_trace,
            soak_churn=args.soak_churn,
        )
        soak["chunks_at_start"] = max((r["chunks"] for r in report["sizes"].values()), default=0)
        print(json.dumps({k: v for k, v in soak.items() if k != "samples"}), flush=True)
        report[args.soak_key] = soak
    report["versions"] = versions("django", "onnxruntime", "qdrant-edge-py", "psycopg", "matplotlib")
    report["cpu"] = (
        next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
        + f" x{os.cpu_count()}"
    )
    report["measured_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
    if not args.no_write:
        path.write_text(json.dumps(report, indent=2) + "\n")
        (args.results_dir / "search_scale.md").write_text(markdown(report))
        if report["sizes"]:
            plot(report, args.results_dir / "search_latency.png")
        print("wrote", path)


if __name__ == "__main__":
    main()
