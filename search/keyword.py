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
   ``search.models.LexemeStat`` (see ``keyword_stats_refresh``).
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

Snippets are computed separately, only for the page of results shown (``keyword_snippets``).
"""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from documents.models import SEARCH_CONFIG, Chunk
from search.filters import SearchFilters, chunk_filter_sql
from search.models import CorpusStat, LexemeStat
from search.query_parser import ParsedQuery, query_parse

logger = logging.getLogger(__name__)

# Snippet highlight markers: control characters that never occur in ingested text (they are
# removed from the text before highlighting), so a caller can HTML-escape the snippet and then
# turn the markers into <mark> tags without any risk of injecting markup. See ``snippet_html``.
SNIPPET_START = "\x02"
SNIPPET_STOP = "\x03"

# A safety cap on how many distinct lexemes one query scores with (the rarest are kept): a pasted
# paragraph should not make every candidate's scoring loop long.
MAX_QUERY_LEXEMES = 64

# The tunables (SEARCH_BM25_*, SEARCH_KEYWORD_*) are settings; ragsite/settings.py says how they were chosen.


@dataclass(frozen=True)
class KeywordHit:
    chunk_id: str
    document_id: int
    score: float
    # The score as a share of the most any chunk could score for this query (every lexeme with a
    # saturated term frequency): ~1 when the chunk holds all the query's rare words, small when it
    # shares one common word. Unlike the score it is comparable across queries and corpora.
    share: float = 0.0


@dataclass(frozen=True)
class _Term:
    lexeme: str
    chunk_count: int
    idf: float


def keyword_search(query: str, *, limit: int, filters: SearchFilters | None = None) -> list[KeywordHit]:
    """The best ``limit`` chunks for ``query`` by BM25, best first (ties broken by chunk id)."""
    if limit <= 0:
        return []
    parsed = query_parse(query)
    if parsed.is_empty:
        return []
    prepared = _prepare(parsed)
    if prepared is None:
        return []
    terms, required, excluded, corpus_size, mean_length, ceiling_idf = prepared

    budget = settings.SEARCH_KEYWORD_CANDIDATE_BUDGET
    hard_cap = max(settings.SEARCH_KEYWORD_MAX_CANDIDATES, limit)
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

    k1 = settings.SEARCH_BM25_K1
    b = settings.SEARCH_BM25_B
    context_weight = settings.SEARCH_BM25_CONTEXT_WEIGHT
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


def keyword_snippets(
    chunk_ids: Iterable[str], query: str, *, max_words: int = 35, min_words: int = 15, max_fragments: int = 2
) -> dict[str, str]:
    """``{chunk_id: snippet}`` with the query's words between SNIPPET_START and SNIPPET_STOP.

    Call it for the page of results being shown only: ``ts_headline`` re-parses each text. Works
    for any chunk (a semantic hit that shares no word gets the start of its text). Markers are
    control characters, so escape first and mark second: ``snippet_html`` does exactly that.
    """
    ids = [str(pk) for pk in chunk_ids]
    if not ids:
        return {}
    expression, params = snippet_sql(query, max_words=max_words, min_words=min_words, max_fragments=max_fragments)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT c.id, {expression} FROM {Chunk._meta.db_table} c WHERE c.id = ANY(%(ids)s::uuid[])",
            {**params, "ids": ids},
        )
        return {str(pk): snippet for pk, snippet in cursor.fetchall()}


def snippet_sql(
    query: str, *, text_sql: str = "c.text", max_words: int = 35, min_words: int = 15, max_fragments: int = 2
) -> tuple[str, dict[str, object]]:
    """A SQL expression (and its parameters) giving ``keyword_snippets``' snippet of ``text_sql``.

    The query's lexemes become the OR tsquery inside the same statement (an uncorrelated
    subquery, computed once), quoted exactly as ``_lexeme_tsquery`` quotes them, so a caller can
    fetch snippets together with the rows they belong to: one round trip instead of three
    (search.selectors._page; bench/results/search_scale.md).
    """
    options = (
        f'StartSel="{SNIPPET_START}", StopSel="{SNIPPET_STOP}", MaxWords={int(max_words)}, '
        f'MinWords={int(min_words)}, ShortWord=3, MaxFragments={int(max_fragments)}, FragmentDelimiter=" … "'
    )
    # chr(39) is a quote, chr(92) a backslash: 'lexeme' with ' doubled and \ escaped. An empty
    # query would make ts_headline complain; a lexeme that occurs nowhere (\x01) gives the text's
    # opening words instead, which is what a snippet without matches should show.
    tsquery = (
        "(SELECT coalesce(string_agg(chr(39) || replace(replace(l, chr(92), chr(92) || chr(92)), chr(39), "
        "chr(39) || chr(39)) || chr(39), ' | ' ORDER BY l), %(snippet_nomatch)s)::tsquery "
        "FROM unnest(tsvector_to_array(to_tsvector(%(snippet_config)s::regconfig, %(snippet_text)s))) AS l)"
    )
    expression = (
        f"ts_headline(%(snippet_config)s::regconfig, translate({text_sql}, %(snippet_markers)s, ''), {tsquery}, "
        "%(snippet_options)s)"
    )
    params = {
        "snippet_config": SEARCH_CONFIG,
        "snippet_markers": SNIPPET_START + SNIPPET_STOP,
        "snippet_nomatch": "'\u0001'",
        "snippet_text": query_parse(query).ranking_text,
        "snippet_options": options,
    }
    return expression, params


def snippet_html(snippet: str) -> str:
    """A snippet as safe HTML: everything escaped, highlighted words in <mark>."""
    return html.escape(snippet).replace(SNIPPET_START, "<mark>").replace(SNIPPET_STOP, "</mark>")


def snippet_text(snippet: str) -> str:
    """A snippet as plain text, markers removed."""
    return snippet.replace(SNIPPET_START, "").replace(SNIPPET_STOP, "")


# --- Corpus statistics ------------------------------------------------------------------------


def keyword_stats_refresh(*, force: bool = True, max_drift: float = 0.1) -> bool:
    """Recompute document frequencies (LexemeStat) and corpus size (CorpusStat) from all chunks.

    Takes about 2.3 s at 100k chunks (one ``ts_stat`` pass), so run it in the background after
    ingestion, not per request. With ``force=False`` it only runs when the chunk count has moved
    by more than ``max_drift`` since the last refresh, or chunks were added since and the last
    refresh is over an hour old. Readers keep seeing the previous numbers until it commits; a
    second refresh running at the same time returns False instead of waiting. Returns True when
    it refreshed.

    Either way it first merges the chunk GIN index's pending list (``keyword_index_flush``), which
    is why the background task calls it after every ingestion, even when the statistics are fresh.
    """
    chunks = Chunk._meta.db_table
    with transaction.atomic(), connection.cursor() as cursor:
        # One refresh at a time; the key is an arbitrary constant for this job.
        cursor.execute("SELECT pg_try_advisory_xact_lock(7461626)")
        if not cursor.fetchone()[0]:
            return False
        keyword_index_flush()
        current = CorpusStat.objects.filter(pk=1).first()
        if not force and current is not None and not _stats_stale(cursor, current, max_drift):
            return False
        cursor.execute(f"SELECT count(*), coalesce(avg(length(search_vector)), 0) FROM {chunks}")
        count, mean_length = cursor.fetchone()
        cursor.execute(f"DELETE FROM {LexemeStat._meta.db_table}")
        cursor.execute(
            f"""
            INSERT INTO {LexemeStat._meta.db_table} (lexeme, chunk_count)
            SELECT word, ndoc FROM ts_stat(%s)
            """,
            [f"SELECT search_vector FROM {chunks}"],
        )
        CorpusStat.objects.update_or_create(
            pk=1,
            defaults={"chunk_count": count, "mean_length": float(mean_length), "refreshed_at": timezone.now()},
        )
    return True


def keyword_index_flush() -> None:
    """Merge the pending list of the chunk GIN index into the index proper.

    With GIN's default ``fastupdate``, new chunks' lexemes go to an unsorted pending list that
    every keyword query scans in full until (auto)vacuum or the 4 MB ``gin_pending_list_limit``
    merges it. Right after an ingestion that is up to ~500 pages per query: with 308 pending pages
    at 100k chunks a keyword query's SQL cost ~1.5 ms more backend CPU (11.2 vs 9.7 ms).
    Merging is work the index needs anyway. Needs to own the index; if not, the list stays for
    vacuum to merge (logged at debug level).
    """
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT gin_clean_pending_list(%s::regclass)", [_CHUNK_GIN_INDEX])
    except DatabaseError as exc:
        logger.debug("could not merge the GIN pending list of %s: %s", _CHUNK_GIN_INDEX, exc)


# The GIN index on Chunk.search_vector (documents.models.Chunk.Meta.indexes).
_CHUNK_GIN_INDEX = "chunk_search_vector_gin"


def _stats_stale(cursor, current: CorpusStat, max_drift: float) -> bool:
    chunks = Chunk._meta.db_table
    cursor.execute(f"SELECT count(*), max(created_at) FROM {chunks}")
    count, newest = cursor.fetchone()
    if abs(count - current.chunk_count) > max_drift * max(current.chunk_count, 1):
        return True
    hour_ago = timezone.now() - timedelta(hours=1)
    return newest is not None and newest > current.refreshed_at and current.refreshed_at < hour_ago


# --- Internals --------------------------------------------------------------------------------


def _prepare(
    parsed: ParsedQuery, *, allow_refresh: bool = True
) -> tuple[list[_Term], list[str], list[str], int, float, float] | None:
    """Lexemes with idf, required phrase tsqueries, excluded tsqueries, corpus size, mean length, and
    the sum of every query lexeme's idf (those the corpus lacks too).

    The tsquery texts come back from PostgreSQL (``phraseto_tsquery(...)::text``), so they are
    valid tsquery syntax by construction and can be cast back with ``::tsquery``.
    """
    chunks = Chunk._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT 0, t.lexeme, coalesce(s.chunk_count, CASE WHEN EXISTS (
                       SELECT 1 FROM {CorpusStat._meta.db_table} WHERE id = 1) THEN (
                       SELECT count(*) FROM (
                           SELECT 1 FROM {chunks} c WHERE c.search_vector @@ (chr(39) || replace(replace(t.lexeme,
                               chr(92), chr(92) || chr(92)), chr(39), chr(39) || chr(39)) || chr(39))::tsquery
                           LIMIT %(cap)s) x) END), NULL::float8, NULL::float8
            FROM (SELECT DISTINCT lexeme FROM unnest(to_tsvector(%(config)s::regconfig, %(text)s))) t
            LEFT JOIN {LexemeStat._meta.db_table} s ON s.lexeme = t.lexeme
            UNION ALL
            SELECT 1, q::text, numnode(q), NULL, NULL FROM unnest(%(phrases)s::text[]) p, phraseto_tsquery(%(config)s::regconfig, p) q
            UNION ALL
            SELECT 2, q::text, numnode(q), NULL, NULL FROM unnest(%(excluded)s::text[]) p, phraseto_tsquery(%(config)s::regconfig, p) q
            UNION ALL
            SELECT 3, NULL, chunk_count, mean_length, (SELECT reltuples FROM pg_class WHERE oid = %(chunks)s::regclass)
            FROM {CorpusStat._meta.db_table} WHERE id = 1
            """,
            {
                "config": SEARCH_CONFIG,
                "text": parsed.ranking_text,
                "phrases": list(parsed.phrases),
                "excluded": list(parsed.excluded),
                "chunks": chunks,
                # Lexemes new since the last refresh are counted here, live, when there are
                # statistics (an unknown word costs a GIN probe, not another round trip); the
                # count stops at the budget so a common new lexeme cannot make it slow.
                "cap": settings.SEARCH_KEYWORD_CANDIDATE_BUDGET,
            },
        )
        rows = cursor.fetchall()
        counts = {value: count for kind, value, count, _, _ in rows if kind == 0}
        required = [value for kind, value, nodes, _, _ in rows if kind == 1 and nodes]
        excluded = [value for kind, value, nodes, _, _ in rows if kind == 2 and nodes]
        corpus = next(((count, mean, live) for kind, _, count, mean, live in rows if kind == 3), None)
        if not counts:
            return None  # only stopwords or punctuation
        if corpus is None:
            # Never refreshed: exact numbers from the live table. Cheap for small corpora, but
            # a common lexeme takes ~170 ms to count at 100k chunks, so past a size the
            # statistics are computed once, here (~0.1 s per 1000 chunks), and later queries read them.
            cursor.execute(f"SELECT count(*), coalesce(avg(length(search_vector)), 0) FROM {chunks}")
            corpus_size, mean_length = cursor.fetchone()
            auto_refresh = settings.SEARCH_KEYWORD_STATS_AUTO_REFRESH_CHUNKS
            if corpus_size > auto_refresh:
                if allow_refresh and _refresh_quietly():
                    return _prepare(parsed, allow_refresh=False)
                _warn_missing_stats()
            missing, cap = list(counts), None
        else:
            corpus_size, mean_length, estimated_size = corpus
            if allow_refresh and _grown_apart(corpus_size, estimated_size) and _refresh_quietly():
                return _prepare(parsed, allow_refresh=False)
            # Lexemes missing from the statistics were counted live by the statement above, so
            # this is empty as a rule (kept for safety, same cap).
            missing = [lexeme for lexeme, count in counts.items() if count is None]
            cap = settings.SEARCH_KEYWORD_CANDIDATE_BUDGET
        if missing:
            counts.update(_count_live(cursor, missing, cap))
    corpus_size = max(int(corpus_size), max(counts.values()), 1)
    # What a chunk holding every query lexeme would score, words the corpus lacks included (at the
    # highest idf): the denominator of KeywordHit.share.
    ceiling_idf = sum(math.log(1 + (corpus_size - max(c, 0) + 0.5) / (max(c, 0) + 0.5)) for c in counts.values())
    terms = []
    for lexeme, count in counts.items():
        if count <= 0:
            continue  # occurs in no chunk: cannot match, cannot score
        # Lucene's BM25 idf: always positive, so a very common word still counts a little.
        idf = math.log(1 + (corpus_size - count + 0.5) / (count + 0.5))
        terms.append(_Term(lexeme=lexeme, chunk_count=count, idf=idf))
    terms.sort(key=lambda t: (t.chunk_count, t.lexeme))
    terms = terms[:MAX_QUERY_LEXEMES]
    if not terms and not required:
        return None
    return terms, required, excluded, corpus_size, float(mean_length), ceiling_idf


