"""Answers: passages within a budget, citation checking, the extractive and OpenAI providers."""

from __future__ import annotations

import re

import pytest

from documents.tokenizer import get_tokenizer
from search.answers.citations import CitationFilter, citations_clean
from search.answers.errors import LLMAuthError, LLMRateLimited, LLMTimeout, LLMUnavailable
from search.answers.extractive import ExtractiveProvider, passage_sentences
from search.answers.generate import NOT_FOUND_ANSWER, UNCITED_WARNING, answer_events, answer_generate
from search.answers.llm import OpenAIChatProvider
from search.answers.passages import answer_context_build
from search.answers.retrieval import answer_retrieve
from search.selectors import SearchResult
from search.tests.ask_fixtures import DOCUMENTS, OFF_TOPIC_QUESTION, knowledge_base_fixture  # noqa: F401

CHAT = "/v1/chat/completions"


def result(n: int, text: str, **kwargs) -> SearchResult:
    defaults = {
        "chunk_id": f"00000000-0000-0000-0000-{n:012d}",
        "document_id": n,
        "title": f"Doc {n}",
        "url": f"https://example.com/{n}",
        "source": "notes",
        "snippet": text[:40],
        "score": 1.0 / n,
        "rank": n,
        "text": text,
    }
    return SearchResult(**(defaults | kwargs))


def markers(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"\[(\d+)\]", text)]


# --- Citation checking ------------------------------------------------------------------------


def test_citations_keep_given_numbers_and_drop_the_rest():
    text, cited = citations_clean(
        "Tea is steamed [1] and oxidised [9]. Both [1, 3] and [2-4]; see [0] and [x].", count=3
    )
    assert text == "Tea is steamed [1] and oxidised. Both [1][3] and [2][3]; see and [x]."
    assert cited == [1, 3, 2]


def test_a_repeated_marker_is_said_once():
    assert citations_clean("Tea [2][2] [2, 1] is green [1].", count=2)[0] == "Tea [2] [1] is green [1]."


@pytest.mark.parametrize("size", [1, 2, 3, 4, 7])
def test_markers_split_across_stream_pieces_are_checked_whole(size):
    text = "Green tea is steamed [1] and black tea [12] is oxidised [2]. See [1, 12]."
    cleaner = CitationFilter(2)
    pieces = [cleaner.feed(text[i : i + size]) for i in range(0, len(text), size)]
    pieces.append(cleaner.flush())
    assert "".join(pieces) == "Green tea is steamed [1] and black tea is oxidised [2]. See [1]."
    assert cleaner.cited == [1, 2] and cleaner.dropped == ["12", "12"]


# --- Context assembly -------------------------------------------------------------------------


def test_passages_are_numbered_in_rank_order_without_duplicate_texts():
    results = [
        result(1, "Green tea is steamed."),
        result(2, "Green  TEA is steamed!"),  # the same words under another URL
        result(3, "Black tea is oxidised."),
    ]
    passages = answer_context_build(results=results, budget_tokens=1000)
    assert [(p.n, p.chunk_id) for p in passages] == [(1, results[0].chunk_id), (2, results[2].chunk_id)]
    assert passages[1].prompt_text() == "[2] Doc 3\nSource: https://example.com/3\nBlack tea is oxidised."


def test_passages_stop_at_the_token_budget_and_the_last_is_cut_to_fit():
    tokenizer = get_tokenizer()
    long_text = " ".join(f"Sentence number {i} talks about tea and water." for i in range(60))
    results = [result(i, f"{i} " + long_text) for i in range(1, 6)]
    budget = 500
    passages = answer_context_build(results=results, budget_tokens=budget)
    used = sum(len(tokenizer.encode(p.prompt_text(), add_special_tokens=False).ids) + 2 for p in passages)
    assert 1 <= len(passages) < 5 and used <= budget
    assert len(passages[-1].text) < len(results[len(passages) - 1].text)  # cut, not dropped


def test_heading_path_and_title_label_the_passage():
    passages = answer_context_build(
        results=[result(1, "Text.", title="Guide", heading_path=["Guide", "Hive", "Frames"])],
        budget_tokens=200,
    )
    assert passages[0].label == "Guide > Hive > Frames"


# --- Retrieval and relevance (real ingest, real model, real stores) ---------------------------


@pytest.mark.django_db
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["keyword", "semantic", "hybrid"])
def test_retrieval_finds_the_passage_that_answers(knowledge_base, mode):
    context = answer_retrieve(question="How do bees make honey?", mode=mode)
    assert context.found and context.mode == mode
    assert context.passages[0].document_id == knowledge_base["bees"].pk
    assert [p.n for p in context.passages] == list(range(1, len(context.passages) + 1))
    if mode != "keyword":
        assert context.passages[0].similarity > 0.3


