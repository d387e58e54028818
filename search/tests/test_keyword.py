"""Keyword search on real PostgreSQL with small real texts (chunks created directly via the ORM)."""

from __future__ import annotations

import pytest
from django.contrib.postgres.search import SearchQuery
from django.db import connection

from documents.models import Chunk, Source
from documents.tests.factories import document_with_chunk, source_create
from search.filters import SearchFilters, chunk_queryset_filter
from search.keyword import keyword_search
from search.keyword_stats import keyword_stats_refresh
from search.models import CorpusStat, LexemeStat

pytestmark = pytest.mark.django_db

PASSAGES = {
    "statins": (
        "Cardiology notes",
        "Statins lower LDL cholesterol. In adults over 65, daily statin therapy reduced the risk of "
        "myocardial infarction and stroke in several randomised trials.",
    ),
    "photosynthesis": (
        "Plant biology",
        "Photosynthesis converts light energy into chemical energy. Chlorophyll in the chloroplasts "
        "absorbs mostly blue and red light.",
    ),
    "coffee": (
        "Caffeine",
        "Coffee contains caffeine, which blocks adenosine receptors. Drinking coffee late in the day "
        "delays sleep onset and shortens deep sleep.",
    ),
    "tea": (
        "Caffeine",
        "Green tea contains less caffeine than coffee and adds L-theanine, which some people find calming.",
    ),
    "heart_attack": (
        "Emergencies",
        "A heart attack happens when blood flow to part of the heart muscle is blocked. Call emergency "
        "services at once.",
    ),
    "city_heart": (
        "Travel",
        "The attack on the old fortress in the heart of the city is re-enacted every summer.",
    ),
    "wine": (
        "Food",
        "Red wine is made from dark grapes fermented with their skins; white wine from pressed juice.",
    ),
    "grapes": (
        "Food",
        "Table grapes are eaten fresh, dried into raisins, or pressed for juice.",
    ),
}


@pytest.fixture
def corpus():
    source = source_create("notes")
    return {
        key: document_with_chunk(source, title, text, metadata={"topic": key})
        for key, (title, text) in PASSAGES.items()
    }


def ids(hits) -> list[str]:
    return [hit.chunk_id for hit in hits]


def test_natural_language_question_finds_the_passage_that_answers_it(corpus):
    question = "What lowers the risk of a heart attack in older adults, and is it statins?"
    # The trap this module exists for: websearch_to_tsquery requires every word, so it finds nothing.
    assert not Chunk.objects.filter(search_vector=SearchQuery(question, search_type="websearch", config="english"))

    hits = keyword_search("does statin therapy reduce myocardial infarction risk in adults over 65", limit=3)
    assert hits[0].chunk_id == str(corpus["statins"].id)
    hits = keyword_search("why does drinking coffee in the evening make it hard to sleep?", limit=3)
    assert hits[0].chunk_id == str(corpus["coffee"].id)


def test_hits_are_ordered_by_score_and_carry_the_document(corpus):
    hits = keyword_search("caffeine in coffee and tea", limit=10)
    assert {str(corpus["coffee"].id), str(corpus["tea"].id)} <= set(ids(hits))
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(h.score > 0 for h in hits)
    by_id = {str(c.id): c.document_id for c in corpus.values()}
    assert all(h.document_id == by_id[h.chunk_id] for h in hits)


def test_limit_is_respected(corpus):
    assert len(keyword_search("caffeine coffee tea grapes wine heart", limit=2)) == 2
    assert keyword_search("coffee", limit=0) == []


def test_rare_terms_outweigh_common_ones():
    source = source_create("lab")
    for n in range(8):
        document_with_chunk(
            source, f"Report {n}", f"This study reports results of study number {n} in the study series."
        )
    common = document_with_chunk(source, "Study", "Study after study after study: a study about studying studies.")
    rare = document_with_chunk(source, "Catalysis", "Zeolite catalysts crack long hydrocarbons into petrol.")

    hits = keyword_search("zeolite study", limit=3)
    assert hits[0].chunk_id == str(rare.id)
    assert str(common.id) in ids(hits)