def _grown_apart(refreshed_size: int, estimated_size: float | None) -> bool:
    """Has the table's size (the planner's estimate, kept by autovacuum) moved far from the stats'?

    A safety net for deployments that never call ``keyword_stats_refresh`` after ingesting: the
    statistics follow the corpus in steps of 1.5x. Small differences are not worth a refresh.
    """
    if estimated_size is None or estimated_size < 0:
        return False  # never analyzed: no estimate
    return estimated_size > 1.5 * refreshed_size + 1000 or estimated_size < refreshed_size / 1.5 - 1000


def _refresh_quietly() -> bool:
    try:
        # A savepoint, so a failure (a read-only replica, say) leaves the caller's transaction usable.
        with transaction.atomic():
            return keyword_stats_refresh()
    except DatabaseError:
        logger.exception("Could not compute keyword statistics; counting document frequencies live.")
        return False


_warned_missing_stats = False


def _warn_missing_stats() -> None:
    global _warned_missing_stats
    if not _warned_missing_stats:
        _warned_missing_stats = True
        logger.warning(
            "Keyword statistics are missing and could not be computed now (another refresh running, or a "
            "read-only database), so keyword queries count document frequencies live, which is slow on "
            "large corpora; run search.keyword.keyword_stats_refresh()."
        )


