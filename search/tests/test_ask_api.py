"""POST /api/ask/ over HTTP: answers, citations, streaming, LLM failures, bad input, who may ask."""

from __future__ import annotations

import re

import pytest

from search.answers.generate import NOT_FOUND_ANSWER
from search.tests.ask_fixtures import OFF_TOPIC_QUESTION, knowledge_base_fixture, sse_events  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

CHAT = "/v1/chat/completions"


def ask(client, **body):
    return client.post("/api/ask/", body, content_type="application/json")


def error(response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and {"code", "message", "fields"} <= set(body["error"]), body
    return body["error"]


def assert_citations_resolve(answer: str, citations: list[dict]):
    numbers = {c["n"] for c in citations}
    assert [c["n"] for c in citations] == list(range(1, len(citations) + 1))
    assert {int(n) for n in re.findall(r"\[(\d+)\]", answer)} <= numbers


@pytest.fixture
def llm(settings, openai_server):
    settings.LLM_MODEL = "test-chat-model"
    settings.OPENAI_BASE_URL = openai_server.base_url
    settings.OPENAI_API_KEY = "sk-test"
    settings.OPENAI_TIMEOUT = 1.0
    settings.LLM_MAX_RETRIES = 0
    return openai_server


def test_the_offline_answer_follows_the_contract(api, knowledge_base):
    response = ask(api, question="How do bees make honey?", mode="hybrid")
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) >= {"question", "answer", "citations", "provider", "mode", "took_ms", "found"}
    assert body["provider"] == "extractive" and body["mode"] == "hybrid" and body["found"] is True
    assert body["question"] == "How do bees make honey?"
    assert "Honey bees make honey from the nectar of flowers [1]" in body["answer"]
    first = body["citations"][0]
    assert set(first) >= {"n", "chunk_id", "document_id", "title", "url", "snippet", "cited"}
    assert first["n"] == 1 and first["cited"] is True and first["document_id"] == knowledge_base["bees"].pk
    assert first["title"] == "How bees make honey" and first["url"] == "https://example.com/bees"
    assert "<mark>" in first["snippet"]
    assert_citations_resolve(body["answer"], body["citations"])


def test_the_llm_answer_drops_a_citation_it_was_not_given(api, knowledge_base, llm):
    llm.chat_answer = "Bees make honey from nectar [1] and sell it [9]."
    body = ask(api, question="How do bees make honey?").json()
    assert body["provider"] == "openai" and body["model"] == "test-chat-model"
    assert body["answer"] == "Bees make honey from nectar [1] and sell it."
    assert [c["cited"] for c in body["citations"]] == [True] + [False] * (len(body["citations"]) - 1)
    assert_citations_resolve(body["answer"], body["citations"])
    assert "[1] How bees make honey" in llm.requests_to(CHAT)[0].json["messages"][1]["content"]


def test_streaming_sends_citations_then_deltas_then_done(api, knowledge_base, llm):
    llm.chat_answer = "Bees make honey from nectar [1] and sell it [9]. Nothing else [2]."
    response = ask(api, question="How do bees make honey?", mode="semantic", stream=True)
    assert response.status_code == 200 and response["Content-Type"].startswith("text/event-stream")
    assert response["Cache-Control"] == "no-cache"
    events = sse_events(response)
    names = [name for name, _ in events]
    assert names[0] == "citations" and names[-1] == "done" and set(names[1:-1]) == {"delta"}
    head, done = events[0][1], events[-1][1]
    assert head["provider"] == "openai" and head["mode"] == "semantic" and head["citations"][0]["n"] == 1
    text = "".join(data["text"] for name, data in events if name == "delta")
    assert names.count("delta") > 3  # the model's pieces are passed on as they come
    count = len(head["citations"])
    expected = "Bees make honey from nectar [1] and sell it. Nothing else" + (" [2]." if count >= 2 else ".")
    assert text == done["answer"] == expected
    assert_citations_resolve(text, head["citations"])


def test_streaming_works_with_the_offline_provider_too(api, knowledge_base):
    events = sse_events(ask(api, question="How hot should the water be for green tea?", stream=True))
    assert [events[0][0], events[-1][0]] == ["citations", "done"]
    assert "80 degrees Celsius" in events[-1][1]["answer"]
    assert_citations_resolve(events[-1][1]["answer"], events[0][1]["citations"])


