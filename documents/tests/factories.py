"""Plain factories for rows that tests need as they are: no parsing, chunking or embedding.

Tests about ingestion call ``documents.services.document_ingest``; these are for tests that need
sources, documents and chunks to search, list, render or administer.
"""

from __future__ import annotations

import hashlib

from documents.models import Chunk, Document, Source


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def source_create(name: str = "notes", **fields) -> Source:
    return Source.objects.create(name=name, **fields)


def document_create(source: Source, *, title: str = "", text: str = "", **fields) -> Document:
    fields.setdefault("content_hash", _digest(text))
    return Document.objects.create(source=source, title=title, text=text, **fields)


def chunk_create(document: Document, text: str | None = None, *, ordinal: int = 0, **fields) -> Chunk:
    """A chunk of ``document`` (its whole text unless ``text`` is given), context its title."""
    text = document.text if text is None else text
    fields.setdefault("context", document.title)
    fields.setdefault("token_count", len(text.split()))
    fields.setdefault("char_end", len(text))
    fields.setdefault("content_hash", _digest(text))
    return Chunk.objects.create(document=document, ordinal=ordinal, text=text, **fields)


def document_with_chunk(
    source: Source, title: str, text: str, *, metadata: dict | None = None, context: str | None = None
) -> Chunk:
    """One document whose whole text is one chunk; returns the chunk."""
    document = document_create(source, title=title, text=text, metadata=metadata or {})
    return chunk_create(document, **({} if context is None else {"context": context}))
