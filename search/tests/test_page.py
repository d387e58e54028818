"""The search page at /: who may see it, server-rendered results, errors in the page, Ask without JavaScript."""

from __future__ import annotations

import re

import pytest

from documents.models import Source
from documents.services import document_ingest
from search.answers.generate import NOT_FOUND_ANSWER
from search.tests.ask_fixtures import OFF_TOPIC_QUESTION, knowledge_base_fixture  # noqa: F401

pytestmark = [pytest.mark.django_db]


@pytest.fixture
def reader(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("reader", password="pw"))
    return client


def page(client, **params):
    response = client.get("/", params)
    return response, response.content.decode()


def test_anonymous_visitors_are_sent_to_the_login_page(client, settings):
    settings.SEARCH_PUBLIC = False
    response = client.get("/")
    assert response.status_code == 302 and response["Location"] == "/login/?next=/"


def test_everyone_may_search_when_search_is_public(client, settings):
    settings.SEARCH_PUBLIC = True
    response, html = page(client)
    assert response.status_code == 200
    assert '<label for="q"' in html and 'id="q" name="q"' in html


def test_the_empty_page_has_labelled_controls_and_an_answer_region(reader):
    Source.objects.create(name="handbook")
    response, html = page(reader)
    assert response.status_code == 200
    assert '<label for="source">Source</label>' in html and "<legend>Mode</legend>" in html
    assert re.search(r'<input type="radio" name="mode" value="hybrid"\s+checked>', html)  # SEARCH_DEFAULT_MODE
    assert re.search(r'<option value="\d+"\s*>handbook</option>', html)
    assert 'aria-live="polite"' in html and 'name="viewport"' in html
    assert '<meta name="csrf-token" content="' in html
    assert "/static/search/app.css" in html and "/static/search/app.js" in html
    # The follow-up box's hint fits any corpus (it used to suggest "side effects").
    assert 'placeholder="Ask a follow-up question"' in html


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["keyword", "semantic", "hybrid"])
def test_a_search_renders_results_with_links_snippets_count_and_timing(reader, knowledge_base, mode):
    response, html = page(reader, q="how do bees make honey", mode=mode)
    assert response.status_code == 200
    first = html[html.index('class="result"') :]
    bees = knowledge_base["bees"]
    # The title opens the document view at the hit; the document's own URL is linked beside it.
    assert re.search(
        rf'<h3><a href="/documents/{bees.pk}/\?chunk=[0-9a-f-]{{36}}#hit">How bees make honey</a></h3>', first
    )
    assert '<a class="url" href="https://example.com/bees" rel="noopener noreferrer">' in first
    assert re.search(r"Results 1\u2013\d+ of \d+", html) and re.search(rf"· {mode} · \d+ ms", html)
    if mode != "semantic":
        assert "<mark>" in first[: first.index("</li>")]
    assert re.search(rf'value="{mode}"\s+checked', html)


@pytest.mark.slow
def test_the_source_filter_narrows_the_results(reader, knowledge_base):
    workshop = Source.objects.get(name="workshop")
    _, everything = page(reader, q="bees tyre", mode="keyword")
    assert "How bees make honey</a>" in everything and "Fixing a flat bicycle tyre</a>" in everything
    _, html = page(reader, q="bees tyre", mode="keyword", source=str(workshop.pk))
    assert "How bees make honey</a>" not in html and "Fixing a flat bicycle tyre</a>" in html
    assert re.search(rf'<option value="{workshop.pk}"\s+selected>workshop</option>', html)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"q": "x" * 2000}, "Search: The query is longer than"),
        ({"q": "tea", "mode": "magic"}, "Mode: "),
        ({"q": "tea", "source": "99999"}, "Source: No source with id or name"),
        ({"q": "tea", "offset": "-3"}, "Page: "),
    ],
)
def test_bad_input_is_a_message_in_the_page(reader, params, message):
    response, html = page(reader, **params)
    assert response.status_code == 400
    errors = html[html.index('id="errors"') : html.index("</div>", html.index('id="errors"'))]
    assert 'role="alert"' in errors and message in errors
    assert 'id="q"' in html  # the form is still there to fix the query


def test_the_page_without_a_query_has_no_message(reader):
    response, html = page(reader)
    assert response.status_code == 200 and 'role="alert" class="errors" hidden' in html


@pytest.mark.parametrize("blank", ["", "   "])
def test_a_blank_search_asks_for_something_to_search_for(reader, blank):
    # What the form sends without JavaScript when Search is pressed with an empty box.
    response, html = page(reader, q=blank, mode="hybrid", source="")
    assert response.status_code == 200 and 'class="result"' not in html
    errors = html[html.index('id="errors"') : html.index("</div>", html.index('id="errors"'))]
    assert "hidden" not in errors and "<p>Type something to search for.</p>" in errors


@pytest.mark.slow
def test_document_text_and_urls_cannot_inject_markup(reader, fresh_store, run_commit_hooks):
    source = Source.objects.create(name="evil")
    with run_commit_hooks():
        document_ingest(
            source=source,
            title="<img src=x onerror=alert(1)> bees",
            url="javascript:alert(1)",
            text="Bees <script>alert(2)</script> make honey & wax in the hive.",
        )
    _, html = page(reader, q="Do bees make honey and wax?", mode="keyword", ask="1")
    assert "<script>alert" not in html and "<img src=x" not in html and 'href="javascript:' not in html
    assert "&lt;img src=x onerror=alert(1)&gt; bees" in html  # the title, shown as text
    answer = html[html.index('id="answer-text"') : html.index('id="answer-meta"')]
    assert "Bees &lt;script&gt;alert(2)&lt;/script&gt; make honey &amp; wax in the hive" in answer