@pytest.mark.parametrize("stream", [False, True])
def test_nothing_relevant_is_a_plain_not_found_answer(api, knowledge_base, llm, stream):
    response = ask(api, question=OFF_TOPIC_QUESTION, stream=stream)
    if stream:
        events = sse_events(response)
        assert events[0] == ("citations", events[0][1]) and events[0][1]["citations"] == []
        body = events[-1][1]
    else:
        body = response.json()
        assert body["citations"] == []
    assert body["answer"] == NOT_FOUND_ANSWER and body["found"] is False
    assert llm.requests_to(CHAT) == []


@pytest.mark.parametrize(
    ("status", "code", "http_status", "api_code"),
    [(401, None, 502, "llm_auth_failed"), (429, None, 503, "llm_rate_limited"), (500, None, 502, "llm_unavailable")],
)
def test_llm_errors_are_json_errors_with_a_code(api, knowledge_base, llm, status, code, http_status, api_code, caplog):
    llm.fail_next(CHAT, status=status, code=code)
    response = ask(api, question="How do bees make honey?")
    assert response.status_code == http_status
    assert error(response)["code"] == api_code
    assert any(api_code in record.getMessage() for record in caplog.records)


def test_an_llm_timeout_is_a_504(api, knowledge_base, llm):
    llm.delay_next(CHAT, 2.5)
    response = ask(api, question="How do bees make honey?")
    assert response.status_code == 504 and error(response)["code"] == "llm_timeout"


@pytest.mark.parametrize(("status", "api_code"), [(401, "llm_auth_failed"), (429, "llm_rate_limited")])
def test_llm_errors_while_streaming_are_an_error_event(api, knowledge_base, llm, status, api_code):
    llm.fail_next(CHAT, status=status)
    events = sse_events(ask(api, question="How do bees make honey?", stream=True))
    assert [name for name, _ in events] == ["citations", "error"]
    assert events[-1][1]["error"]["code"] == api_code and events[-1][1]["error"]["message"]


def test_a_stream_broken_halfway_ends_with_an_error_event(api, knowledge_base, llm):
    llm.chat_answer = "Bees make honey from the nectar of flowers, carried home in their honey stomach [1]."
    llm.chat_stream_error = "upstream model crashed"
    events = sse_events(ask(api, question="How do bees make honey?", stream=True))
    names = [name for name, _ in events]
    assert names[0] == "citations" and "delta" in names and names[-1] == "error"
    assert events[-1][1]["error"]["code"] == "llm_unavailable"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"question": ""}, "question"),
        ({"question": "   "}, "question"),
        ({}, "question"),
        ({"question": "x" * 1001}, "question"),
        ({"question": "tea", "mode": "magic"}, "mode"),
        ({"question": "tea", "limit": 0}, "limit"),
        ({"question": "tea", "limit": 1000}, "limit"),
        ({"question": "tea", "limit": "many"}, "limit"),
        ({"question": "tea", "source": "nowhere"}, "source"),
        ({"question": "tea", "stream": "sometimes"}, "stream"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(api, settings, body, field):
    settings.SEARCH_MAX_QUERY_CHARS = 1000
    response = ask(api, **body)
    assert response.status_code == 400
    assert field in error(response)["fields"], response.json()


def test_a_source_filter_limits_the_passages(api, knowledge_base):
    body = ask(api, question="How do bees make honey?", source="workshop", mode="keyword").json()
    assert all(c["source"] == "workshop" for c in body["citations"])


def test_a_read_scoped_key_may_ask(client, api_key, knowledge_base):
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {api_key('read')}"
    assert ask(client, question="How do bees make honey?").status_code == 200


def test_anonymous_callers_may_ask_only_when_search_is_public(client, settings, knowledge_base):
    settings.SEARCH_PUBLIC = False
    assert ask(client, question="How do bees make honey?").status_code in (401, 403)
    settings.SEARCH_PUBLIC = True
    assert ask(client, question="How do bees make honey?").status_code == 200


def test_a_session_must_send_the_csrf_token_the_page_gives(knowledge_base, django_user_model):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(django_user_model.objects.create_user("reader", password="pw"))
    assert ask(client, question="How do bees make honey?").status_code == 403
    page = client.get("/").content.decode()
    token = re.search(r'<meta name="csrf-token" content="([^"]+)">', page).group(1)
    response = client.post(
        "/api/ask/",
        {"question": "How do bees make honey?"},
        content_type="application/json",
        headers={"X-CSRFToken": token},
    )
    assert response.status_code == 200, response.content


def test_the_openapi_schema_documents_ask(api):
    response = api.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    operation = response.json()["paths"]["/api/ask/"]["post"]
    assert operation["summary"] == "Answer a question with citations"
    assert "requestBody" in operation and "200" in operation["responses"]