@pytest.mark.django_db
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["keyword", "semantic", "hybrid"])
def test_nothing_relevant_gives_the_plain_not_found_answer(knowledge_base, mode):
    context = answer_retrieve(question=OFF_TOPIC_QUESTION, mode=mode)
    assert not context.found
    answer = answer_generate(context=context, provider=ExtractiveProvider())
    assert answer.text == NOT_FOUND_ANSWER and answer.cited == [] and answer.found is False


@pytest.mark.django_db
@pytest.mark.slow
def test_the_similarity_floor_is_a_setting(knowledge_base, settings):
    settings.ASK_MIN_SIMILARITY = 0.99
    settings.ASK_LOW_SIMILARITY_FACTOR = 1.0
    assert not answer_retrieve(question="How do bees make honey?", mode="semantic").found
    settings.ASK_LOW_SIMILARITY_FACTOR = 0.5  # the question's words are all in the bees document
    assert answer_retrieve(question="How do bees make honey?", mode="semantic").found
    settings.ASK_MIN_SIMILARITY = -1.0
    assert len(answer_retrieve(question=OFF_TOPIC_QUESTION, mode="semantic").passages) == 3


# --- The extractive provider ------------------------------------------------------------------


def test_sentences_skip_headings_bullets_and_a_cut_first_fragment():
    passage = answer_context_build(
        results=[
            result(
                1,
                "cut off by the chunk. Bees make honey from nectar, e.g. from clover.\n# Heading\n"
                "- Workers forage up to five kilometres away\n\nShort one.",
            )
        ],
        budget_tokens=500,
    )[0]
    assert [s.text for s in passage_sentences(passage)] == [
        "Bees make honey from nectar, e.g. from clover.",
        "Workers forage up to five kilometres away",
    ]


TIDES = """Ocean tides

Along most coasts the level of the ocean climbs to a high water
mark and falls back to a low one twice in a little more than a
day. The Moon's gravity pulls hardest on the side of the Earth
that faces it, so the water there bulges towards it; a second
bulge forms on the far side, where the pull is weakest. Two
bulges of water form, and the planet turns beneath them.
"""


def _passage(text: str):
    return answer_context_build(results=[result(1, text)], budget_tokens=2000)[0]


def test_hard_wrapped_lines_are_joined_into_whole_sentences():
    sentences = [s.text for s in passage_sentences(_passage(TIDES))]
    assert sentences == [
        "Along most coasts the level of the ocean climbs to a high water mark and falls back to a low one "
        "twice in a little more than a day.",
        "The Moon's gravity pulls hardest on the side of the Earth that faces it, so the water there bulges "
        "towards it; a second bulge forms on the far side, where the pull is weakest.",
        "Two bulges of water form, and the planet turns beneath them.",
    ]


def test_markdown_lists_headings_tables_and_code_are_not_run_together():
    text = (
        "## Brewing\n\nUse water at about 80 degrees for green\ntea and boiling water for black tea.\n\n"
        "- Warm the pot before you add\n  the leaves to it.\n- Never squeeze the bag into the cup.\n\n"
        "| step | time |\n|---|---|\n| steep | three minutes |\n\n"
        "```\nprint('this is code, not a sentence.')\n```\n> Tea is a quiet drink for\n> a long afternoon."
    )
    assert [s.text for s in passage_sentences(_passage(text))] == [
        "Use water at about 80 degrees for green tea and boiling water for black tea.",
        "Warm the pot before you add the leaves to it.",
        "Never squeeze the bag into the cup.",
        "Tea is a quiet drink for a long afternoon.",
    ]


def test_quoted_sentences_carry_no_markdown_syntax():
    text = (
        "Read [the **grinder calibration** guide](https://example.com/grind) before you pull a shot.\n\n"
        "A _ristretto_ uses `half` the water of an espresso and tastes sweeter."
    )
    assert [s.text for s in passage_sentences(_passage(text))] == [
        "Read the grinder calibration guide before you pull a shot.",
        "A ristretto uses half the water of an espresso and tastes sweeter.",
    ]


def test_a_sentence_cut_by_the_chunk_end_or_too_long_to_be_one_is_never_quoted():
    text = "Bees make honey from the nectar of flowers. Worker bees carry the nectar back to the hive in"
    assert [s.text for s in passage_sentences(_passage(text))] == ["Bees make honey from the nectar of flowers."]
    run_on = "Word " * 120 + "end."
    assert [s.text for s in passage_sentences(_passage(f"A short sentence stands here. {run_on}"))] == [
        "A short sentence stands here."
    ]