def test_words_in_the_title_context_are_searchable():
    source = source_create("handbook")
    chunk = document_with_chunk(
        source, "Glossary", "Terms used throughout the handbook.", context="Handbook / Lighthouses"
    )
    assert ids(keyword_search("lighthouse", limit=5)) == [str(chunk.id)]


def test_quoted_phrase_is_required_and_matched_in_order(corpus):
    assert ids(keyword_search('"heart attack"', limit=10)) == [str(corpus["heart_attack"].id)]
    # "city" alone would match the travel passage, but the phrase is required.
    assert ids(keyword_search('"heart attack" city', limit=10)) == [str(corpus["heart_attack"].id)]
    # Both passages hold both words; only one holds them as a phrase.
    assert set(ids(keyword_search("heart attack", limit=10))) == {
        str(corpus["heart_attack"].id),
        str(corpus["city_heart"].id),
    }


def test_minus_excludes_chunks_with_the_word(corpus):
    hits = ids(keyword_search("caffeine -sleep", limit=10))
    assert str(corpus["tea"].id) in hits
    assert str(corpus["coffee"].id) not in hits


def test_minus_phrase_excludes_only_the_phrase(corpus):
    hits = ids(keyword_search('grapes -"red wine"', limit=10))
    assert str(corpus["grapes"].id) in hits
    assert str(corpus["wine"].id) not in hits
    # "red" and "wine" apart do not trigger the exclusion.
    assert str(corpus["wine"].id) in ids(keyword_search('grapes -"wine red"', limit=10))


def test_stopword_only_and_punctuation_only_queries_return_nothing(corpus):
    for query in ["the of and to", "!!! ??? ...", "&|!():*<->", "''' \" \\", "", "   ", '"to be or not to be"']:
        assert keyword_search(query, limit=10) == [], query


def test_exclusions_alone_return_nothing(corpus):
    assert keyword_search("-coffee -tea", limit=10) == []


def test_stopword_phrase_and_stopword_exclusion_are_ignored(corpus):
    assert ids(keyword_search('coffee "of the" -the', limit=1)) == [str(corpus["coffee"].id)]


def test_tsquery_syntax_and_odd_characters_never_break_the_query(corpus):
    source = source_create("odd")
    chunk = document_with_chunk(source, "People", "Dr O'Neill wrote C:\\temp\\notes.txt and visited x.org/a?b=1 twice.")
    for query in [
        "o'neill",
        "O'Neill's notes",
        "x.org/a?b=1",
        "C:\\temp\\notes.txt",
        "coffee & (tea | !wine) <-> grapes:*",
        "'; DROP TABLE documents_chunk; --",
        "caf\u00e9 na\u00efve \u0000 \u2603",
    ]:
        keyword_search(query, limit=5)
    assert str(chunk.id) in ids(keyword_search("o'neill", limit=5))
    assert str(chunk.id) in ids(keyword_search("x.org/a?b=1", limit=5))
    assert Chunk.objects.filter(pk=chunk.pk).exists()


