"""The evaluation metrics and the `evaluate` command on a tiny hand-checked dataset."""

from __future__ import annotations

import json
import math
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from search.evaluation import load_dataset, ndcg_at_10, recall_at_100, run_scores
from search.tests.rerank_server import rerank_server_fixture  # noqa: F401

TINY = Path(__file__).parent / "data" / "tiny"


def test_ndcg_matches_a_hand_computation():
    relevant = {"a": 1, "c": 1}
    # Ranked b, a, c: DCG = 1/log2(3) + 1/log2(4); ideal = 1/log2(2) + 1/log2(3).
    expected = (1 / math.log2(3) + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert ndcg_at_10(["b", "a", "c"], relevant) == pytest.approx(expected)
    assert ndcg_at_10(["a", "c", "b"], relevant) == pytest.approx(1.0)
    assert ndcg_at_10(["b", "d"], relevant) == 0.0
    # Only the first 10 ranks count.
    assert ndcg_at_10([f"x{i}" for i in range(10)] + ["a"], relevant) == 0.0
    # A document repeated counts once, at its first rank.
    assert ndcg_at_10(["b", "a", "a", "c"], relevant) == pytest.approx(expected)


def test_graded_relevance_uses_trec_evals_linear_gain():
    # trec_eval (and so published BEIR figures on NFCorpus, TREC-COVID) gains the grade itself,
    # not 2^grade - 1: here 0.8597 where exponential gains would give 0.7967.
    relevant = {"a": 2, "b": 1}
    dcg = 1 / math.log2(2) + 2 / math.log2(3)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at_10(["b", "a"], relevant) == pytest.approx(dcg / idcg)
    assert ndcg_at_10(["b", "a"], relevant) == pytest.approx(0.8597, abs=1e-4)


def test_queries_without_hits_or_judgments_score_zero():
    scores = run_scores({"q1": [], "q2": ["a"], "q3": ["a"]}, {"q1": {"a": 1}, "q2": {"a": 1}})
    assert scores["q1"]["ndcg_cut_10"] == 0.0
    assert scores["q2"]["ndcg_cut_10"] == 1.0
    assert scores["q3"]["ndcg_cut_10"] == 0.0


def test_recall_counts_relevant_documents_found_in_the_top_k():
    assert recall_at_100(["a", "x", "c"], {"a": 1, "b": 1, "c": 1, "d": 1}) == 0.5
    assert recall_at_100([f"x{i}" for i in range(100)] + ["a"], {"a": 1}) == 0.0


def test_the_dataset_loader_keeps_only_judged_queries():
    dataset = load_dataset(TINY, "test")
    assert sorted(dataset.queries) == ["q1", "q2", "q3"]
    assert dataset.qrels["q3"] == {"d3": 1, "d1": 1}
    assert len(dataset.corpus) == 5


@pytest.mark.django_db
@pytest.mark.slow
def test_the_evaluate_command_reports_metrics_that_agree_with_a_hand_computation(fresh_store, tmp_path):
    out = StringIO()
    report = tmp_path / "eval.json"
    call_command(
        "evaluate", str(TINY), "--split", "test", "--mode", "all", "--json", str(report), stdout=out, stderr=StringIO()
    )
    results = {r["mode"]: r for r in json.loads(report.read_text())["results"]}
    assert set(results) == {"keyword", "semantic", "hybrid"}
    # By hand, keyword mode: q1 -> d1 and q2 -> d4 at rank 1 (nDCG 1 each). q3 has two relevant
    # documents (d3, d1); d3 ranks first and d1 shares no word with the query, so it is never
    # retrieved: nDCG = 1 / (1 + 1/log2(3)) and recall 1/2.
    q3 = 1 / (1 + 1 / math.log2(3))
    assert results["keyword"]["ndcg_at_10"] == pytest.approx((1 + 1 + q3) / 3, abs=1e-4)
    assert results["keyword"]["recall_at_100"] == pytest.approx((1 + 1 + 0.5) / 3, abs=1e-4)
    for mode, result in results.items():
        assert result["queries"] == 3
        assert result["ndcg_at_10"] >= results["keyword"]["ndcg_at_10"] - 0.2, (mode, result)
    text = out.getvalue()
    assert "nDCG@10" in text and "R@100" in text and "hybrid" in text


@pytest.mark.django_db
@pytest.mark.slow
def test_evaluate_matches_metrics_recomputed_from_the_api_rankings(api, fresh_store, tmp_path):
    """Recompute nDCG from /api/search/ rankings: the command and the API agree."""
    report = tmp_path / "eval.json"
    call_command(
        "evaluate", str(TINY), "--mode", "keyword", "--json", str(report), stdout=StringIO(), stderr=StringIO()
    )
    reported = json.loads(report.read_text())["results"][0]["ndcg_at_10"]
    dataset = load_dataset(TINY, "test")
    scores = []
    for qid, text in dataset.queries.items():
        body = api.get("/api/search/", {"q": text, "mode": "keyword", "limit": 100, "source": "beir-tiny"}).json()
        ranked = [r["url"].rsplit("/", 1)[-1] for r in body["results"]]
        scores.append(ndcg_at_10(ranked, dataset.qrels[qid]))
    assert reported == pytest.approx(sum(scores) / len(scores), abs=1e-4)


def test_evaluate_refuses_a_folder_that_is_not_a_beir_dataset(tmp_path):
    with pytest.raises(CommandError, match=r"corpus\.jsonl"):
        call_command("evaluate", str(tmp_path))
    with pytest.raises(CommandError, match="splits here: test"):
        call_command("evaluate", str(TINY), "--split", "dev")


@pytest.mark.django_db
@pytest.mark.slow
def test_evaluate_with_rerank_reports_each_mode_with_and_without_the_rerank_stage(
    fresh_store, tmp_path, settings, rerank_server
):
    from search.tests.rerank_server import TEI_PATH, endpoint

    settings.RERANK_URL = endpoint(rerank_server, TEI_PATH)
    settings.RERANK_API = "tei"
    report = tmp_path / "eval.json"
    call_command(
        "evaluate",
        str(TINY),
        "--mode",
        "hybrid",
        "--rerank",
        "--json",
        str(report),
        stdout=StringIO(),
        stderr=StringIO(),
    )
    payload = json.loads(report.read_text())
    assert [r["mode"] for r in payload["results"]] == ["hybrid", "hybrid+rerank"]
    assert payload["rerank_fallbacks"] == {}
    # Every query of the reranked run went through the endpoint.
    assert len(rerank_server.requests_to(TEI_PATH)) == 3
    assert all(0.0 <= r["ndcg_at_10"] <= 1.0 for r in payload["results"])


def test_evaluate_with_rerank_needs_an_endpoint(settings):
    settings.RERANK_URL = ""
    with pytest.raises(CommandError, match="RERANK_URL"):
        call_command("evaluate", str(TINY), "--rerank")