@pytest.mark.django_db
@pytest.mark.slow
def test_the_extractive_answer_over_a_hard_wrapped_file_reads_as_whole_sentences(fresh_store, run_commit_hooks):
    from documents.models import Source
    from documents.services import document_ingest

    with run_commit_hooks():
        source = Source.objects.create(name="notes")
        document_ingest(source=source, title="Ocean tides", url="", text=TIDES, mime="text/plain")
    context = answer_retrieve(question="why does seawater go up and down twice a day", mode="hybrid")
    answer = answer_generate(context=context, provider=ExtractiveProvider())
    assert answer.found
    flat = " ".join(TIDES.split())
    quoted = re.findall(r"(.+?) \[\d+\]([.!?])\s*", answer.text)
    assert quoted
    for words, end in quoted:
        sentence = words.strip() + end
        assert sentence in flat and sentence[0].isupper(), sentence


@pytest.mark.django_db
@pytest.mark.slow
@pytest.mark.parametrize(
    ("question", "key", "expected"),
    [
        ("How do bees make honey?", "bees", "Honey bees make honey from the nectar of flowers"),
        ("How hot should the water be for green tea?", "tea", "80 degrees Celsius"),
        ("How do I find the puncture in an inner tube?", "bicycle", "find the puncture"),
    ],
)
def test_the_extractive_answer_is_cited_sentences_of_the_passages(knowledge_base, question, key, expected):
    context = answer_retrieve(question=question, mode="hybrid")
    answer = answer_generate(context=context, provider=ExtractiveProvider())
    assert answer.provider == "extractive" and answer.found and answer.warnings == []
    assert expected in answer.text
    sentences = re.findall(r"(.+?) \[(\d+)\]([.!?]?)\s*", answer.text)
    assert 1 <= len(sentences) <= 4
    by_n = {p.n: p for p in context.passages}
    for words, n, end in sentences:
        # Every sentence is quoted from the passage its marker names (line wraps read as spaces).
        assert (words + end) in " ".join(by_n[int(n)].text.split())
    assert by_n[int(sentences[0][1])].document_id == knowledge_base[key].pk
    assert answer.cited == sorted(set(answer.cited), key=answer.cited.index)
    assert set(markers(answer.text)) == set(answer.cited) <= set(by_n)


@pytest.mark.django_db
@pytest.mark.slow
def test_the_extractive_answer_keeps_two_to_four_sentences(knowledge_base):
    context = answer_retrieve(question="What do house bees do with nectar in the hive?", mode="hybrid")
    text = answer_generate(context=context, provider=ExtractiveProvider()).text
    assert 2 <= len(markers(text)) <= 4


# --- The OpenAI-compatible provider (real openai client, local server) -----------------------


@pytest.fixture
def llm(settings, openai_server):
    settings.LLM_MODEL = "test-chat-model"
    settings.OPENAI_BASE_URL = openai_server.base_url
    settings.OPENAI_API_KEY = "sk-test-key"
    settings.OPENAI_TIMEOUT = 1.0
    settings.LLM_MAX_RETRIES = 0
    return openai_server


def tea_context():
    from search.answers.passages import AnswerContext

    passages = answer_context_build(
        results=[result(1, DOCUMENTS["tea"][3], title="Green tea"), result(2, DOCUMENTS["bees"][3], title="Bees")],
        budget_tokens=1000,
    )
    return AnswerContext(question="How is green tea made?", mode="hybrid", passages=passages)


def test_the_llm_gets_numbered_passages_and_an_answer_only_from_them_prompt(llm):
    llm.chat_answer = "Green tea leaves are steamed soon after picking [1]."
    answer = answer_generate(context=tea_context(), provider=OpenAIChatProvider.from_settings())
    assert answer.text == "Green tea leaves are steamed soon after picking [1]." and answer.cited == [1]
    assert answer.provider == "openai" and answer.model == "test-chat-model"
    (request,) = llm.requests_to(CHAT)
    assert request.headers["authorization"] == "Bearer sk-test-key"
    assert request.json["model"] == "test-chat-model" and not request.json.get("stream")
    system, user = request.json["messages"]
    assert system["role"] == "system" and "only" in system["content"] and "I don't know" in system["content"]
    assert user["content"].startswith("Passages:\n\n[1] Green tea\nSource: https://example.com/1\nGreen tea is made")
    assert "\n\n[2] Bees\n" in user["content"] and user["content"].endswith("Question: How is green tea made?")


def test_citations_the_llm_was_not_given_are_dropped(llm):
    llm.chat_answer = "Leaves are steamed [1] then dried [9]; black tea oxidises [2][3]."
    answer = answer_generate(context=tea_context(), provider=OpenAIChatProvider.from_settings())
    assert answer.text == "Leaves are steamed [1] then dried; black tea oxidises [2]."
    assert answer.cited == [1, 2]


