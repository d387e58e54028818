"""The documents app's gauges for /metrics, read from its tables at scrape time."""

from __future__ import annotations

from documents.models import Chunk, Document
from ragsite.metrics import status_gauge


def database_gauges():
    yield status_gauge(
        "ragsite_chunks", "Chunks by vector index status.", Chunk, "index_status", Chunk.IndexStatus.values
    )
    yield status_gauge("ragsite_documents", "Documents by status.", Document, "status", Document.Status.values)
