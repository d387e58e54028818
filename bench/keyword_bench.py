"""Keyword search benchmark: ranking quality on SciFact (train) and latency at 5k and 100k chunks.

Needs a PostgreSQL database of its own (it loads the corpus into it):

    createdb -h 127.0.0.1 -U postgres ragsite_kw
    export DATABASE_URL=postgres://postgres@127.0.0.1:5432/ragsite_kw
    .venv/bin/python manage.py migrate --skip-checks
    .venv/bin/python bench/keyword_bench.py --scale 5k              # quality of every config + latency

    createdb -h 127.0.0.1 -U postgres ragsite_kw100k               # then, with DATABASE_URL on it:
    .venv/bin/python bench/keyword_bench.py --scale 100k --copies 20 # 103,660 chunks: latency (+ check)

The corpus is loaded through the ORM as one chunk per SciFact document (context = title, text =
abstract; no embeddings needed). ``--copies 20`` loads it 20 times as distinct sources and
documents: every document frequency grows 20x, so candidate sets are as large as a 100k-chunk
corpus with SciFact's vocabulary gets, a pessimistic stand-in for real corpora (whose vocabulary
grows with size, keeping rare words rare). Because every copy is identical, quality at 100k is
checked after collapsing copies to one document (nDCG@10 over the first 10 distinct documents);
the effect of candidate pruning at 100k is measured exactly at 5k with the budget divided by 20
("pruning as at 100k" rows), since scores and candidate choices then match one for one.

Configurations: the baseline (``websearch_to_tsquery`` + ``ts_rank``, what the djangoproject.com
docs search does), OR of lexemes + ``ts_rank`` (recall without idf), and ``keyword_search`` (BM25)
with several k1 / b / context-weight / candidate-budget settings. Latency is per query of the
Python call (limit 100 unless stated), after one warm-up pass of 200 queries, on whatever
PostgreSQL ``DATABASE_URL`` names; results record the server's shared_buffers, the chunk vector's
storage and the machine's load average. Two figures: wall time, and CPU time (this thread plus
the database backend, read from /proc/PID/schedstat when the server runs on this machine), which
is what the query costs on an idle core: the committed numbers were taken on 2 cores shared with
other jobs (load average ~8), so wall time there is inflated ~2-3x.

Writes bench/results/keyword.json (merged per scale) and bench/results/keyword.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragsite.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")

import django  # noqa: E402

django.setup()

from django.contrib.postgres.search import SearchQuery, SearchRank  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.models import F  # noqa: E402
from django.test import override_settings  # noqa: E402
from harness import percentile, score  # noqa: E402

from documents.models import SEARCH_CONFIG, Chunk, Document, Source  # noqa: E402
from search.keyword import keyword_search  # noqa: E402
from search.keyword_stats import keyword_stats_refresh  # noqa: E402
from search.snippets import keyword_snippets  # noqa: E402

DATASET = ROOT.parent / "shared" / "datasets" / "scifact-train"
RESULTS = ROOT / "bench" / "results"

BM25 = {"SEARCH_BM25_K1": 0.9, "SEARCH_BM25_B": 0.4, "SEARCH_BM25_CONTEXT_WEIGHT": 1.0}
DEFAULT_100K = "bm25 k1=0.9 b=0.4 ctx=1 budget=3000 (default)"
UNPRUNED = {"SEARCH_KEYWORD_CANDIDATE_BUDGET": 10**9, "SEARCH_KEYWORD_MAX_CANDIDATES": 10**9}


def configs_5k(copies_at_scale: int = 20) -> dict[str, dict]:
    bm = {
        "bm25 k1=0.9 b=0.4 ctx=1 (exact)": {**BM25, **UNPRUNED},
        "bm25 k1=0.9 b=0.4 ctx=2 (exact)": {**BM25, "SEARCH_BM25_CONTEXT_WEIGHT": 2.0, **UNPRUNED},
        "bm25 k1=1.2 b=0.75 ctx=1 (exact)": {**BM25, "SEARCH_BM25_K1": 1.2, "SEARCH_BM25_B": 0.75, **UNPRUNED},
        "bm25 k1=1.2 b=0.75 ctx=2 (exact)": {
            **BM25,
            "SEARCH_BM25_K1": 1.2,
            "SEARCH_BM25_B": 0.75,
            "SEARCH_BM25_CONTEXT_WEIGHT": 2.0,
            **UNPRUNED,
        },
        "bm25 k1=0.9 b=0.4 ctx=1 budget=3000 (default)": {**BM25, "SEARCH_KEYWORD_CANDIDATE_BUDGET": 3000},
    }
    for budget in (8000, 4000, 3000, 2000):
        bm[f"bm25 default, pruning as at 100k: budget {budget}/{copies_at_scale}"] = {
            **BM25,
            "SEARCH_KEYWORD_CANDIDATE_BUDGET": budget // copies_at_scale,
        }
    return bm


def configs_100k() -> dict[str, dict]:
    return {
        DEFAULT_100K: {**BM25, "SEARCH_KEYWORD_CANDIDATE_BUDGET": 3000},
        "bm25 default, budget=2000": {**BM25, "SEARCH_KEYWORD_CANDIDATE_BUDGET": 2000},
        "bm25 default, budget=4000": {**BM25, "SEARCH_KEYWORD_CANDIDATE_BUDGET": 4000},
        "bm25 default, budget=8000": {**BM25, "SEARCH_KEYWORD_CANDIDATE_BUDGET": 8000},
        "bm25 default, ctx=2": {**BM25, "SEARCH_BM25_CONTEXT_WEIGHT": 2.0, "SEARCH_KEYWORD_CANDIDATE_BUDGET": 3000},
    }


# --- Data -------------------------------------------------------------------------------------


def load_dataset(dataset: Path):
    """Corpus rows (with their ``_id``), judged train queries and qrels, via the app's BEIR loader."""
    from search.evaluation import load_dataset as load_beir

    loaded = load_beir(dataset, "train")
    corpus = [{"_id": doc_id, **doc} for doc_id, doc in loaded.corpus.items()]
    return corpus, loaded.queries, loaded.qrels


