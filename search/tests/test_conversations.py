"""Conversations through POST /api/ask/ and /api/conversations/: follow-ups, owners, the LLM rewrite."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from ragsite.tests.openai_server import chat_completions_handler
from search.conversations import conversations_purge, is_follow_up, rule_rewrite
from search.models import Conversation, Turn
from search.tests.ask_fixtures import knowledge_base_fixture  # noqa: F401

CHAT = "/v1/chat/completions"


def ask(client, question, **extra):
    response = client.post("/api/ask/", {"question": question, **extra}, content_type="application/json")
    assert response.status_code == 200, response.content
    return response.json()


# --- the offline rule -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("question", "follow_up"),
    [
        ("what about its side effects?", True),
        ("And the dosage?", True),
        ("Do they live in hives?", True),
        ("Why?", True),
        ("How is green tea made after picking?", False),
        ("Which enzymes do house bees add to nectar?", False),
    ],
)
def test_short_pronoun_led_or_referring_questions_are_follow_ups(question, follow_up):
    assert is_follow_up(question) is follow_up


def test_the_rule_carries_the_previous_querys_salient_words_into_a_follow_up():
    assert rule_rewrite("Do they collect pollen too?", ["How do honey bees make honey?"]) == (
        "Do they collect pollen too? honey bees"
    )
    # A question that stands alone is searched as asked.
    standalone = "Which enzymes do house bees add to nectar?"
    assert rule_rewrite(standalone, ["How is green tea made?"]) == standalone
    # Words already asked are not repeated; at most six are carried.
    long_before = "vitamin D deficiency bone density fractures elderly women calcium supplements trials"
    assert rule_rewrite("and its risks?", [long_before]) == (
        "and its risks? vitamin deficiency bone density fractures elderly"
    )


# --- through the API --------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.slow
def test_a_follow_up_is_searched_with_the_conversation_and_recorded(api, knowledge_base):
    first = ask(api, "How do bees make honey?")
    assert first["status"] == "answered" and first["rewritten_by"] == "none"
    assert first["searched_for"] == "How do bees make honey?"
    follow = ask(api, "And what do they add in the hive?", conversation=first["conversation"])
    assert follow["conversation"] == first["conversation"]
    assert follow["rewritten_by"] == "rule"
    assert follow["searched_for"].startswith("And what do they add in the hive?") and "bees" in follow["searched_for"]
    assert follow["citations"][0]["document_id"] == knowledge_base["bees"].pk
    turns = list(Turn.objects.filter(conversation_id=first["conversation"]).order_by("position"))
    assert [t.question for t in turns] == ["How do bees make honey?", "And what do they add in the hive?"]
    assert turns[1].searched_for == follow["searched_for"] and turns[1].status == "answered"
    assert turns[1].answer == follow["answer"] and turns[1].citations == follow["citations"]
    assert set(turns[1].timings) == {"rewrite_ms", "retrieve_ms", "total_ms"}


@pytest.mark.django_db
@pytest.mark.slow
def test_a_question_the_documents_do_not_cover_is_not_found_with_the_closest_titles(api, knowledge_base):
    body = ask(api, "Who won the football world cup in 2018?")
    assert body["status"] == "not_found" and body["found"] is False
    assert body["citations"] == []
    assert Turn.objects.get(conversation_id=body["conversation"]).status == "not_found"


@pytest.mark.django_db
@pytest.mark.slow
def test_conversations_belong_to_whoever_started_them(client, api, api_key, knowledge_base):
    mine = ask(api, "How is green tea made?")
    other = client.__class__(HTTP_AUTHORIZATION=f"Bearer {api_key('read')}")
    response = other.post(
        "/api/ask/", {"question": "and why?", "conversation": mine["conversation"]}, content_type="application/json"
    )
    assert response.status_code == 404 and "conversation" in json.dumps(response.json())
    assert other.get(f"/api/conversations/{mine['conversation']}/").status_code == 404
    assert other.delete(f"/api/conversations/{mine['conversation']}/").status_code == 404
    assert other.get("/api/conversations/").json() == []
    assert Conversation.objects.filter(pk=mine["conversation"]).exists()


@pytest.mark.django_db
@pytest.mark.slow
def test_the_owner_lists_reads_and_deletes_a_conversation(api, knowledge_base):
    first = ask(api, "How is green tea made?")
    ask(api, "how hot should the water be for it?", conversation=first["conversation"])
    listed = api.get("/api/conversations/").json()
    assert [(c["id"], c["title"], c["turn_count"]) for c in listed] == [
        (first["conversation"], "How is green tea made?", 2)
    ]
    detail = api.get(f"/api/conversations/{first['conversation']}/").json()
    assert [t["question"] for t in detail["turns"]] == ["How is green tea made?", "how hot should the water be for it?"]
    assert detail["turns"][1]["rewritten_by"] == "rule"
    assert api.delete(f"/api/conversations/{first['conversation']}/").status_code == 204
    assert not Conversation.objects.exists() and not Turn.objects.exists()
    assert api.get(f"/api/conversations/{first['conversation']}/").status_code == 404


@pytest.mark.django_db
@pytest.mark.slow
def test_a_streamed_answer_names_its_conversation_and_is_recorded(api, knowledge_base):
    first = ask(api, "How do bees make honey?")
    response = api.post(
        "/api/ask/",
        {"question": "what do they do in the hive?", "conversation": first["conversation"], "stream": True},
        content_type="application/json",
    )
    events = [
        (m.group(1), json.loads(m.group(2)))
        for m in re.finditer(r"event: (\w+)\ndata: (.*)\n\n", b"".join(response.streaming_content).decode())
    ]
    assert events[0][0] == "citations" and events[0][1]["conversation"] == first["conversation"]
    assert "bees" in events[0][1]["searched_for"]
    done = events[-1][1]
    assert events[-1][0] == "done" and done["status"] == "answered" and done["conversation"] == first["conversation"]
    assert Turn.objects.filter(conversation_id=first["conversation"]).count() == 2


@pytest.mark.django_db
def test_conversations_past_the_retention_are_purged(settings):
    settings.CONVERSATION_RETENTION_DAYS = 30
    old = Conversation.objects.create(owner="key:1", title="old")
    recent = Conversation.objects.create(owner="key:1", title="recent")
    Conversation.objects.filter(pk=old.pk).update(updated_at=timezone.now() - timedelta(days=31))
    assert conversations_purge() == 1
    assert list(Conversation.objects.values_list("title", flat=True)) == [recent.title]


@pytest.mark.django_db
@pytest.mark.slow
def test_conversations_show_in_the_admin(staff_client, api, knowledge_base):
    body = ask(api, "How do bees make honey?")
    listing = staff_client.get("/admin/search/conversation/")
    assert listing.status_code == 200 and b"How do bees make honey?" in listing.content
    page = staff_client.get(f"/admin/search/conversation/{body['conversation']}/change/")
    assert page.status_code == 200 and body["searched_for"].encode() in page.content


# --- the LLM path (a real openai client against a local server that rewrites for real) ---------------

REFERRING = re.compile(r"\b(they|them|their|it|its)\b", re.I)


def rewriting_chat_handler(server, request):
    """Rewrites like a model would: the pronouns of the last question become the first question's subject."""
    messages = request.json["messages"]
    if not messages[0]["content"].startswith("You rewrite the last question"):
        return chat_completions_handler(server, request)
    lines = [line[6:] for line in messages[1]["content"].splitlines() if line.startswith("User: ")]
    subject = re.sub(r"^(how|what|why|when|where|who)\s+(do|does|is|are)\s+", "", lines[0].rstrip("?"), flags=re.I)
    subject = subject.split(" make ")[0]
    server.last_rewrite = REFERRING.sub(subject, lines[-1])
    request.json["stream"] = False
    original, server.chat_answer = server.chat_answer, server.last_rewrite
    try:
        return chat_completions_handler(server, request)
    finally:
        server.chat_answer = original


