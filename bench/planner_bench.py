"""Source-filtered keyword queries on a bulk-loaded, never-analyzed corpus (issue 15, finding 12).

Needs a fresh PostgreSQL database of its own, ideally with autovacuum off (as on the machine
the finding was reproduced on), so that nothing analyzes the tables behind the bench's back:

    createdb -h 127.0.0.1 -U postgres ragsite_plan
    export DATABASE_URL=postgres://postgres@127.0.0.1:5432/ragsite_plan
    .venv/bin/python manage.py migrate
    .venv/bin/python bench/planner_bench.py path/to/scifact   # BEIR layout: corpus.jsonl, queries.jsonl, qrels/

It loads SciFact (train: 5,183 documents, 10,317 chunks) the way `manage.py evaluate` does, but
without the ANALYZE the commands now run, then times ``keyword_search`` with a source filter for
the first N claims in two query shapes: the document filter as a semi-join (before) and checked
per chunk (``chunk_filter_sql(per_chunk=True)``, now), first on the never-analyzed tables, then
after ``documents.maintenance.tables_analyze``. Also reports how many times the worst query of
each scanned the full-text index (EXPLAIN ANALYZE). Writes bench/results/planner.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragsite.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402

from documents.maintenance import tables_analyze  # noqa: E402
from documents.models import Document, Source  # noqa: E402
from search.evaluation import load_dataset  # noqa: E402
from search.filters import SearchFilters  # noqa: E402
from search.keyword import keyword_search  # noqa: E402
from search.management.commands.evaluate import Command as Evaluate  # noqa: E402

PER_CHUNK = "EXISTS (SELECT 1 FROM documents_document d WHERE d.id = c.document_id AND d.source_id = ANY(%(filter_source_ids)s) OFFSET 0)"
SEMI_JOIN = "c.document_id IN (SELECT d.id FROM documents_document d WHERE d.source_id = ANY(%(filter_source_ids)s))"


def run(queries: list[str], source: Source, shape: str) -> dict:
    """Time every query; EXPLAIN ANALYZE the slowest one."""
    captured: list[tuple[str, dict]] = []

    def rewrite(execute, sql, params, many, context):
        if "CROSS JOIN LATERAL" in sql:
            if shape == "semi-join":
                assert PER_CHUNK in sql, "the statement's filter changed: update the bench"
                sql = sql.replace(PER_CHUNK, SEMI_JOIN)
            captured.append((sql, params))
        return execute(sql, params, many, context)

    filters = SearchFilters(source_ids=[source.pk])
    times, statements = [], []
    with connection.execute_wrapper(rewrite):
        for query in queries:
            started = time.perf_counter()
            keyword_search(query, limit=100, filters=filters)
            times.append((time.perf_counter() - started) * 1000)
            statements.append(captured[-1])
    worst = max(range(len(times)), key=times.__getitem__)
    sql, params = statements[worst]
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)
        plan = cursor.fetchone()[0][0]
    loops = [
        node["Actual Loops"] for node in _nodes(plan["Plan"]) if node.get("Index Name") == "chunk_search_vector_gin"
    ]
    ordered = sorted(times)
    return {
        "shape": shape,
        "queries": len(times),
        "p50_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 1),
        "max_ms": round(ordered[-1], 1),
        "worst_query_statement_ms": round(plan["Execution Time"], 1),
        "worst_query_fulltext_index_scans": sum(loops),
    }


def _nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dataset_dir")
    parser.add_argument("--queries", type=int, default=60)
    args = parser.parse_args()

    dataset = load_dataset(args.dataset_dir, "train")
    source, _ = Source.objects.get_or_create(name=f"beir-{dataset.name}", defaults={"kind": Source.Kind.API})
    if not Document.objects.filter(source=source).exists():
        Evaluate()._load(dataset, source)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT bool_and(last_analyze IS NULL AND last_autoanalyze IS NULL) FROM pg_stat_user_tables "
            "WHERE relname IN ('documents_document', 'documents_chunk')"
        )
        never_analyzed = cursor.fetchone()[0]
        cursor.execute("SHOW autovacuum")
        autovacuum = cursor.fetchone()[0]
    if not never_analyzed:
        sys.exit("the tables were analyzed already: run this on a fresh database")
    queries = [dataset.queries[key] for key in sorted(dataset.queries, key=lambda k: int(k) if k.isdigit() else 0)]
    queries = queries[: args.queries]
    keyword_search(queries[0], limit=10)  # computes the corpus statistics once, outside the timings

    rows = []
    for label in ("never analyzed", "after tables_analyze()"):
        if label.startswith("after"):
            rows.append({"analyzed": tables_analyze()})
        for shape in ("semi-join", "per-chunk"):
            result = run(queries, source, shape)
            result["statistics"] = label
            rows.append(result)
            print(result, flush=True)

    load = os.getloadavg()[0]
    out = ROOT / "bench" / "results"
    (out / "planner.json").write_text(
        json.dumps({"autovacuum": autovacuum, "load_average_1m": load, "rows": rows}, indent=2) + "\n"
    )
    lines = [
        "# Source-filtered keyword queries on a bulk-loaded corpus",
        "",
        f"SciFact train loaded as `manage.py evaluate` loads it ({Document.objects.filter(source=source).count()} "
        f"documents, {source.documents.values('chunks').count()} chunks) into a fresh database, autovacuum "
        f"{autovacuum}; `keyword_search(claim, limit=100, filters=source)` for the first {len(queries)} claims. "
        f"Wall time per query on 2 shared cores (1-minute load average {load:.1f} at the end: compare rows, not "
        'absolute figures). "Full-text index scans" counts the GIN index scans of the slowest query\'s '
        "statement (EXPLAIN ANALYZE): 1 is the plan intended, one per document of the source is the bug.",
        "",
        "| statistics | document filter | p50 ms | p95 ms | max ms | slowest statement ms | full-text index scans |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        if "shape" in row:
            lines.append(
                f"| {row['statistics']} | {row['shape']} | {row['p50_ms']} | {row['p95_ms']} | {row['max_ms']} | "
                f"{row['worst_query_statement_ms']} | {row['worst_query_fulltext_index_scans']} |"
            )
    lines += [
        "",
        "semi-join: `c.document_id IN (SELECT d.id FROM documents_document d WHERE d.source_id = ANY(...))`, the shape "
        "before the fix; the planner may start from the documents and probe the full-text index once per document. "
        "per-chunk: the same condition checked per candidate chunk by primary key (`EXISTS (... OFFSET 0)`), the "
        "shape now used: the full-text index is scanned once whatever the statistics say. A filter with at most "
        "`SEARCH_KEYWORD_CANDIDATE_BUDGET` chunks names them by id instead (no join at all).",
        "",
    ]
    (out / "planner.md").write_text("\n".join(lines))
    print("wrote bench/results/planner.md")


if __name__ == "__main__":
    main()