def _count_live(cursor, lexemes: list[str], cap: int | None) -> dict[str, int]:
    limit = "" if cap is None else "LIMIT %(cap)s"
    cursor.execute(
        f"""
        SELECT l, (SELECT count(*) FROM (
                SELECT 1 FROM {Chunk._meta.db_table} c WHERE c.search_vector @@ q::tsquery {limit}) x)
        FROM unnest(%(lexemes)s::text[], %(queries)s::text[]) AS t(l, q)
        """,
        {"lexemes": lexemes, "queries": [_lexeme_tsquery(lexeme) for lexeme in lexemes], "cap": cap},
    )
    return dict(cursor.fetchall())


def _candidate_match(
    terms: list[_Term], required: list[str], budget: int, corpus_size: int
) -> tuple[list[str], dict[str, object]]:
    """The tsquery conditions (SQL pieces, ANDed) that select candidate chunks through the index."""
    params: dict[str, object] = {}
    parts: list[str] = []
    if required:
        params["required"] = required
        parts.extend(f"(%(required)s::text[])[{i + 1}]::tsquery" for i in range(len(required)))
    # Rarest first, while the candidates they can bring stay within the budget.
    chosen: list[_Term] = []
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


def _lexeme_tsquery(lexeme: str) -> str:
    """A lexeme as a quoted tsquery operand.

    Lexemes come from ``to_tsvector``, never from raw input, but they can hold any character
    (``'x.org/a/b?c=1'``, ``"o'neill"``), so they are quoted the way the tsquery input syntax
    defines: inside single quotes, a quote is doubled and a backslash escaped.
    """
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def _or_tsquery(lexemes: Iterable[str]) -> str:
    return " | ".join(_lexeme_tsquery(lexeme) for lexeme in lexemes)


def _and_tsquery(lexemes: Iterable[str]) -> str:
    return " & ".join(_lexeme_tsquery(lexeme) for lexeme in lexemes)