@pytest.fixture
def llm(settings, openai_server):
    settings.LLM_MODEL = "test-chat-model"
    settings.OPENAI_BASE_URL = openai_server.base_url
    settings.OPENAI_API_KEY = "sk-test-key"
    settings.OPENAI_TIMEOUT = 2.0
    settings.LLM_MAX_RETRIES = 0
    openai_server.route(CHAT, rewriting_chat_handler)
    return openai_server


@pytest.mark.django_db
@pytest.mark.slow
def test_with_an_llm_the_follow_up_is_rewritten_by_it_and_the_answer_sees_the_last_turns(api, knowledge_base, llm):
    llm.chat_answer = "Honey bees make honey from nectar [1]."
    first = ask(api, "How do bees make honey?")
    llm.chat_answer = "House bees add enzymes [1]."
    follow = ask(api, "What do they add to the nectar?", conversation=first["conversation"])
    assert follow["rewritten_by"] == "llm"
    assert follow["searched_for"] == llm.last_rewrite == "What do bees add to the nectar?"
    answer_request = llm.requests_to(CHAT)[-1].json
    roles = [m["role"] for m in answer_request["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
    assert answer_request["messages"][1]["content"] == "How do bees make honey?"
    assert answer_request["messages"][2]["content"] == first["answer"]
    turn = Turn.objects.get(conversation_id=first["conversation"], position=1)
    assert turn.rewritten_by == "llm" and turn.timings["rewrite_ms"] > 0


@pytest.mark.django_db
@pytest.mark.slow
def test_a_failing_llm_rewrite_falls_back_to_the_rule_and_says_so(api, knowledge_base, llm):
    llm.chat_answer = "Honey bees make honey from nectar [1]."
    first = ask(api, "How do bees make honey?")
    llm.fail_next(CHAT, status=500)
    follow = ask(api, "What do they add to the nectar?", conversation=first["conversation"])
    assert follow["rewritten_by"] == "rule" and "bees" in follow["searched_for"]
    assert any("offline rule" in w for w in follow.get("warnings", []))
