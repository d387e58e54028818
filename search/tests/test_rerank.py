"""The rerank stage through /api/search/ and /api/ask/, against real local rerank endpoints."""

from __future__ import annotations

import pytest

from ragsite.tests.openai_server import Reply
from search.tests.ask_fixtures import knowledge_base_fixture  # noqa: F401
from search.tests.rerank_server import COHERE_PATH, TEI_PATH, bi_encoder_scores, endpoint, rerank_server_fixture  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

QUESTION = "what temperature should the water be for green tea"


def _search(api, **params):
    response = api.get("/api/search/", {"q": QUESTION, "mode": "hybrid", "limit": 10, **params})
    assert response.status_code == 200, response.content
    return response.json()


@pytest.fixture
def configured(settings, rerank_server):
    def use(api_name: str, path: str):
        settings.RERANK_URL = endpoint(rerank_server, path)
        settings.RERANK_API = api_name
        settings.RERANK_TIMEOUT = 2.0
        return rerank_server

    return use


@pytest.mark.parametrize(("api_name", "path"), [("cohere", COHERE_PATH), ("tei", TEI_PATH)])
def test_reranked_hits_follow_the_endpoints_scores(api, knowledge_base, configured, api_name, path):
    server = configured(api_name, path)
    plain = _search(api)
    body = _search(api, rerank="true")
    assert body["reranked"] is True and "rerank_error" not in body
    assert len(server.requests_to(path)) == 1
    # The same hits, reordered by the endpoint's scores, which are computed here independently.
    assert sorted(h["chunk_id"] for h in body["results"]) == sorted(h["chunk_id"] for h in plain["results"])
    sent = server.requests_to(path)[0].json
    texts = sent["texts"] if api_name == "tei" else sent["documents"]
    expected = bi_encoder_scores(QUESTION, texts)
    scores = [h["rerank_score"] for h in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert sorted(scores, reverse=True) == pytest.approx(sorted(expected, reverse=True), abs=1e-4)
    assert [h["rank"] for h in body["results"]] == list(range(1, len(body["results"]) + 1))
    assert body["results"][0]["document_id"] == knowledge_base["tea"].pk


def test_the_cohere_request_names_the_model_and_sends_the_key(api, knowledge_base, configured, settings):
    server = configured("cohere", COHERE_PATH)
    settings.RERANK_MODEL = "rerank-test-model"
    settings.RERANK_API_KEY = "secret-test-key"
    _search(api, rerank="true")
    request = server.requests_to(COHERE_PATH)[0]
    assert request.json["model"] == "rerank-test-model" and request.json["query"] == QUESTION
    assert request.headers.get("authorization") == "Bearer secret-test-key"


def test_only_the_top_n_are_reranked_and_the_rest_keep_their_order(api, knowledge_base, configured, settings):
    server = configured("cohere", COHERE_PATH)
    settings.RERANK_TOP_N = 2
    plain = _search(api)
    body = _search(api, rerank="true")
    assert len(server.requests_to(COHERE_PATH)[0].json["documents"]) == 2
    assert all("rerank_score" in h for h in body["results"][:2])
    assert [h["chunk_id"] for h in body["results"][2:]] == [h["chunk_id"] for h in plain["results"][2:]]
    assert all("rerank_score" not in h for h in body["results"][2:])


@pytest.mark.parametrize("fault", ["slow", "error", "garbage"])
def test_a_slow_or_failing_endpoint_gives_the_unreranked_results_and_says_why(api, knowledge_base, configured, fault):
    server = configured("cohere", COHERE_PATH)
    plain = _search(api)
    if fault == "slow":
        server.delay_next(COHERE_PATH, 4.0)
    elif fault == "error":
        server.fail_next(COHERE_PATH, status=500)
    else:
        # An index outside the documents sent: not the protocol, so nothing of it is trusted.
        server.route(
            COHERE_PATH, lambda server, request: Reply(body={"results": [{"index": 99, "relevance_score": 1}]})
        )
    body = _search(api, rerank="true")
    assert body["reranked"] is False
    assert body["rerank_error"]
    assert [h["chunk_id"] for h in body["results"]] == [h["chunk_id"] for h in plain["results"]]
    assert all("rerank_score" not in h for h in body["results"])
    assert any("not reranked" in w for w in body["warnings"])


def test_rerank_without_an_endpoint_is_a_400_naming_the_parameter(api, knowledge_base, settings):
    settings.RERANK_URL = ""
    response = api.get("/api/search/", {"q": QUESTION, "rerank": "true"})
    assert response.status_code == 400
    assert "rerank" in str(response.json())


def test_the_setting_makes_rerank_the_default_and_false_turns_it_off(api, knowledge_base, configured, settings):
    server = configured("tei", TEI_PATH)
    settings.SEARCH_RERANK = True
    assert _search(api)["reranked"] is True
    assert "reranked" not in _search(api, rerank="false")
    assert len(server.requests_to(TEI_PATH)) == 1


def test_ask_answers_from_reranked_passages(api, knowledge_base, configured):
    server = configured("cohere", COHERE_PATH)
    response = api.post("/api/ask/", {"question": QUESTION, "rerank": True}, content_type="application/json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["reranked"] is True
    assert len(server.requests_to(COHERE_PATH)) == 1
    assert body["citations"][0]["document_id"] == knowledge_base["tea"].pk