def test_filters_by_source_document_and_metadata(corpus):
    other = source_create("other")
    elsewhere = document_with_chunk(
        other, "Caffeine", "Espresso has the most caffeine per millilitre.", metadata={"topic": "espresso", "page": 3}
    )
    query = "caffeine coffee espresso"
    assert str(elsewhere.id) in ids(keyword_search(query, limit=10))

    only_other = keyword_search(query, limit=10, filters=SearchFilters(source_ids=[other.id]))
    assert ids(only_other) == [str(elsewhere.id)]
    without_other = keyword_search(
        query, limit=10, filters=SearchFilters(source_ids=[corpus["coffee"].document.source_id])
    )
    assert str(elsewhere.id) not in ids(without_other) and without_other

    one_document = keyword_search(query, limit=10, filters=SearchFilters(document_ids=[corpus["tea"].document_id]))
    assert ids(one_document) == [str(corpus["tea"].id)]

    by_topic = keyword_search(query, limit=10, filters=SearchFilters(metadata={"topic": "coffee"}))
    assert ids(by_topic) == [str(corpus["coffee"].id)]
    # Metadata values compare as text, so a query-string "3" matches a stored number 3.
    assert ids(keyword_search(query, limit=10, filters=SearchFilters(metadata={"page": "3"}))) == [str(elsewhere.id)]
    assert keyword_search(query, limit=10, filters=SearchFilters(metadata={"page": "4"})) == []
    assert keyword_search(query, limit=10, filters=SearchFilters(metadata={"topic": "coffee", "page": "3"})) == []
    # An empty list is a filter that matches nothing; None is no filter.
    assert keyword_search(query, limit=10, filters=SearchFilters(source_ids=[])) == []


def test_queryset_filter_agrees_with_the_sql_filter(corpus):
    filters = SearchFilters(source_ids=[corpus["tea"].document.source_id], metadata={"topic": "tea"})
    assert list(chunk_queryset_filter(Chunk.objects.all(), filters=filters)) == [corpus["tea"]]
    assert chunk_queryset_filter(Chunk.objects.all(), filters=None).count() == len(corpus)


def test_pruned_candidates_still_find_rare_matches(corpus, settings):
    # A budget of 1 keeps only the rarest lexeme as the candidate generator.
    settings.SEARCH_KEYWORD_CANDIDATE_BUDGET = 1
    assert keyword_search("caffeine coffee chlorophyll", limit=3)[0].chunk_id == str(corpus["photosynthesis"].id)
    # Every lexeme over budget: the rarest ones are required together instead.
    hits = keyword_search("caffeine coffee", limit=5)
    assert str(corpus["coffee"].id) in ids(hits)


def test_narrow_filter_scores_every_chunk_inside_it(settings):
    settings.SEARCH_KEYWORD_CANDIDATE_BUDGET = 2
    big, small = source_create("big"), source_create("small")
    for n in range(6):
        document_with_chunk(big, f"Tea {n}", f"Tea and a rare tisane number {n}.")
    wanted = document_with_chunk(small, "Tea", "Black tea with milk.")
    # "tisane" is the rare word and sits only in the big source; inside the small one, "tea" still finds its chunk.
    hits = keyword_search("tea tisane", limit=5, filters=SearchFilters(source_ids=[small.id]))
    assert ids(hits) == [str(wanted.id)]


def test_gin_index_is_used_for_candidates(corpus):
    plans: list[str] = []

    def explain(execute, sql, params, many, context):
        if "ORDER BY s.score DESC" in sql and not sql.startswith("EXPLAIN"):
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN " + sql, params)
                plans.append("\n".join(row[0] for row in cursor.fetchall()))
        return execute(sql, params, many, context)

    with connection.cursor() as cursor:
        # A table this small is cheaper to scan; forbidding scans shows the query *can* use the index.
        cursor.execute("SET LOCAL enable_seqscan = off")
    with connection.execute_wrapper(explain):
        keyword_search('which drink has more caffeine, coffee or "green tea"? -wine', limit=5)
    assert plans and "chunk_search_vector_gin" in plans[0], plans


def test_refreshed_statistics_rank_like_live_counts(corpus):
    query = "coffee caffeine sleep tea"
    live = keyword_search(query, limit=10)
    assert keyword_stats_refresh() is True
    assert CorpusStat.objects.get().chunk_count == len(corpus)
    assert LexemeStat.objects.get(lexeme="caffein").chunk_count == 2
    refreshed = keyword_search(query, limit=10)
    assert ids(refreshed) == ids(live)
    assert [round(h.score, 6) for h in refreshed] == [round(h.score, 6) for h in live]
    # Unchanged corpus: a conditional refresh has nothing to do.
    assert keyword_stats_refresh(force=False) is False


