"""Keyword search's numbers: corpus statistics for BM25, and a query's lexemes weighed by them.

``keyword_query_prepare`` turns a parsed query into lexemes with PostgreSQL's own
``to_tsvector`` / ``phraseto_tsquery`` (user text is only ever a parameter) and reads each
lexeme's document frequency from ``search.models.LexemeStat``, in one query; the scoring that
uses them is ``search.keyword``. ``keyword_stats_refresh`` recomputes the statistics (the
background task calls it after ingestion); a query that finds them missing or far off the
table's size refreshes them itself once, else counts live.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from documents.models import SEARCH_CONFIG, Chunk
from search.models import CorpusStat, LexemeStat
from search.query_parser import ParsedQuery

logger = logging.getLogger(__name__)

# A safety cap on how many distinct lexemes one query scores with (the rarest are kept): a pasted
# paragraph should not make every candidate's scoring loop long.
MAX_QUERY_LEXEMES = 64


@dataclass(frozen=True)
class Term:
    lexeme: str
    chunk_count: int
    idf: float


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


# --- Query preparation ----------------------------------------------------------------------


def keyword_query_prepare(
    parsed: ParsedQuery, *, allow_refresh: bool = True
) -> tuple[list[Term], list[str], list[str], int, float, float] | None:
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
                "cap": int(settings.SEARCH_KEYWORD_CANDIDATE_BUDGET),
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
            auto_refresh = int(settings.SEARCH_KEYWORD_STATS_AUTO_REFRESH_CHUNKS)
            if corpus_size > auto_refresh:
                if allow_refresh and _refresh_quietly():
                    return keyword_query_prepare(parsed, allow_refresh=False)
                _warn_missing_stats()
            missing, cap = list(counts), None
        else:
            corpus_size, mean_length, estimated_size = corpus
            if allow_refresh and _grown_apart(corpus_size, estimated_size) and _refresh_quietly():
                return keyword_query_prepare(parsed, allow_refresh=False)
            # Lexemes missing from the statistics were counted live by the statement above, so
            # this is empty as a rule (kept for safety, same cap).
            missing = [lexeme for lexeme, count in counts.items() if count is None]
            cap = int(settings.SEARCH_KEYWORD_CANDIDATE_BUDGET)
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
        terms.append(Term(lexeme=lexeme, chunk_count=count, idf=idf))
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
            "large corpora; run search.keyword_stats.keyword_stats_refresh()."
        )


def _count_live(cursor, lexemes: list[str], cap: int | None) -> dict[str, int]:
    limit = "" if cap is None else "LIMIT %(cap)s"
    cursor.execute(
        f"""
        SELECT l, (SELECT count(*) FROM (
                SELECT 1 FROM {Chunk._meta.db_table} c WHERE c.search_vector @@ q::tsquery {limit}) x)
        FROM unnest(%(lexemes)s::text[], %(queries)s::text[]) AS t(l, q)
        """,
        {"lexemes": lexemes, "queries": [lexeme_tsquery(lexeme) for lexeme in lexemes], "cap": cap},
    )
    return dict(cursor.fetchall())


def lexeme_tsquery(lexeme: str) -> str:
    """A lexeme as a quoted tsquery operand.

    Lexemes come from ``to_tsvector``, never from raw input, but they can hold any character
    (``'x.org/a/b?c=1'``, ``"o'neill"``), so they are quoted the way the tsquery input syntax
    defines: inside single quotes, a quote is doubled and a backslash escaped.
    """
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"
