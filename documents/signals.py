"""What documents announces to the apps above it (vectors, search): Django signals, ids only.

documents never imports those apps; they connect their receivers to these signals.

- ``chunks_changed(document_ids, embed_here)``: after commit; these documents were saved or
  their chunks written, so pending chunks may exist. ``embed_here``: the sender (a bulk command)
  embeds them itself in the foreground, so nobody else needs to.
- ``chunks_deleted(chunk_ids)``: after commit; these chunks are gone (their points must go).
- ``foreground_embedding``: `manage.py ingest` asks for the object that embeds what it stores
  (``stored(chunks_added)`` after each batch, ``finish(stdout, stderr)``, ``abort()``,
  ``watch(progress_bar)``); no receiver (no vectors app): the command only stores.
- ``chunk_token_limit``: the embedder's input limit in tokens, which chunk sizes must respect
  (receivers return it, 0 if unknown).

Within a transaction the ids are collected and sent once when it commits (nothing if it rolls
back); inside ``changes_batched`` (bulk commands) once when the bulk operation ends. The truth
stays in the database (each chunk's ``index_status``), so a missed announcement (a crash between
commit and send) is repaired by ``manage.py vectors_sync``.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import Signal

from documents.models import Chunk, Document

chunks_changed = Signal()
chunks_deleted = Signal()
foreground_embedding = Signal()
chunk_token_limit = Signal()


@dataclass
class _Changes:
    document_ids: set[int] = field(default_factory=set)
    chunk_ids: list[str] = field(default_factory=list)

    def send(self, *, embed_here: bool = False) -> None:
        # Deletions first: a point deletion queued after a sync could remove a re-added point.
        if self.chunk_ids:
            chunks_deleted.send(sender=Chunk, chunk_ids=self.chunk_ids)
        if self.document_ids:
            chunks_changed.send(sender=Document, document_ids=sorted(self.document_ids), embed_here=embed_here)


_state = threading.local()


@contextmanager
def changes_batched(*, embed_here: bool = False):
    """Announce the changes of a bulk operation (many transactions) once, when it ends."""
    if getattr(_state, "batch", None) is not None:
        yield
        return
    _state.batch = batch = _Changes()
    try:
        yield
    finally:
        _state.batch = None
        batch.send(embed_here=embed_here)


def announce(*, document_ids=(), chunk_ids=()) -> None:
    """Announce changes once the current transaction commits (at once outside one)."""
    changes = getattr(_state, "batch", None)
    if changes is None:
        connection = transaction.get_connection()
        if not connection.in_atomic_block:
            changes = _Changes(set(document_ids), [str(pk) for pk in chunk_ids])
            changes.send()
            return
        changes = getattr(_state, "pending", None)
        if changes is None or not any(entry[1] == _send_pending for entry in connection.run_on_commit):
            # First change in this transaction, or the previous one rolled back (its callback
            # was discarded with it): collect anew, with a callback of its own.
            changes = _state.pending = _Changes()
            transaction.on_commit(_send_pending)
    changes.document_ids.update(document_ids)
    changes.chunk_ids.extend(str(pk) for pk in chunk_ids)


def _send_pending() -> None:
    changes = getattr(_state, "pending", None)
    _state.pending = None
    if changes is not None:
        changes.send()


def foreground_embedding_start():
    """The object that embeds what a bulk command stores (see ``foreground_embedding``), or None."""
    for _, response in foreground_embedding.send(sender=None):
        if response is not None:
            return response
    return None


def embedder_token_limit() -> int:
    """The smallest input limit the receivers of ``chunk_token_limit`` report; 0 if none does."""
    limits = [limit for _, limit in chunk_token_limit.send(sender=None) if limit]
    return min(limits, default=0)


def _on_document_saved(sender, instance, **kwargs):
    announce(document_ids=[instance.pk])


def _on_chunk_saved(sender, instance, **kwargs):
    announce(document_ids=[instance.document_id])


def _on_chunk_deleted(sender, instance, **kwargs):
    announce(chunk_ids=[instance.pk])


def connect() -> None:
    post_save.connect(_on_document_saved, sender=Document, dispatch_uid="documents.document_saved")
    post_save.connect(_on_chunk_saved, sender=Chunk, dispatch_uid="documents.chunk_saved")
    post_delete.connect(_on_chunk_deleted, sender=Chunk, dispatch_uid="documents.chunk_deleted")