def load_corpus(corpus: list[dict], copies: int) -> None:
    for copy in range(copies):
        name = "scifact-train" if copy == 0 else f"scifact-train-copy{copy}"
        if Source.objects.filter(name=name).exists():
            continue
        source = Source.objects.create(name=name, kind=Source.Kind.API)
        documents = Document.objects.bulk_create(
            [
                Document(
                    source=source,
                    title=d["title"],
                    text=d["text"],
                    metadata={"beir_id": d["_id"], "copy": copy},
                    content_hash=hashlib.sha256(d["text"].encode()).hexdigest(),
                )
                for d in corpus
            ],
            batch_size=1000,
        )
        Chunk.objects.bulk_create(
            [
                Chunk(
                    document=document,
                    ordinal=0,
                    context=d["title"],
                    text=d["text"],
                    token_count=len(d["text"].split()),
                    char_end=len(d["text"]),
                    content_hash=hashlib.sha256(d["text"].encode()).hexdigest(),
                )
                for document, d in zip(documents, corpus, strict=True)
            ],
            batch_size=1000,
        )
        print(f"loaded copy {copy + 1}/{copies}", flush=True)


def chunk_to_doc() -> dict[str, str]:
    rows = Chunk.objects.values_list("id", "document__metadata__beir_id")
    return {str(pk): beir for pk, beir in rows}


# --- Rankers ----------------------------------------------------------------------------------


def rank_websearch(query: str, limit: int) -> list[str]:
    q = SearchQuery(query, search_type="websearch", config=SEARCH_CONFIG)
    rows = (
        Chunk.objects.filter(search_vector=q)
        .annotate(rank=SearchRank(F("search_vector"), q))
        .order_by("-rank", "id")
        .values_list("id", flat=True)[:limit]
    )
    return [str(pk) for pk in rows]