def test_words_new_since_the_refresh_are_still_found(corpus):
    keyword_stats_refresh()
    source = Source.objects.get(name="notes")
    newcomer = document_with_chunk(source, "Birds", "Ptarmigans turn white in winter.")
    assert ids(keyword_search("ptarmigan", limit=5)) == [str(newcomer.id)]


def test_statistics_are_computed_on_first_search_of_a_large_corpus(corpus, settings):
    settings.SEARCH_KEYWORD_STATS_AUTO_REFRESH_CHUNKS = 100
    keyword_search("coffee", limit=1)
    assert not CorpusStat.objects.exists()  # small corpus: live counts are cheap enough

    settings.SEARCH_KEYWORD_STATS_AUTO_REFRESH_CHUNKS = 3
    hits = keyword_search("coffee", limit=1)
    assert CorpusStat.objects.get().chunk_count == len(corpus)
    assert ids(hits) == [str(corpus["coffee"].id)]


def test_statistics_follow_a_corpus_that_grew_far_past_them(corpus):
    keyword_stats_refresh()
    CorpusStat.objects.update(chunk_count=1)  # as if refreshed when the corpus was tiny
    with connection.cursor() as cursor:
        # What autovacuum's ANALYZE would record once the table holds ~5000 rows.
        cursor.execute("UPDATE pg_class SET reltuples = 5000 WHERE oid = 'documents_chunk'::regclass")
    keyword_search("coffee", limit=1)
    assert CorpusStat.objects.get().chunk_count == len(corpus)


def test_stats_refresh_merges_the_gin_pending_list(corpus):
    """The background refresh also empties the index's pending list, even with fresh statistics."""
    assert keyword_stats_refresh() is True
    document_with_chunk(
        Source.objects.get(name="notes"), "Later", "A chunk added after the refresh goes to the pending list."
    )
    keyword_stats_refresh(force=False)
    with connection.cursor() as cursor:
        # Returns how many pending pages it merged: none are left.
        cursor.execute("SELECT gin_clean_pending_list('chunk_search_vector_gin'::regclass)")
        assert cursor.fetchone()[0] == 0
    assert ids(keyword_search("pending list", limit=5))  # and the new chunk is found


def test_a_bulk_ingest_queues_one_statistics_refresh_not_one_per_document(monkeypatch, run_commit_hooks):
    from documents.services import document_ingest
    from documents.signals import changes_batched

    calls: list[int] = []
    monkeypatch.setattr("search.signals.enqueue_stats_refresh", lambda: calls.append(1))
    source = source_create("bulk")

    with run_commit_hooks():
        document_ingest(source=source, title="Single", text="One document on its own.", url="https://e.com/0")
    assert calls == [1]  # outside a bulk operation: after each commit, as before

    calls.clear()
    with run_commit_hooks(), changes_batched(embed_here=True):
        for n in range(1, 4):
            document_ingest(
                source=source, title=f"Doc {n}", text=f"Bulk document number {n}.", url=f"https://e.com/{n}"
            )
        assert calls == []
    assert calls == [1]


def test_the_chunk_table_is_stored_and_vacuumed_for_keyword_search(db):
    with connection.cursor() as cursor:
        cursor.execute("SELECT reloptions FROM pg_class WHERE oid = 'documents_chunk'::regclass")
        options = set(cursor.fetchone()[0] or [])
        cursor.execute(
            "SELECT attstorage FROM pg_attribute WHERE attrelid = 'documents_chunk'::regclass AND attname = 'search_vector'"
        )
        storage = cursor.fetchone()[0]
    assert {"autovacuum_vacuum_scale_factor=0.05", "autovacuum_analyze_scale_factor=0.05"} <= options
    assert storage == "m"  # MAIN: the tsvector stays in the row (search/migrations/0002)
