"""Follow-up questions: Recall@10 of a follow-up searched alone vs rewritten with the conversation.

The set is built from SciFact's train split (deterministically; written to
bench/data/followups.json): for a claim, the *subject* is its rarest content words (by document
frequency in the corpus, up to three); the first question asks about the subject ("What is known
about X?"), and the follow-up is the claim with the subject replaced by "it" — a question that
only makes sense after the first one. The follow-up's relevant documents are the claim's.

Measured through ``search.selectors.chunk_search`` (hybrid, one result per document, as Ask and
``evaluate`` search) with trec_eval's Recall@10 and nDCG@10:

- alone: the follow-up as asked;
- rule: rewritten by the offline rule (``search.conversations.rule_rewrite``);
- llm: rewritten by the configured chat model (only when ``LLM_MODEL`` and a key or base URL are
  set; the tests cover the path against a local server, which is no measure of a model);
- oracle: the original claim (the ceiling).

Needs a database where ``manage.py evaluate ../shared/datasets/scifact-train --split train`` loaded
and embedded SciFact:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/ragsite_eval DATA_DIR=/tmp/evaldata \\
        .venv/bin/python bench/followup_bench.py

Writes results/followups.json and .md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import harness

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragsite.settings")

SET_PATH = Path(__file__).resolve().parent / "data" / "followups.json"
WORD = re.compile(r"[A-Za-z][A-Za-z0-9\-]+")


def build_set(size: int, seed: int = 7) -> list[dict]:
    from search.relevance import STOPWORDS

    dataset = harness.load_dataset(harness.DATASETS / "scifact-train", "train")
    df: Counter = Counter()
    for doc in dataset.corpus.values():
        df.update({w.lower() for w in WORD.findall(f"{doc['title']} {doc['text']}")})
    total = len(dataset.corpus)
    items = []
    for qid in sorted(dataset.queries, key=lambda q: int(q)):
        claim = dataset.queries[qid]
        words = [w for w in WORD.findall(claim) if w.lower() not in STOPWORDS and len(w) > 2]
        if len(words) < 4:
            continue
        # The subject: the claim's rarest words (what a person would name first).
        subject = sorted(set(words), key=lambda w: (df[w.lower()], w))[:3]
        if any(df[w.lower()] == 0 for w in subject) or math.log(total / max(1, df[subject[0].lower()])) < 3:
            continue
        follow = claim
        for word in subject:
            follow = re.sub(rf"\b{re.escape(word)}\b", "it", follow, count=1)
        follow = re.sub(r"\b(it\s+){2,}", "it ", follow)
        items.append(
            {
                "id": qid,
                "first": f"What is known about {' '.join(subject)}?",
                "follow_up": follow,
                "claim": claim,
                "qrels": dataset.qrels[qid],
            }
        )
    random.Random(seed).shuffle(items)
    return sorted(items[:size], key=lambda item: int(item["id"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--source", default="beir-scifact-train")
    parser.add_argument("--rebuild", action="store_true", help="rebuild bench/data/followups.json")
    args = parser.parse_args()
    import django

    django.setup()
    from django.conf import settings

    from documents.models import Document, Source
    from search.conversations import rule_rewrite
    from search.filters import SearchFilters
    from search.selectors import chunk_search

    if args.rebuild or not SET_PATH.exists():
        SET_PATH.write_text(json.dumps(build_set(args.size), indent=1) + "\n")
    items = json.loads(SET_PATH.read_text())
    source = Source.objects.get(name=args.source)
    beir_id = {
        pk: url.rsplit("/", 1)[-1] for pk, url in Document.objects.filter(source=source).values_list("id", "url")
    }
    filters = SearchFilters(source_ids=[source.pk])

    def ranked(query: str) -> list[str]:
        response = chunk_search(
            query, mode="hybrid", limit=100, filters=filters, max_per_document=1, with_snippets=False
        )
        return [beir_id.get(r.document_id, "") for r in response.results]

    variants = {
        "alone": lambda item: item["follow_up"],
        "rule": lambda item: rule_rewrite(item["follow_up"], [item["first"]]),
        "oracle": lambda item: item["claim"],
    }
    if settings.LLM_MODEL and (settings.OPENAI_API_KEY or settings.OPENAI_BASE_URL):
        from search.conversations import Rewrite, standalone_query  # noqa: F401
        from search.models import Turn

        def llm(item):
            history = [Turn(question=item["first"], searched_for=item["first"], answer="")]
            return standalone_query(item["follow_up"], history).query

        variants["llm"] = llm
    qrels = {item["id"]: item["qrels"] for item in items}
    report = {"size": len(items), "mode": "hybrid", "variants": {}, "examples": items[:3]}
    for name, rewrite in variants.items():
        started = time.perf_counter()
        rankings, queries = {}, {}
        for item in items:
            queries[item["id"]] = rewrite(item)
            rankings[item["id"]] = ranked(queries[item["id"]])
        scores = harness.run_scores(rankings, qrels, ("recall.10", "ndcg_cut.10"))
        report["variants"][name] = {
            "recall_at_10": round(statistics.fmean(s["recall_10"] for s in scores.values()), 4),
            "ndcg_at_10": round(statistics.fmean(s["ndcg_cut_10"] for s in scores.values()), 4),
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(name, report["variants"][name], flush=True)
        if name == "rule":
            report["rule_examples"] = [
                {"follow_up": i["follow_up"], "searched_for": queries[i["id"]]} for i in items[:3]
            ]
    report["llm_measured"] = "llm" in variants
    report["machine"] = {"cpu": harness.cpu_model(), "versions": harness.versions()}
    harness.write_results("followups", report, markdown(report))


def markdown(report: dict) -> str:
    lines = [
        "# Follow-up questions: searched alone vs rewritten with the conversation",
        "",
        f"{report['size']} follow-ups built from SciFact train claims (`bench/followup_bench.py`, set in",
        "`bench/data/followups.json`); hybrid search, one result per document; trec_eval's measures.",
        "",
        "| follow-up searched as | Recall@10 | nDCG@10 |",
        "|---|---:|---:|",
    ]
    labels = {
        "alone": "asked (no rewrite)",
        "rule": "rewritten by the offline rule",
        "llm": "rewritten by the LLM",
        "oracle": "the original claim (ceiling)",
    }
    for name, row in report["variants"].items():
        lines.append(f"| {labels[name]} | {row['recall_at_10']:.4f} | {row['ndcg_at_10']:.4f} |")
    if not report["llm_measured"]:
        lines += [
            "",
            "The LLM rewrite was not measured: no language model is configured on this machine (set",
            "`LLM_MODEL` and `OPENAI_API_KEY` or `OPENAI_BASE_URL` and re-run). Its code path is tested",
            "against a local OpenAI-compatible server (search/tests/test_conversations.py).",
        ]
    lines += ["", "Examples (follow-up → what the rule searched for):", ""]
    lines += [f"- {e['follow_up']} → {e['searched_for']}" for e in report.get("rule_examples", [])]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