def test_a_streamed_llm_answer_arrives_in_pieces_with_checked_citations(llm):
    llm.chat_answer = "Leaves are steamed [1] then dried [9]. Bees are unrelated [2]."
    llm.chat_chunk_chars = 2  # markers arrive split: "[", "9]"...
    events = list(answer_events(context=tea_context(), provider=OpenAIChatProvider.from_settings()))
    deltas = [data["text"] for event, data in events if event == "delta"]
    assert len(deltas) > 5 and all("[9" not in d for d in deltas)
    assert events[-1] == ("done", events[-1][1])
    done = events[-1][1]
    assert "".join(deltas) == done["answer"] == "Leaves are steamed [1] then dried. Bees are unrelated [2]."
    assert done["cited"] == [1, 2] and done["found"] is True
    assert llm.requests_to(CHAT)[0].json["stream"] is True


def test_an_llm_answer_citing_nothing_is_allowed_but_flagged(llm):
    llm.chat_answer = "Green tea is steamed."
    answer = answer_generate(context=tea_context(), provider=OpenAIChatProvider.from_settings())
    assert answer.text == "Green tea is steamed." and answer.cited == [] and answer.warnings == [UNCITED_WARNING]


def test_an_llm_that_does_not_know_is_reported_as_not_found(llm):
    llm.chat_answer = "I don't know."
    answer = answer_generate(context=tea_context(), provider=OpenAIChatProvider.from_settings())
    assert answer.found is False and answer.warnings == []


@pytest.mark.django_db
@pytest.mark.slow
def test_the_llm_is_not_called_when_nothing_is_relevant(knowledge_base, llm):
    context = answer_retrieve(question=OFF_TOPIC_QUESTION, mode="hybrid")
    answer = answer_generate(context=context, provider=OpenAIChatProvider.from_settings())
    assert answer.text == NOT_FOUND_ANSWER and llm.requests_to(CHAT) == []


@pytest.mark.parametrize(
    ("status", "code", "error", "api_code"),
    [
        (401, None, LLMAuthError, "llm_auth_failed"),
        (429, None, LLMRateLimited, "llm_rate_limited"),
        (429, "insufficient_quota", LLMAuthError, "llm_auth_failed"),
        (500, None, LLMUnavailable, "llm_unavailable"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_llm_errors_become_answer_errors_with_a_code(llm, status, code, error, api_code, stream):
    llm.fail_next(CHAT, status=status, code=code)
    provider = OpenAIChatProvider.from_settings()
    with pytest.raises(error) as caught:
        if stream:
            list(provider.stream(question="q", passages=tea_context().passages))
        else:
            provider.answer(question="q", passages=tea_context().passages)
    assert caught.value.code == api_code and caught.value.status in (502, 503)
    assert "sk-test-key" not in caught.value.message


def test_a_slow_llm_times_out_with_a_clear_error(llm):
    llm.delay_next(CHAT, 2.5)
    with pytest.raises(LLMTimeout) as caught:
        OpenAIChatProvider.from_settings().answer(question="q", passages=tea_context().passages)
    assert caught.value.status == 504 and "OPENAI_TIMEOUT" in caught.value.message


def test_an_error_in_the_middle_of_a_stream_ends_it_with_an_error_event(llm):
    llm.chat_answer = "Leaves are steamed soon after picking [1], then rolled and dried."
    llm.chat_stream_error = "The model crashed."
    events = list(answer_events(context=tea_context(), provider=OpenAIChatProvider.from_settings(), raise_errors=False))
    assert events[0][0] == "delta" and events[-1][0] == "error"
    assert events[-1][1]["code"] == "llm_unavailable" and "crashed" in events[-1][1]["message"]


def test_a_passage_counts_on_similarity_or_on_moderate_similarity_with_the_questions_words():
    from search.relevance import passage_relevant

    rule = {"floor": 0.30, "low_factor": 0.6, "coverage_with_similarity": 0.5, "coverage_alone": 0.75}
    assert passage_relevant(similarity=0.31, coverage=0.0, **rule)
    assert passage_relevant(similarity=0.20, coverage=0.5, **rule)  # a short document that fits exactly
    assert not passage_relevant(similarity=0.20, coverage=0.4, **rule)
    assert not passage_relevant(similarity=0.15, coverage=1.0, **rule)  # shares words, not the subject
    # With no similarity (the embedder is down), nearly all the question's words must be there.
    assert passage_relevant(similarity=None, coverage=0.8, **rule)
    assert not passage_relevant(similarity=None, coverage=0.5, **rule)


@pytest.mark.django_db
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["keyword", "semantic", "hybrid"])
def test_a_lone_common_word_in_common_is_not_an_answer_on_a_small_corpus(knowledge_base, mode):
    # "day" and "water" occur in the tea and bicycle documents; nothing here is about flights.
    context = answer_retrieve(question="what day of the week is best to buy flights over water", mode=mode)
    assert context.passages == []
    assert context.closest  # the nearest documents are offered instead
