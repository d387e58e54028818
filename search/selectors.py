"""Reads: keyword, semantic and hybrid retrieval over chunks.

``chunk_search`` is the one entry point that the REST API, the web page, the answer endpoint
and the evaluation command all use, so what is measured is what users get. The candidates come
from ``search.candidates``, hybrid's fusion from ``search.fusion``; here they are grouped per
document, paged, reranked and hydrated (rows and snippets read in one statement).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection

from documents.models import Chunk, Document, Source
from search.candidates import Candidate, SearchUnavailable, keyword_candidates, semantic_candidates
from search.filters import SearchFilters
from search.fusion import FusionEvidence, reciprocal_rank_fusion
from search.snippets import snippet_from_marked, snippet_plain, snippet_sql

logger = logging.getLogger(__name__)

MODES = ("keyword", "semantic", "hybrid")


@dataclass
class SearchResult:
    chunk_id: str
    document_id: int
    title: str
    url: str
    source: str
    snippet: str
    score: float
    rank: int
    text: str = ""
    heading_path: list = field(default_factory=list)
    metadata: dict = field(default_factory=dict)
    keyword_rank: int | None = None
    semantic_rank: int | None = None
    rerank_score: float | None = None
    similarity: float | None = None  # cosine to the query, when the semantic side saw this chunk
    low_confidence: bool = False  # weak evidence on both sides (search.relevance)


@dataclass
class SearchResponse:
    query: str
    mode: str
    count: int
    results: list[SearchResult]
    took_ms: float
    warnings: list[str] = field(default_factory=list)
    reranked: bool | None = None  # None: no rerank asked for
    rerank_error: str = ""


def _group(candidates: list[Candidate], max_per_document: int) -> list[Candidate]:
    if max_per_document <= 0:
        return candidates
    seen: dict[int, int] = {}
    grouped = []
    for cand in candidates:
        n = seen.get(cand.document_id, 0)
        if n < max_per_document:
            grouped.append(cand)
            seen[cand.document_id] = n + 1
    return grouped


def chunk_search(
    query: str,
    *,
    mode: str | None = None,
    limit: int = 10,
    offset: int = 0,
    filters: SearchFilters | None = None,
    max_per_document: int | None = None,
    candidates: int | None = None,
    with_snippets: bool = True,
    rerank: bool = False,
) -> SearchResponse:
    """Search chunks. Raises SearchUnavailable only in semantic mode; hybrid degrades.

    ``rerank``: the best ``RERANK_TOP_N`` results are reordered by the rerank endpoint
    (``search.rerank``); if it fails they keep their order and the response says why.
    ``with_snippets=False`` (evaluation, benches: nobody reads them) leaves every snippet empty.
    """
    started = time.perf_counter()
    mode = mode or settings.SEARCH_DEFAULT_MODE
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}")
    filters = filters or SearchFilters()
    depth = max(candidates or settings.SEARCH_CANDIDATES, offset + limit)
    per_doc = settings.SEARCH_MAX_PER_DOCUMENT if max_per_document is None else max_per_document
    if per_doc:
        # Grouping drops chunks of documents already shown: fetch deeper so a page stays full.
        depth = min(depth * 2, 2000)
    warnings: list[str] = []

    if mode == "keyword":
        ranked = keyword_candidates(query, limit=depth, filters=filters)
        for i, cand in enumerate(ranked, start=1):
            cand.keyword_rank = i
    elif mode == "semantic":
        ranked = semantic_candidates(query, limit=depth, filters=filters)
        for i, cand in enumerate(ranked, start=1):
            cand.semantic_rank = i
    else:
        # The semantic side (query embedding + vector search: no database) runs in another thread
        # while this one waits on PostgreSQL for the keyword side; both release the GIL for most
        # of their time, so hybrid costs about the slower of the two instead of their sum
        # (bench/results/search_scale.md).
        pending = _semantic_executor().submit(semantic_candidates, query, limit=depth, filters=filters)
        try:
            keyword = keyword_candidates(query, limit=depth, filters=filters)
        except BaseException:
            pending.cancel()
            raise
        try:
            semantic = pending.result()
        except SearchUnavailable as exc:
            logger.warning("hybrid search fell back to keyword results: %s", exc)
            warnings.append(f"{exc}; showing keyword results only")
            semantic = []
        ranked = reciprocal_rank_fusion(
            keyword,
            semantic,
            k=settings.SEARCH_RRF_K,
            keyword_weight=settings.SEARCH_KEYWORD_WEIGHT,
            semantic_weight=settings.SEARCH_SEMANTIC_WEIGHT,
            evidence=FusionEvidence.from_settings(),
        )

    grouped = _group(ranked, per_doc)
    reranked, rerank_error = None, ""
    if rerank:
        results, gone, outcome = _reranked_page(grouped, query, offset=offset, limit=limit, with_snippets=with_snippets)
        reranked, rerank_error = outcome.reranked, outcome.error
        if not outcome.reranked:
            warnings.append(f"not reranked: {outcome.error}")
    else:
        results, gone = _page(grouped, query, offset=offset, limit=limit, with_snippets=with_snippets)
    count = len(grouped) - gone
    _mark_low_confidence(query, results)
    warnings.extend(_common_words_only(query, mode=mode, found=bool(results)))
    return SearchResponse(
        query=query,
        mode=mode,
        count=count,
        results=results,
        took_ms=round((time.perf_counter() - started) * 1000, 2),
        warnings=warnings,
        reranked=reranked,
        rerank_error=rerank_error,
    )


COMMON_WORDS_NOTHING = (
    "The query has only very common words, which keyword search ignores: add a word that says what "
    "you are looking for, or try semantic mode."
)
COMMON_WORDS_BY_MEANING = (
    "The query has only very common words, so these results are by meaning alone and may not be relevant: "
    "add a word that names what you are looking for."
)


def _common_words_only(query: str, *, mode: str, found: bool) -> list[str]:
    """Warn when the query has no content word, whatever the mode.

    Keyword search then finds nothing (PostgreSQL drops stop words), and says why. Semantic and
    hybrid search still return their nearest passages, ranked by the embedding of "what is the",
    so they come back looking as relevant as any: the user is told they may not be.
    """
    from search.relevance import content_terms

    if content_terms(query):
        return []
    if not found:
        return [COMMON_WORDS_NOTHING] if mode != "semantic" else []
    return [COMMON_WORDS_BY_MEANING]


def _mark_low_confidence(query: str, results: list[SearchResult]) -> None:
    """Flag hits the evidence barely supports, by the rule Ask answers with (no extra embedding:
    the cosine is the vector search's own, known for chunks the semantic side returned)."""
    from search.relevance import content_terms, coverage, passage_relevant, relevance_settings

    terms = content_terms(query)
    rule = relevance_settings()
    for result in results:
        result.low_confidence = not passage_relevant(
            similarity=result.similarity, coverage=coverage(terms, result.text), **rule
        )


def _reranked_page(grouped: list[Candidate], query: str, *, offset: int, limit: int, with_snippets: bool):
    """The page ``offset:offset+limit`` after the first ``RERANK_TOP_N`` results were reranked.

    Results past the reranked head keep their fused order behind it.
    """
    from search.rerank import rerank

    head, gone = _page(grouped, query, offset=0, limit=settings.RERANK_TOP_N, with_snippets=with_snippets)
    consumed = len(head) + gone
    outcome = rerank(query, [_rerank_text(r) for r in head])
    ordered = [head[i] for i in outcome.order]
    for index, result in enumerate(head):
        result.rerank_score = round(outcome.scores[index], 6) if index in outcome.scores else None
    page = ordered[offset : offset + limit]
    if len(page) < limit and consumed < len(grouped):
        tail, tail_gone = _page(
            grouped[consumed:],
            query,
            offset=max(0, offset - len(ordered)),
            limit=limit - len(page),
            with_snippets=with_snippets,
        )
        page += tail
        gone += tail_gone
    for position, result in enumerate(page, start=offset + 1):
        result.rank = position
    return page, gone, outcome


def _rerank_text(result: SearchResult) -> str:
    # What a reader of the hit sees first: its title and section, then the passage.
    header = " > ".join(part for part in [result.title, *(result.heading_path or [])] if part)
    return f"{header}\n{result.text}" if header else result.text


_executor: ThreadPoolExecutor | None = None
_executor_pid = 0
_executor_lock = threading.Lock()


def _semantic_executor() -> ThreadPoolExecutor:
    """A process-wide pool for the semantic half of hybrid searches (re-created after a fork)."""
    global _executor, _executor_pid
    with _executor_lock:
        if _executor is None or _executor_pid != os.getpid():
            workers = settings.SEARCH_SEMANTIC_THREADS
            _executor = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="search-semantic")
            _executor_pid = os.getpid()
        return _executor