@pytest.mark.slow
def test_asking_without_javascript_renders_a_cited_answer(reader, knowledge_base):
    response, html = page(reader, q="How do bees make honey?", mode="hybrid", ask="1")
    assert response.status_code == 200
    answer = html[html.index('id="answer-text"') : html.index('id="answer-meta"')]
    assert "Honey bees make honey from the nectar of flowers" in answer
    citation = re.search(r'<a class="cite" href="#passage-(\d+)" data-n="\d+"', answer)
    assert citation, answer
    assert f'id="passage-{citation.group(1)}"' in html
    passage = html[html.index(f'id="passage-{citation.group(1)}"') :]
    assert f'<h4><a href="/documents/{knowledge_base["bees"].pk}/?chunk=' in passage[: passage.index("</li>")]
    assert '<a class="url" href="https://example.com/bees"' in passage[: passage.index("</li>")]
    # The offline provider says what it did and how to get written answers, not its internal name.
    meta = html[html.index('id="answer-meta"') : html.index("</p>", html.index('id="answer-meta"'))]
    assert re.search(
        r">Quoted from the sources \(no language model configured: set LLM_MODEL for written answers\) · \d+ ms$", meta
    ), meta
    assert "extractive" not in meta


@pytest.mark.slow
def test_asking_about_something_unknown_says_so_in_the_page(reader, knowledge_base):
    _, html = page(reader, q=OFF_TOPIC_QUESTION, mode="hybrid", ask="1")
    assert NOT_FOUND_ANSWER in html and 'class="cite"' not in html
    assert re.search(r'id="answer-meta" class="meta">Nothing found in the sources · \d+ ms</p>', html)


@pytest.mark.slow
def test_an_llm_answer_names_its_model(reader, knowledge_base, settings, openai_server):
    settings.LLM_MODEL = "test-chat-model"
    settings.OPENAI_BASE_URL = openai_server.base_url
    openai_server.chat_answer = "Worker bees bring nectar home [1]."
    _, html = page(reader, q="How do bees make honey?", ask="1")
    assert re.search(r'id="answer-meta" class="meta">Answered by test-chat-model · \d+ ms</p>', html)


@pytest.mark.slow
def test_an_llm_failure_is_a_message_in_the_page(reader, knowledge_base, settings, openai_server):
    settings.LLM_MODEL = "test-chat-model"
    settings.OPENAI_BASE_URL = openai_server.base_url
    settings.LLM_MAX_RETRIES = 0
    openai_server.fail_next("/v1/chat/completions", status=401)
    response, html = page(reader, q="How do bees make honey?", ask="1")
    assert response.status_code == 200  # the results are still there
    assert "check OPENAI_API_KEY" in html and 'class="result"' in html


@pytest.mark.slow
def test_the_javascript_ask_gets_a_page_that_starts_the_answer(reader, knowledge_base, settings):
    settings.LLM_MODEL = "test-chat-model"
    _, html = page(reader, q="How do bees make honey?", mode="semantic", ask="live")
    section = html[html.index('<section id="answer"') : html.index('<h2 id="answer-heading"')]
    assert 'data-autoask="true"' in section and 'data-question="How do bees make honey?"' in section
    assert 'data-mode="semantic"' in section and "hidden" not in section
    assert 'data-streams="true"' in html
    assert '<noscript><p><a href="?q=How+do+bees+make+honey%3F&amp;mode=semantic&amp;ask=1">' in html


@pytest.mark.slow
def test_a_conversation_in_the_address_is_opened_not_asked_again(reader, knowledge_base):
    from search.models import Conversation

    asked = reader.post("/api/ask/", {"question": "How do bees make honey?"}, content_type="application/json")
    conversation = asked.json()["conversation"]
    # What app.js puts in the address after the answer; an ask=live left in it is not acted on.
    response, html = page(reader, q="How do bees make honey?", mode="hybrid", ask="live", conversation=conversation)
    assert response.status_code == 200 and 'class="result"' in html
    assert f'data-open="{conversation}"' in html and "data-autoask" not in html
    assert Conversation.objects.count() == 1


def test_a_broken_conversation_id_in_the_address_is_a_message(reader):
    response, html = page(reader, conversation="not-an-id")
    assert response.status_code == 400 and "data-open" not in html
    assert "That conversation link is broken: its id is not valid." in html


@pytest.mark.slow
def test_a_conversation_is_read_only_by_the_user_who_started_it(reader, knowledge_base, django_user_model):
    from django.test import Client

    asked = reader.post("/api/ask/", {"question": "How do bees make honey?"}, content_type="application/json")
    conversation = asked.json()["conversation"]
    assert reader.get(f"/api/conversations/{conversation}/").status_code == 200
    other = Client()
    other.force_login(django_user_model.objects.create_user("other", password="pw"))
    assert other.get(f"/api/conversations/{conversation}/").status_code == 404
    assert other.get("/api/conversations/").json() == []
