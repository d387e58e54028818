"""A newcomer's first corpus: a few short documents on unrelated subjects, searched and asked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from documents.models import Source
from documents.services import document_ingest

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

CORPUS = json.loads((Path(__file__).parent / "data" / "newcomer_corpus.json").read_text())
FIRST_FOUR = ["tides", "sourdough", "volcanoes", "postgres_fts"]


@pytest.fixture
def four_pages(fresh_store, run_commit_hooks):
    with run_commit_hooks():
        source = Source.objects.create(name="my-notes")
        return {
            key: document_ingest(
                source=source, title=CORPUS["documents"][key]["title"], text=CORPUS["documents"][key]["text"]
            ).document
            for key in FIRST_FOUR
        }


@pytest.mark.parametrize("mode", ["semantic", "hybrid"])
def test_a_strong_semantic_match_is_not_outranked_by_a_lone_common_word(api, four_pages, mode):
    # The tides page shares no word with the question; the sourdough page shares only "day".
    body = api.get("/api/search/", {"q": "why does seawater go up and down twice a day", "mode": mode}).json()
    assert body["results"][0]["document_id"] == four_pages["tides"].pk


def test_a_keyword_only_question_still_finds_its_page_in_hybrid(api, four_pages):
    body = api.get("/api/search/", {"q": "websearch_to_tsquery GIN index", "mode": "hybrid"}).json()
    assert body["results"][0]["document_id"] == four_pages["postgres_fts"].pk


@pytest.mark.parametrize("question", ["what day of the week is best to buy flights", "who painted the mona lisa"])
def test_off_topic_questions_get_not_found(api, four_pages, question):
    response = api.post("/api/ask/", {"question": question}, content_type="application/json")
    assert response.json()["status"] == "not_found"


@pytest.mark.parametrize(
    ("question", "key"), [("why do some volcanoes explode", "volcanoes"), ("how do I feed a starter", "sourdough")]
)
def test_questions_the_pages_answer_are_answered_from_them(api, four_pages, question, key):
    body = api.post("/api/ask/", {"question": question}, content_type="application/json").json()
    assert body["status"] == "answered"
    assert body["citations"][0]["document_id"] == four_pages[key].pk


def test_search_marks_hits_the_evidence_barely_supports(api, four_pages):
    body = api.get("/api/search/", {"q": "why does seawater go up and down twice a day", "mode": "hybrid"}).json()
    by_document = {hit["document_id"]: hit for hit in body["results"]}
    assert by_document[four_pages["tides"].pk]["low_confidence"] is False
    assert by_document[four_pages["sourdough"].pk]["low_confidence"] is True


def test_the_page_shows_weak_matches_as_such(staff_client, four_pages):
    page = staff_client.get("/", {"q": "why does seawater go up and down twice a day", "mode": "hybrid"})
    assert page.status_code == 200
    assert page.content.count(b"weak match") >= 1


def test_a_query_of_only_common_words_says_why_it_finds_nothing(api, four_pages, staff_client):
    body = api.get("/api/search/", {"q": "what is the", "mode": "keyword"}).json()
    assert body["results"] == []
    assert any("only very common words" in warning for warning in body["warnings"])
    page = staff_client.get("/", {"q": "what is the", "mode": "keyword"})
    assert b"only very common words" in page.content


@pytest.mark.parametrize("mode", ["semantic", "hybrid"])
def test_common_words_only_in_semantic_and_hybrid_say_the_results_may_not_be_relevant(
    api, four_pages, staff_client, mode
):
    # Both still return the passages nearest to "what is the": they must not pass for relevant ones.
    body = api.get("/api/search/", {"q": "what is the", "mode": mode}).json()
    assert body["results"]
    assert [w for w in body["warnings"] if "only very common words" in w] == [
        "The query has only very common words, so these results are by meaning alone and may not be relevant: "
        "add a word that names what you are looking for."
    ]
    page = staff_client.get("/", {"q": "what is the", "mode": mode}).content.decode()
    warnings = page[page.index('<ul class="warnings" role="status">') :]
    assert "by meaning alone and may not be relevant" in warnings[: warnings.index("</ul>")]
    # A query with a word that names something gets no such warning.
    named = api.get("/api/search/", {"q": "what is the tide", "mode": mode}).json()
    assert not any("common words" in w for w in named.get("warnings", []))
