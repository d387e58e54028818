"""Keyword search over chunks: PostgreSQL full text for matching, BM25 for ranking.

Why not ``websearch_to_tsquery`` + ``ts_rank``: the former ANDs every word, so a question such as
"what lowers the risk of heart attacks in older adults?" matches nothing, and the latter has no
inverse document frequency, so "risk" counts as much as "statins". Measured on SciFact (train,
809 claims), that baseline reaches nDCG@10 0.07; this module 0.70 unpruned and 0.69 with the
default candidate budget at 100k chunks, level with Lucene's BM25 (~0.67-0.69; numbers and
settings in bench/results/keyword.md).

How a query runs (two round trips):

1. ``query_parse`` splits the text into plain words, required "phrases" and -exclusions. One
   query turns them into lexemes with PostgreSQL's own ``to_tsvector`` / ``phraseto_tsquery`` (user
   text is only ever a parameter) and reads each lexeme's document frequency from
   ``search.models.LexemeStat`` (``search.keyword_stats``).
2. Candidates are the chunks that contain any of the query's *rarest* lexemes, found through the
   GIN index: lexemes are taken rarest first while their summed document frequencies stay within
   ``SEARCH_KEYWORD_CANDIDATE_BUDGET``. Common lexemes ("cell", "patient") still score, they just
   do not pull in half the corpus as candidates; a chunk that matches none of the rare words would
   rank low anyway. This bounds the work per query (each candidate costs about 5 us of CPU:
   ~16 ms per query at 100k chunks) for about -0.007 nDCG@10 and -0.05 Recall@100 there.
   A query whose every lexeme is over budget requires its rarest lexemes together instead, and
   a filter that leaves fewer chunks than the budget lets every lexeme bring candidates. Required
   phrases and exclusions are part of the same tsquery, so the index enforces them. The
   ``search_vector`` column is kept inline in the row (migration 0002), which makes reading a
   candidate's vector ~5x cheaper than out-of-line TOAST.
3. Each candidate is scored with BM25 from its own tsvector: the query lexemes are cut out of the
   vector with ``setweight``/``ts_filter`` (C functions, far cheaper than unnesting the whole
   vector), their positions counted as term frequency, and ``length(search_vector)`` (distinct
   lexemes) is the chunk length. Lexemes in the context (title and headings, weight A) can count
   ``SEARCH_BM25_CONTEXT_WEIGHT`` times, a BM25F-style field boost.

Snippets are computed separately, only for the page of results shown (``search.snippets``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.db import connection

from documents.models import Chunk
from search.filters import SearchFilters, chunk_filter_sql
from search.keyword_stats import (
    Term,
    keyword_query_prepare,
    lexeme_tsquery,
)
from search.query_parser import query_parse


@dataclass(frozen=True)
class KeywordHit:
    chunk_id: str
    document_id: int
    score: float
    # The score as a share of the most any chunk could score for this query (every lexeme with a
    # saturated term frequency): ~1 when the chunk holds all the query's rare words, small when it
    # shares one common word. Unlike the score it is comparable across queries and corpora.
    share: float = 0.0


def keyword_search(query: str, *, limit: int, filters: SearchFilters | None = None) -> list[KeywordHit]:
    """The best ``limit`` chunks for ``query`` by BM25, best first (ties broken by chunk id)."""
    if limit <= 0:
        return []
    parsed = query_parse(query)
    if parsed.is_empty:
        return []
    prepared = keyword_query_prepare(parsed)
    if prepared is None:
        return []
    terms, required, excluded, corpus_size, mean_length, ceiling_idf = prepared

    budget = int(settings.SEARCH_KEYWORD_CANDIDATE_BUDGET)
    hard_cap = max(int(settings.SEARCH_KEYWORD_MAX_CANDIDATES), limit)
    filter_sql, params = "TRUE", {}
    if filters is not None and not filters.is_empty:
        narrow = _filtered_chunk_ids(filters, budget)
        if narrow is not None:
            # A narrow filter: let every query lexeme bring candidates; the filter bounds the work.
            # Its chunks are named outright, so no join is left for the planner to get wrong.
            budget = sum(term.chunk_count for term in terms)
            filter_sql, params = "c.id = ANY(%(filter_chunk_ids)s::uuid[])", {"filter_chunk_ids": narrow}
        else:
            filter_sql, params = chunk_filter_sql(filters, chunk_alias="c", per_chunk=True)
    match_parts, match_params = _candidate_match(terms, required, budget, corpus_size)
    params.update(match_params)
    if excluded:
        params["excluded"] = excluded
        match_parts.append(
            "!!(" + " || ".join(f"(%(excluded)s::text[])[{i + 1}]::tsquery" for i in range(len(excluded))) + ")"
        )

    k1 = float(settings.SEARCH_BM25_K1)
    b = float(settings.SEARCH_BM25_B)
    context_weight = float(settings.SEARCH_BM25_CONTEXT_WEIGHT)
    params.update(
        lexemes=[t.lexeme for t in terms],
        idfs=[t.idf for t in terms],
        k1_plus_1=k1 + 1,
        k1=k1,
        one_minus_b=1 - b,
        b_per_mean_length=b / max(mean_length, 1.0),
        context_extra=context_weight - 1,
        cap=hard_cap,
        limit=limit,
    )
    if context_weight == 1.0:
        # Every position counts once: cut the query lexemes out of the vector in one pass.
        restricted = "ts_filter(setweight(c.search_vector, 'D', %(lexemes)s::text[]), '{d}')"
        term_frequency = "cardinality(u.positions)"
    else:
        # Keep where each position came from: context (A) positions become C, text (B) become D.
        restricted = (
            "ts_filter(setweight(ts_filter(c.search_vector, '{a}'), 'C', %(lexemes)s::text[])"
            " || setweight(ts_filter(c.search_vector, '{b}'), 'D', %(lexemes)s::text[]), '{c,d}')"
        )
        term_frequency = (
            "(cardinality(u.weights) + %(context_extra)s::float8 * cardinality(array_positions(u.weights, 'C')))"
        )
    # Each candidate is scored by an aggregate over its own query lexemes, in a LATERAL subquery,
    # with its length normalisation computed once per candidate; every constant is cast to float8:
    # psycopg sends a Python float as a bare literal (1.9), which PostgreSQL reads as numeric, and
    # numeric arithmetic on every (candidate, lexeme) row cost about a third of the query. Against
    # one grouped aggregate over all (candidate, lexeme) rows with numeric constants: backend CPU
    # 12.6 -> 9.3 ms per query at 100k chunks, identical rankings on 200 SciFact claims. A
    # candidate none of whose lexemes is scored (a phrase-only match) sums to NULL and sorts last.
    sql = f"""
        SELECT c.id::text, c.document_id, s.score
        FROM (
            SELECT c.id, c.document_id, c.search_vector,
                   %(k1)s::float8 * (%(one_minus_b)s::float8 + %(b_per_mean_length)s::float8 * length(c.search_vector))
                       AS norm
            FROM {Chunk._meta.db_table} c
            WHERE c.search_vector @@ ({" && ".join(match_parts)}) AND {filter_sql}
            LIMIT %(cap)s
        ) c
        CROSS JOIN LATERAL (
            SELECT sum(t.idf * t.tf * %(k1_plus_1)s::float8 / (t.tf + c.norm)) AS score
            FROM (
                SELECT (%(idfs)s::float8[])[array_position(%(lexemes)s::text[], u.lexeme)] AS idf,
                       {term_frequency} AS tf
                FROM unnest({restricted}) u
            ) t
        ) s
        ORDER BY s.score DESC NULLS LAST, c.id
        LIMIT %(limit)s
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    # The id comes as text: parsing 200 UUIDs into objects only to turn them back into strings
    # was most of this function's Python time.
    ceiling = ceiling_idf * (k1 + 1) or 1.0
    return [KeywordHit(pk, document_id, score or 0.0, (score or 0.0) / ceiling) for pk, document_id, score in rows]


