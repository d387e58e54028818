"""Choose the hybrid-search defaults (RRF k, weights, candidate depth, fusion level) on SciFact train.

Runs every judged query once through the keyword and the semantic candidate generators that
``search.selectors.chunk_search`` uses, then replays reciprocal-rank fusion offline for a grid of
settings, scoring documents (one result per document, as the evaluate command does).

Needs a database where ``manage.py evaluate DATASET --split train`` has loaded and embedded the
dataset, e.g.:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/ragsite_eval DATA_DIR=/tmp/eval-data \\
        .venv/bin/python bench/hybrid_tuning.py ../shared/datasets/scifact-train --split train

Writes bench/results/hybrid_tuning.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import harness

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragsite.settings")


def fuse(keyword, semantic, *, k, wk, ws, depth, level):
    """Ranked document ids from (chunk_id, doc) lists, as chunk_search would fuse them."""
    keyword, semantic = keyword[:depth], semantic[:depth]
    scores: dict = {}
    if level == "chunk":
        for weight, ranked in ((wk, keyword), (ws, semantic)):
            for rank, (chunk, doc) in enumerate(ranked, start=1):
                key = (chunk, doc)
                scores[key] = scores.get(key, 0.0) + weight / (k + rank)
        ordered = sorted(scores, key=lambda c: -scores[c])
        seen, docs = set(), []
        for _, doc in ordered:
            if doc not in seen:
                seen.add(doc)
                docs.append(doc)
        return docs
    for weight, ranked in ((wk, keyword), (ws, semantic)):
        seen = set()
        rank = 0
        for _, doc in ranked:
            if doc in seen:
                continue
            seen.add(doc)
            rank += 1
            scores[doc] = scores.get(doc, 0.0) + weight / (k + rank)
    return sorted(scores, key=lambda d: -scores[d])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dataset")
    parser.add_argument("--split", default="train")
    parser.add_argument("--source", default=None)
    parser.add_argument("--depth", type=int, default=200)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "hybrid_tuning"))
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings

    from documents.models import Document, Source
    from search.candidates import keyword_candidates, semantic_candidates
    from search.filters import SearchFilters

    dataset = harness.load_dataset(args.dataset, args.split)
    source = Source.objects.get(name=args.source or f"beir-{dataset.name}")
    beir_id = {
        pk: url.rsplit("/", 1)[-1] for pk, url in Document.objects.filter(source=source).values_list("id", "url")
    }
    filters = SearchFilters(source_ids=[source.pk])

    runs = {}
    started = time.perf_counter()
    for qid, text in dataset.queries.items():
        kw = keyword_candidates(text, limit=args.depth, filters=filters)
        sem = semantic_candidates(text, limit=args.depth, filters=filters)
        runs[qid] = (
            [(c.chunk_id, beir_id.get(c.document_id, "")) for c in kw],
            [(c.chunk_id, beir_id.get(c.document_id, "")) for c in sem],
        )
    retrieval_s = time.perf_counter() - started

    def score(rank_fn):
        return harness.score({qid: rank_fn(kw, sem) for qid, (kw, sem) in runs.items()}, dataset.qrels)

    def single(ranked):
        seen, docs = set(), []
        for _, doc in ranked:
            if doc not in seen:
                seen.add(doc)
                docs.append(doc)
        return docs

    rows = []
    kw_only = score(lambda kw, sem: single(kw))
    sem_only = score(lambda kw, sem: single(sem))
    rows.append({"config": "keyword only", "ndcg_at_10": kw_only[0], "recall_at_100": kw_only[1]})
    rows.append({"config": "semantic only", "ndcg_at_10": sem_only[0], "recall_at_100": sem_only[1]})
    for level in ("chunk", "document"):
        for k in (5, 10, 20, 40, 60, 100):
            for wk in (0.5, 0.75, 1.0, 1.25, 1.5, 2.0):
                for depth in (50, 100, 200):
                    if depth > args.depth:
                        continue
                    n, r = score(
                        lambda kw, sem, k=k, wk=wk, depth=depth, level=level: fuse(
                            kw, sem, k=k, wk=wk, ws=1.0, depth=depth, level=level
                        )
                    )
                    rows.append(
                        {
                            "config": f"rrf level={level} k={k} keyword_weight={wk} semantic_weight=1 depth={depth}",
                            "level": level,
                            "k": k,
                            "keyword_weight": wk,
                            "depth": depth,
                            "ndcg_at_10": n,
                            "recall_at_100": r,
                        }
                    )
    fused = [r for r in rows if "level" in r]
    best = max(fused, key=lambda r: (r["ndcg_at_10"], r["recall_at_100"]))
    current = next(
        (
            r
            for r in fused
            if r["level"] == "chunk"
            and r["k"] == settings.SEARCH_RRF_K
            and r["keyword_weight"] == settings.SEARCH_KEYWORD_WEIGHT
            and r["depth"] == min(settings.SEARCH_CANDIDATES * 2, args.depth)
        ),  # chunk_search doubles the depth when grouping
        None,
    )
    result = {
        "dataset": dataset.name,
        "split": args.split,
        "queries": len(runs),
        "documents": len(dataset.corpus),
        "embedding": {"model": settings.EMBEDDING_MODEL, "runtime": settings.EMBEDDING_RUNTIME},
        "retrieval_seconds": round(retrieval_s, 1),
        "load_average": os.getloadavg(),
        "keyword_only": rows[0],
        "semantic_only": rows[1],
        "best": best,
        "settings_defaults": current,
        "grid": rows,
    }
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    top = sorted(fused, key=lambda r: -r["ndcg_at_10"])[:15]
    lines = [
        f"# Hybrid fusion tuning: {dataset.name} ({args.split}, {len(runs)} queries)",
        "",
        f"Keyword and semantic candidates ({args.depth} each) from the same generators as `chunk_search`, "
        f"fused offline; one result per document. Embedder {settings.EMBEDDING_MODEL} ({settings.EMBEDDING_RUNTIME}). "
        "Script: `bench/hybrid_tuning.py`.",
        "",
        "| configuration | nDCG@10 | Recall@100 |",
        "|---|---:|---:|",
        f"| keyword only | {kw_only[0]:.4f} | {kw_only[1]:.4f} |",
        f"| semantic only | {sem_only[0]:.4f} | {sem_only[1]:.4f} |",
    ]
    lines += [f"| {r['config']} | {r['ndcg_at_10']:.4f} | {r['recall_at_100']:.4f} |" for r in top]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