def rank_or_tsrank(query: str, limit: int) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH q AS (SELECT coalesce(string_agg('''' || replace(replace(lexeme, '\\', '\\\\'), '''', '''''')
                                                  || '''', ' | '), '')::tsquery AS q
                       FROM unnest(to_tsvector(%(config)s::regconfig, %(text)s)))
            SELECT c.id FROM documents_chunk c, q WHERE c.search_vector @@ q.q
            ORDER BY ts_rank(c.search_vector, q.q) DESC, c.id LIMIT %(limit)s
            """,
            {"config": SEARCH_CONFIG, "text": query, "limit": limit},
        )
        return [str(row[0]) for row in cursor.fetchall()]


def rank_bm25(query: str, limit: int) -> list[str]:
    return [hit.chunk_id for hit in keyword_search(query, limit=limit, filters=None)]


# --- Metrics ----------------------------------------------------------------------------------


_backend_pid: list[int] = []


def backend_cpu_ns() -> int:
    """CPU time used so far by this connection's PostgreSQL backend (Linux schedstat, ns)."""
    if not _backend_pid:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            _backend_pid.append(cursor.fetchone()[0])
    pid = _backend_pid[0]
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0  # server on another machine: CPU time is not measurable from here


def evaluate(name, ranker, queries, qrels, mapping, *, limit, collapse, warmup=True) -> dict:
    if warmup:
        for text in list(queries.values())[:200]:
            ranker(text, limit)
    rankings, times, cpu_times = {}, [], []
    backend_cpu_ns()  # opens the connection before the first timed query
    for qid, text in queries.items():
        cpu_before = backend_cpu_ns() + time.thread_time_ns()
        start = time.perf_counter()
        ranked_chunks = ranker(text, limit)
        times.append((time.perf_counter() - start) * 1000)
        cpu_times.append((backend_cpu_ns() + time.thread_time_ns() - cpu_before) / 1e6)
        docs: list[str] = []
        seen: set[str] = set()
        for chunk_id in ranked_chunks:
            doc = mapping[chunk_id]
            if collapse and doc in seen:
                continue
            seen.add(doc)
            docs.append(doc)
        rankings[qid] = docs
    ndcg, recall = score(rankings, qrels)
    result = {
        "ndcg@10": ndcg,
        "recall@100": None if collapse else recall,
        "p50_ms": round(percentile(times, 50), 2),
        "p95_ms": round(percentile(times, 95), 2),
        # Wall time suffers from whatever else runs on the machine; CPU time (client thread +
        # database backend) is what the query would take alone on an idle core.
        "cpu_p50_ms": round(percentile(cpu_times, 50), 2),
        "cpu_p95_ms": round(percentile(cpu_times, 95), 2),
        "queries": len(queries),
        "limit": limit,
        "load_average_1min": round(os.getloadavg()[0], 1),
    }
    print(f"{name:58s} {json.dumps(result)}", flush=True)
    return result


def explain_uses_gin(query: str) -> tuple[bool, str]:
    """EXPLAIN the candidate query of a typical search: does it go through the GIN index?"""
    captured: list[str] = []

    def capture(execute, sql, params, many, context):
        if "SELECT s.id, s.document_id, s.score" in sql and not sql.startswith("EXPLAIN"):
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN " + sql, params)
                captured.extend(row[0] for row in cursor.fetchall())
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        keyword_search(query, limit=10, filters=None)
    plan = "\n".join(captured)
    return "chunk_search_vector_gin" in plan, plan


def server_facts() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SHOW shared_buffers")
        shared_buffers = cursor.fetchone()[0]
        cursor.execute(
            "SELECT attstorage FROM pg_attribute WHERE attrelid = 'documents_chunk'::regclass AND attname = 'search_vector'"
        )
        storage = {"x": "extended (default)", "m": "main", "e": "external", "p": "plain"}[cursor.fetchone()[0]]
        cursor.execute("SELECT version()")
        version = cursor.fetchone()[0].split(" on ")[0]
    return {"postgres": version, "shared_buffers": shared_buffers, "search_vector_storage": storage}


# --- Main -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--scale", default="5k", help="label for this run's results (5k, 100k, ...)")
    parser.add_argument("--copies", type=int, default=1, help="load the corpus this many times")
    parser.add_argument("--limit-queries", type=int, default=0, help="use only the first N queries")
    parser.add_argument("--label", default="", help="suffix for the scale key, e.g. a server setting")
    parser.add_argument("--json", type=Path, default=RESULTS / "keyword.json")
    args = parser.parse_args()

    corpus, queries, qrels = load_dataset(args.dataset)
    if args.limit_queries:
        queries = dict(list(queries.items())[: args.limit_queries])
    load_corpus(corpus, args.copies)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE documents_chunk")
        cursor.execute("VACUUM ANALYZE documents_document")
    started = time.perf_counter()
    keyword_stats_refresh()
    refresh_s = time.perf_counter() - started
    mapping = chunk_to_doc()
    collapse = args.copies > 1
    print(f"{len(mapping)} chunks, {len(queries)} queries, stats refresh {refresh_s:.2f} s", flush=True)

    runs: dict[str, dict] = {}
    if collapse:
        # With identical copies the top 10 distinct documents need ~10 x copies chunks.
        deep = 10 * args.copies + 50
        runs["baseline: websearch_to_tsquery + ts_rank"] = evaluate(
            "baseline", rank_websearch, queries, qrels, mapping, limit=100, collapse=False
        )
        for name, overrides in configs_100k().items():
            with override_settings(**overrides):
                runs[name] = evaluate(name, rank_bm25, queries, qrels, mapping, limit=100, collapse=False)
                runs[name + f", limit {deep} (quality check, copies collapsed)"] = evaluate(
                    name, rank_bm25, queries, qrels, mapping, limit=deep, collapse=True, warmup=False
                )
        with override_settings(**configs_100k()[DEFAULT_100K]):
            runs["bm25 default, limit 1000 (hybrid candidate depth)"] = evaluate(
                "limit 1000", rank_bm25, queries, qrels, mapping, limit=1000, collapse=False, warmup=False
            )
        # Recall/nDCG are meaningless on duplicated copies without collapsing: keep latency only.
        for name, run in runs.items():
            if "collapsed" not in name:
                run["ndcg@10"] = run["recall@100"] = None
    else:
        runs["baseline: websearch_to_tsquery + ts_rank"] = evaluate(
            "baseline", rank_websearch, queries, qrels, mapping, limit=100, collapse=False
        )
        runs["OR of lexemes + ts_rank (no idf)"] = evaluate(
            "or+ts_rank", rank_or_tsrank, queries, qrels, mapping, limit=100, collapse=False
        )
        for name, overrides in configs_5k().items():
            with override_settings(**overrides):
                runs[name] = evaluate(name, rank_bm25, queries, qrels, mapping, limit=100, collapse=False)

    # Snippets for one page of 10 results, as the API does after ranking.
    texts = list(queries.values())[:200]
    snippet_times = []
    for text in texts:
        ids = [hit.chunk_id for hit in keyword_search(text, limit=10, filters=None)]
        start = time.perf_counter()
        keyword_snippets(ids, text)
        snippet_times.append((time.perf_counter() - start) * 1000)
    uses_gin, plan = explain_uses_gin(texts[0])

    result = {
        "chunks": len(mapping),
        "queries": len(queries),
        "stats_refresh_s": round(refresh_s, 2),
        "snippets_10_p50_ms": round(percentile(snippet_times, 50), 2),
        "snippets_10_p95_ms": round(percentile(snippet_times, 95), 2),
        "gin_index_used": uses_gin,
        "plan": plan,
        "server": server_facts(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "runs": runs,
    }
    all_results = json.loads(args.json.read_text()) if args.json.exists() else {}
    all_results[args.scale + (f" {args.label}" if args.label else "")] = result
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(all_results, indent=2) + "\n")
    args.json.with_suffix(".md").write_text(markdown(all_results))
    print(f"wrote {args.json}")


def markdown(all_results: dict) -> str:
    lines = ["# Keyword search: SciFact train (809 queries with qrels)", ""]
    lines.append("Generated by `bench/keyword_bench.py`; see its docstring for the method.")
    small, large = all_results.get("5k"), all_results.get("100k")
    if small and large:
        base = small["runs"]["baseline: websearch_to_tsquery + ts_rank"]
        exact = small["runs"]["bm25 k1=0.9 b=0.4 ctx=1 (exact)"]
        pruned = next(
            run for name, run in small["runs"].items() if name.startswith("bm25 default, pruning") and "3000" in name
        )
        at_scale = large["runs"][DEFAULT_100K]
        checked = next(
            run for name, run in large["runs"].items() if name.startswith(DEFAULT_100K) and "collapsed" in name
        )
        lines += [
            "",
            "## Summary",
            "",
            "| | nDCG@10 | Recall@100 | CPU p50 ms at 100k | wall p50 ms at 100k (load ~8) |",
            "| --- | ---: | ---: | ---: | ---: |",
            f"| websearch_to_tsquery + ts_rank (baseline) | {base['ndcg@10']:.3f} | {base['recall@100']:.3f} "
            f"| {large['runs']['baseline: websearch_to_tsquery + ts_rank']['cpu_p50_ms']} "
            f"| {large['runs']['baseline: websearch_to_tsquery + ts_rank']['p50_ms']} |",
            f"| BM25, every OR candidate scored (5k) | {exact['ndcg@10']:.3f} | {exact['recall@100']:.3f} | | |",
            f"| BM25, default budget 3000 at 100k | {checked['ndcg@10']:.3f} (100k) / {pruned['ndcg@10']:.3f} (5k sim.) "
            f"| {pruned['recall@100']:.3f} (5k sim.) | {at_scale['cpu_p50_ms']} | {at_scale['p50_ms']} |",
            "",
            "Reference: Lucene BM25 on SciFact about 0.665-0.69 nDCG@10 (test split). The baseline fails because",
            "`websearch_to_tsquery` requires every word of a claim; its 100k latency is low because it matches",
            "almost nothing. The GIN line below reports the plan of the first query: at 5k chunks the planner",
            "reads the whole (small) table instead when the candidates are a large share of it; at 100k it uses",
            "the index (`search/tests/test_keyword.py` checks that the query can always use it).",
        ]
    for scale, result in all_results.items():
        server = result["server"]
        lines += [
            "",
            f"## {scale}: {result['chunks']:,} chunks",
            "",
            f"{server['postgres']}, shared_buffers {server['shared_buffers']}, search_vector storage "
            f"{server['search_vector_storage']}; {result['machine']}. Stats refresh {result['stats_refresh_s']} s; "
            f"snippets for a page of 10: p50 {result['snippets_10_p50_ms']} ms, p95 {result['snippets_10_p95_ms']} ms; "
            f"GIN index in the first query's plan: {'yes' if result['gin_index_used'] else 'no'}.",
            "",
            "| configuration | nDCG@10 | Recall@100 | p50 ms | p95 ms | CPU p50 ms | CPU p95 ms | limit |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, run in result["runs"].items():
            ndcg = "—" if run["ndcg@10"] is None else f"{run['ndcg@10']:.4f}"
            recall = "—" if run["recall@100"] is None else f"{run['recall@100']:.4f}"
            lines.append(
                f"| {name} | {ndcg} | {recall} | {run['p50_ms']} | {run['p95_ms']} | {run.get('cpu_p50_ms', '—')} "
                f"| {run.get('cpu_p95_ms', '—')} | {run['limit']} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
