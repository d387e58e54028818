"""Retrieval evaluation on BEIR-layout datasets (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv)."""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytrec_eval


class DatasetError(Exception):
    pass


@dataclass
class Dataset:
    name: str
    corpus: dict[str, dict]  # id -> {"title", "text"}
    queries: dict[str, str]  # id -> text (only queries judged in the split)
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: relevance}


def _read_jsonl(path: Path) -> Iterable[dict]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError as exc:
                    raise DatasetError(f"{path.name} line {number}: not JSON ({exc})") from None


def load_dataset(directory: Path | str, split: str = "test") -> Dataset:
    directory = Path(directory)
    paths = {
        "corpus": directory / "corpus.jsonl",
        "queries": directory / "queries.jsonl",
        "qrels": directory / "qrels" / f"{split}.tsv",
    }
    for what, path in paths.items():
        if not path.is_file():
            available = sorted(p.stem for p in (directory / "qrels").glob("*.tsv")) if what == "qrels" else []
            hint = f" (splits here: {', '.join(available)})" if available else ""
            raise DatasetError(f"{path} is missing: not a BEIR dataset folder{hint}")
    qrels: dict[str, dict[str, int]] = {}
    with paths["qrels"].open(encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter="\t")
        for row in reader:
            if len(row) < 3 or row[0] in ("query-id", "query_id"):
                continue
            try:
                score = int(row[2])
            except ValueError:
                continue
            if score > 0:
                qrels.setdefault(row[0], {})[row[1]] = score
    corpus = {
        str(d["_id"]): {"title": d.get("title", ""), "text": d.get("text", "")} for d in _read_jsonl(paths["corpus"])
    }
    queries = {str(q["_id"]): q["text"] for q in _read_jsonl(paths["queries"]) if str(q["_id"]) in qrels}
    qrels = {q: rel for q, rel in qrels.items() if q in queries}
    if not queries:
        raise DatasetError(f"no query in queries.jsonl has judgments in qrels/{split}.tsv")
    return Dataset(name=directory.name, corpus=corpus, queries=queries, qrels=qrels)


# trec_eval's own measures (through pytrec_eval), so figures match published BEIR numbers:
# nDCG uses trec_eval's linear gains (gain = relevance grade), which differ from 2^rel - 1 on
# graded datasets such as NFCorpus or TREC-COVID; on binary ones (SciFact) the two agree.
NDCG_10 = "ndcg_cut_10"
RECALL_100 = "recall_100"


def run_scores(
    ranked: dict[str, list[str]],
    qrels: dict[str, dict[str, int]],
    measures: tuple[str, ...] = ("ndcg_cut.10", "recall.100"),
) -> dict[str, dict[str, float]]:
    """Per query, trec_eval's measures (default nDCG@10 and Recall@100) of ranked document ids (best first).

    trec_eval orders a run by score, so ranks become descending scores; a document listed twice
    counts at its first rank, as in the ranking the user saw.
    """
    run: dict[str, dict[str, float]] = {}
    for qid, docs in ranked.items():
        scores: dict[str, float] = {}
        for rank, doc in enumerate(docs):
            scores.setdefault(doc, float(len(docs) - rank))
        run[qid] = scores
    judged = {qid: qrels.get(qid, {}) for qid in ranked}
    evaluator = pytrec_eval.RelevanceEvaluator({q: r for q, r in judged.items() if r}, set(measures))
    measured = evaluator.evaluate({q: s for q, s in run.items() if judged[q]})
    # A query no ranking found anything for, or with no judgments, scores 0 (trec_eval skips it).
    zero = dict.fromkeys((m.replace(".", "_") for m in measures), 0.0)
    return {qid: {**zero, **measured.get(qid, {})} for qid in ranked}


def ndcg_at_10(ranked: list[str], relevant: dict[str, int]) -> float:
    return run_scores({"q": ranked}, {"q": relevant})["q"][NDCG_10]


def recall_at_100(ranked: list[str], relevant: dict[str, int]) -> float:
    return run_scores({"q": ranked}, {"q": relevant})["q"][RECALL_100]


@dataclass
class ModeResult:
    mode: str
    ndcg_at_10: float
    recall_at_100: float
    queries: int
    latency_ms_p50: float
    latency_ms_p95: float
    per_query: dict[str, float] = field(default_factory=dict, repr=False)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


def evaluate_mode(
    mode: str,
    dataset: Dataset,
    search: Callable[[str], tuple[list[str], float]],
    *,
    query_ids: list[str],
    progress: Callable[[int], None] | None = None,
) -> ModeResult:
    rankings, latencies = {}, []
    for qid in query_ids:
        ranked, took_ms = search(dataset.queries[qid])
        rankings[qid] = ranked
        latencies.append(took_ms)
        if progress:
            progress(1)
    scores = run_scores(rankings, dataset.qrels)
    ndcgs = [scores[qid][NDCG_10] for qid in query_ids]
    recalls = [scores[qid][RECALL_100] for qid in query_ids]
    return ModeResult(
        mode=mode,
        ndcg_at_10=round(statistics.fmean(ndcgs), 4) if ndcgs else 0.0,
        recall_at_100=round(statistics.fmean(recalls), 4) if recalls else 0.0,
        queries=len(query_ids),
        latency_ms_p50=round(statistics.median(latencies), 2) if latencies else 0.0,
        latency_ms_p95=round(percentile(latencies, 0.95), 2),
        per_query={qid: scores[qid][NDCG_10] for qid in query_ids},
    )
