"""Corpus statistics for keyword ranking (BM25): a rebuildable cache over documents' chunks.

PostgreSQL's GIN index answers "which chunks contain this lexeme" quickly, but counting them means
visiting every matching heap row (about 170 ms for a common lexeme at 100k chunks), far too slow
to do per query. So document frequencies are precomputed with ``ts_stat`` by
``search.keyword_stats.keyword_stats_refresh`` and read by primary key at query time. Rows that are
missing (lexemes first seen after the last refresh) are counted live, which is cheap because such
lexemes are rare. Stale numbers only shift idf a little; they never hide a result.
"""

from __future__ import annotations

import uuid

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


class Conversation(models.Model):
    """A thread of questions and answers: follow-ups are searched with what came before.

    ``owner`` names who may read and delete it: ``key:<api key id>``, ``user:<user id>`` or
    ``session:<session key>`` (an anonymous visitor of a public instance). A plain string rather
    than foreign keys, so deleting a key or a user never blocks on its conversations; the
    retention purge (CONVERSATION_RETENTION_DAYS) removes them in time.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.CharField(max_length=80, db_index=True)
    title = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        return self.title or str(self.id)


class Turn(models.Model):
    """One question of a conversation, what was searched for it, and the answer given."""

    class Status(models.TextChoices):
        ANSWERED = "answered"
        NOT_FOUND = "not_found"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="turns")
    position = models.PositiveIntegerField()
    question = models.TextField()
    searched_for = models.TextField(help_text="The standalone query that was searched.")
    rewritten_by = models.CharField(max_length=20, help_text="none, rule or llm")
    answer = models.TextField()
    status = models.CharField(max_length=20, choices=Status.choices)
    citations = models.JSONField(default=list)
    mode = models.CharField(max_length=20)
    provider = models.CharField(max_length=40)
    model = models.CharField(max_length=200, blank=True)
    timings = models.JSONField(default=dict, help_text="Milliseconds: rewrite, retrieve, answer, total.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["conversation", "position"]
        constraints = [models.UniqueConstraint(fields=["conversation", "position"], name="turn_position_unique")]

    def __str__(self) -> str:
        return self.question[:80]
