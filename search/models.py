"""Corpus statistics for keyword ranking (BM25): a rebuildable cache over documents' chunks.

PostgreSQL's GIN index answers "which chunks contain this lexeme" quickly, but counting them means
visiting every matching heap row (about 170 ms for a common lexeme at 100k chunks), far too slow
to do per query. So document frequencies are precomputed with ``ts_stat`` by
``search.keyword.keyword_stats_refresh`` and read by primary key at query time. Rows that are
missing (lexemes first seen after the last refresh) are counted live, which is cheap because such
lexemes are rare. Stale numbers only shift idf a little; they never hide a result.
"""

from __future__ import annotations

from django.db import models


class LexemeStat(models.Model):
    """How many chunks contain a lexeme (the ``english`` configuration of ``Chunk.search_vector``)."""

    lexeme = models.TextField(primary_key=True)
    chunk_count = models.PositiveIntegerField()

    def __str__(self) -> str:
        return f"{self.lexeme}: {self.chunk_count}"


class CorpusStat(models.Model):
    """One row (id=1): the corpus size and mean chunk length that LexemeStat was computed with."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    chunk_count = models.PositiveIntegerField()
    # Mean number of distinct lexemes per chunk (``length(search_vector)``): BM25's average
    # document length, in the same unit the query measures each chunk with.
    mean_length = models.FloatField()
    refreshed_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.chunk_count} chunks, refreshed {self.refreshed_at:%Y-%m-%d %H:%M}"
