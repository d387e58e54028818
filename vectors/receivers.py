"""Thin receivers: documents' announcements and the task worker's hooks, turned into vector work.

Receivers get ids, never instances, and only queue tasks (or answer a question); the work runs
in the task worker. Connected in ``VectorsConfig.ready()``.
"""

from __future__ import annotations

from documents.models import Chunk
from documents.signals import chunk_token_limit, chunks_changed, chunks_deleted, foreground_embedding
from ragsite.worker import worker_periodic, worker_started
from vectors.embedders import EmbeddingError, embedder_max_tokens
from vectors.foreground import ForegroundEmbedding
from vectors.repair import VectorsHealer
from vectors.tasks import enqueue_vector_delete, enqueue_vector_sync


def _on_chunks_changed(sender, *, document_ids, embed_here=False, **kwargs):
    if not embed_here:
        enqueue_vector_sync()


def _on_chunks_deleted(sender, *, chunk_ids, **kwargs):
    enqueue_vector_delete(chunk_ids)


def _on_foreground_embedding(sender, **kwargs):
    return ForegroundEmbedding()


def _on_chunk_token_limit(sender, **kwargs) -> int:
    try:
        # Read without loading the model: storing and keyword indexing never need it.
        return embedder_max_tokens()
    except EmbeddingError:
        return 0


def _on_worker_started(sender, **kwargs):
    # Chunks left pending by a crash between commit and enqueue, or by an outage.
    if Chunk.objects.filter(index_status=Chunk.IndexStatus.PENDING).exists():
        enqueue_vector_sync()


def _start_healer(sender, *, stopping, **kwargs):
    # Retries with backoff and the periodic drift check, in the process that owns the store.
    VectorsHealer(stopping).start()


def connect() -> None:
    chunks_changed.connect(_on_chunks_changed, dispatch_uid="vectors.chunks_changed")
    chunks_deleted.connect(_on_chunks_deleted, dispatch_uid="vectors.chunks_deleted")
    foreground_embedding.connect(_on_foreground_embedding, dispatch_uid="vectors.foreground_embedding")
    chunk_token_limit.connect(_on_chunk_token_limit, dispatch_uid="vectors.chunk_token_limit")
    worker_started.connect(_on_worker_started, dispatch_uid="vectors.worker_started")
    worker_periodic.connect(_start_healer, dispatch_uid="vectors.vectors_healer")
