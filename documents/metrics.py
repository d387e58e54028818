"""The documents app's gauges for /metrics, read from its tables at scrape time."""

from __future__ import annotations

from django.db import connection
from prometheus_client.core import GaugeMetricFamily

from documents.models import Chunk, Document, EmbeddingCache
from ragsite.metrics import query_rows, status_gauge


def database_gauges():
    yield status_gauge(
        "ragsite_chunks", "Chunks by vector index status.", Chunk, "index_status", Chunk.IndexStatus.values
    )
    yield status_gauge("ragsite_documents", "Documents by status.", Document, "status", Document.Status.values)


def embedding_cache_gauges():
    stored = GaugeMetricFamily(
        "ragsite_embeddings_stored",
        "Vectors in the embedding cache by model: every text ever embedded, by any process. Its rate "
        "is the embedding rate across all workers.",
        labels=["model"],
    )
    table = connection.ops.quote_name(EmbeddingCache._meta.db_table)
    for model, count in query_rows(f"SELECT model, count(*) FROM {table} GROUP BY model"):
        stored.add_metric([model], count)
    yield stored