def _page(
    grouped: list[Candidate], query: str, *, offset: int, limit: int, with_snippets: bool
) -> tuple[list[SearchResult], int]:
    """The results ``offset:offset+limit`` of ``grouped``, hydrated; and how many candidates were gone.

    One statement reads the page's rows, their document and source, and the snippets (hydration
    used to take three round trips: ORM query, query lexemes, ts_headline). A candidate whose
    chunk is gone (deleted since the vector store or the keyword query answered) takes no place:
    the next candidates fill the page, with another statement only in that rare case.
    """
    results: list[SearchResult] = []
    gone = 0
    position = offset
    snippet, params = snippet_sql(query) if with_snippets else ("NULL", {})
    while len(results) < limit and position < len(grouped):
        wanted = grouped[position : position + limit - len(results)]
        position += len(wanted)
        with connection.cursor() as cursor:
            cursor.execute(
                f"""
                SELECT c.id::text, c.text, c.heading_path, c.metadata, d.id, d.title, d.url, s.name, {snippet}
                FROM {Chunk._meta.db_table} c
                JOIN {Document._meta.db_table} d ON d.id = c.document_id
                JOIN {Source._meta.db_table} s ON s.id = d.source_id
                WHERE c.id = ANY(%(ids)s::uuid[])
                """,
                {**params, "ids": [c.chunk_id for c in wanted]},
            )
            rows = {row[0]: row for row in cursor.fetchall()}
        for cand in wanted:
            row = rows.get(cand.chunk_id)
            if row is None:
                gone += 1
                continue
            _, text, heading_path, metadata, document_id, title, url, source, marked = row
            results.append(
                SearchResult(
                    chunk_id=cand.chunk_id,
                    document_id=document_id,
                    title=title,
                    url=url,
                    source=source,
                    snippet=_snippet(marked, text) if with_snippets else "",
                    score=round(cand.score, 6),
                    rank=offset + len(results) + 1,
                    text=text,
                    heading_path=_json(heading_path),
                    metadata=_json(metadata),
                    keyword_rank=cand.keyword_rank,
                    semantic_rank=cand.semantic_rank,
                    similarity=cand.similarity,
                )
            )
    return results, gone


def _snippet(marked: str | None, text: str) -> str:
    """A hit's snippet (HTML) from ts_headline's marked text; every hit, whatever its mode, gets
    its matches marked there. All cutting and markup removal happen in ``search.snippets``."""
    return snippet_from_marked(marked) if marked is not None else snippet_plain(text)


def _json(value):
    # Django has psycopg hand jsonb over as text (its JSONField decodes it); raw SQL decodes here.
    return json.loads(value) if isinstance(value, str | bytes) else value