def _candidate_match(
    terms: list[Term], required: list[str], budget: int, corpus_size: int
) -> tuple[list[str], dict[str, object]]:
    """The tsquery conditions (SQL pieces, ANDed) that select candidate chunks through the index."""
    params: dict[str, object] = {}
    parts: list[str] = []
    if required:
        params["required"] = required
        parts.extend(f"(%(required)s::text[])[{i + 1}]::tsquery" for i in range(len(required)))
    # Rarest first, while the candidates they can bring stay within the budget.
    chosen: list[Term] = []
    total = 0
    for term in terms:
        if chosen and total + term.chunk_count > budget:
            break
        chosen.append(term)
        total += term.chunk_count
    if required and (not chosen or total > budget):
        # The phrases alone are the candidates: every optional word would only add ranking.
        return parts, params
    if len(chosen) == 1 and total > budget and len(terms) > 1:
        # Even the rarest lexeme is common: require the rarest few together, as many as it takes
        # for their expected overlap (if independent) to fit the budget.
        chosen, expected = [], float(corpus_size)
        for term in terms:
            chosen.append(term)
            expected *= term.chunk_count / max(corpus_size, 1)
            if expected <= budget:
                break
        params["candidates"] = _and_tsquery(t.lexeme for t in chosen)
    else:
        params["candidates"] = _or_tsquery(t.lexeme for t in chosen)
    if required and len(chosen) == len(terms):
        # The phrases require their own lexemes anyway; the OR adds nothing.
        return parts, params
    parts.append("%(candidates)s::tsquery")
    return parts, params


def _filtered_chunk_ids(filters: SearchFilters, size: int) -> list[str] | None:
    """The ids of the chunks ``filters`` allows if there are at most ``size`` of them, else None."""
    filter_sql, params = chunk_filter_sql(filters, chunk_alias="c")
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT c.id::text FROM {Chunk._meta.db_table} c WHERE {filter_sql} LIMIT %(probe)s",
            {**params, "probe": size + 1},
        )
        ids = [pk for (pk,) in cursor.fetchall()]
    return ids if len(ids) <= size else None


def _or_tsquery(lexemes: Iterable[str]) -> str:
    return " | ".join(lexeme_tsquery(lexeme) for lexeme in lexemes)


def _and_tsquery(lexemes: Iterable[str]) -> str:
    return " & ".join(lexeme_tsquery(lexeme) for lexeme in lexemes)
