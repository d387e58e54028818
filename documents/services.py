"""Writes: the one ingestion path every entry point uses (admin, API, commands, crawler).

PostgreSQL is the truth. A document and its chunks are stored in one transaction; the chunks'
search vectors are generated columns, so new text is keyword-searchable at commit. Embedding
and the Qdrant upsert happen after commit (see documents.sync), driven by each chunk's
``index_status``, so an outage of the embedder or of Qdrant delays vector search but loses
nothing.
"""

from __future__ import annotations

import hashlib
import logging
import zlib
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction

from documents.chunking import ChunkDraft, chunk_document
from documents.embeddings import get_tokenizer
from documents.models import Chunk, Document, Source
from documents.parsing import ParseError, parse_document

logger = logging.getLogger(__name__)


class IngestError(Exception):
    """Input that cannot be ingested. ``field`` names the offending input for API errors."""

    def __init__(self, message: str, *, field: str = "non_field_errors", code: str = "invalid"):
        super().__init__(message)
        self.message = message
        self.field = field
        self.code = code


@dataclass
class IngestResult:
    document: Document
    created: bool
    changed: bool
    chunks_added: int = 0
    chunks_removed: int = 0
    chunks_kept: int = 0
    added_chunk_ids: list = field(default_factory=list)


def source_get_or_create(*, name: str, kind: str = Source.Kind.UPLOAD, base_url: str = "") -> Source:
    name = (name or "").strip()
    if not name:
        raise IngestError("A source name is required.", field="source")
    if len(name) > 200:
        raise IngestError("A source name is at most 200 characters.", field="source")
    source, _ = Source.objects.get_or_create(name=name, defaults={"kind": kind, "base_url": base_url})
    return source


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def chunk_context(title: str, heading_path: list[str]) -> str:
    """The words that frame a chunk: its document's title and the headings above it."""
    parts = [title.strip()] if title.strip() else []
    parts += [h.strip() for h in heading_path if h and h.strip() and h.strip() != title.strip()]
    return " > ".join(parts)


def embedding_input(chunk: Chunk | ChunkDraft, context: str) -> str:
    """What the embedder sees for a chunk: the framing context, then the text.

    The chunk's ``content_hash`` is the hash of this string, so a changed title or heading
    re-embeds the chunk and an unchanged one never is.
    """
    return f"{context}\n{chunk.text}" if context else chunk.text


MIN_CHUNK_TOKENS = 64


def chunk_token_budget(tokenizer, title: str, parsed) -> int:
    """CHUNK_SIZE_TOKENS, shrunk so that context line + chunk fit the embedder's input.

    The embedder sees "title > headings" before the chunk text and truncates at its maximum
    input (256 tokens for all-MiniLM-L6-v2, including two special tokens); without this the
    end of every full chunk would never be embedded.
    """
    from documents.embeddings import EmbeddingError, embedder_max_tokens

    try:
        # Read without loading the model: storing and keyword indexing never need it.
        limit = embedder_max_tokens()
    except EmbeddingError:
        limit = 0
    budget = settings.CHUNK_SIZE_TOKENS
    if limit:
        deepest = max((s.heading_path for s in parsed.sections), key=len, default=[])
        context = chunk_context(title, deepest)
        context_tokens = len(tokenizer.encode(context, add_special_tokens=False).ids) + 1 if context else 0
        budget = min(budget, limit - 2 - context_tokens)
    return max(budget, MIN_CHUNK_TOKENS)


def _document_hash(title: str, text: str, metadata: dict) -> str:
    import json

    return _sha256(json.dumps([title, text, metadata], sort_keys=True, ensure_ascii=False))


def _lock_document_identity(source_id: int, key: str) -> None:
    """Serialise concurrent ingests of the same (source, url/content) until the transaction ends."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s, %s)",
            [source_id, zlib.crc32(key.encode("utf-8")) - 2**31],
        )


def document_ingest(
    *,
    source: Source,
    title: str = "",
    url: str = "",
    data: bytes | None = None,
    text: str | None = None,
    mime: str = "",
    filename: str = "",
    metadata: dict | None = None,
) -> IngestResult:
    """Parse, chunk and store one document; re-ingesting identical content changes nothing.

    Changed content keeps the chunks whose text (and context) did not change, deletes the ones
    that disappeared and inserts the new ones as ``pending``; only those get embedded.
    """
    if (data is None) == (text is None):
        raise IngestError("Give either a file or text, not both and not neither.", field="text")
    size = len(data) if data is not None else len(text.encode("utf-8"))
    if size > settings.INGEST_MAX_BYTES:
        raise IngestError(
            f"The content is {size} bytes; the limit is {settings.INGEST_MAX_BYTES} bytes (INGEST_MAX_BYTES).",
            field="file" if data is not None else "text",
            code="too_large",
        )
    if metadata is not None and not isinstance(metadata, dict):
        raise IngestError("metadata must be a JSON object.", field="metadata")
    metadata = dict(metadata or {})
    title = (title or "").strip()
    url = (url or "").strip()
    if len(title) > 1000:
        raise IngestError("title is at most 1000 characters.", field="title")
    if len(url) > 2000:
        raise IngestError("url is at most 2000 characters.", field="url")

    try:
        parsed = parse_document(data=data, text=text, mime=mime, filename=filename, url=url)
    except ParseError as exc:
        raise IngestError(str(exc), field="file" if data is not None else "text", code=type(exc).__name__) from exc

    title = title or parsed.title or filename or url
    title = title[:1000]
    doc_metadata = {**parsed.metadata, **metadata}
    if filename:
        doc_metadata.setdefault("filename", filename)
    doc_hash = _document_hash(title, parsed.text, doc_metadata)

    tokenizer = get_tokenizer()
    chunk_tokens = chunk_token_budget(tokenizer, title, parsed)
    drafts = chunk_document(
        parsed,
        tokenizer=tokenizer,
        chunk_tokens=chunk_tokens,
        overlap_tokens=min(settings.CHUNK_OVERLAP_TOKENS, chunk_tokens // 4),
    )
    if not drafts:
        raise IngestError("The document has no text to index.", field="text", code="EmptyContent")

    with transaction.atomic():
        _lock_document_identity(source.pk, url or doc_hash)
        if url:
            existing = Document.objects.select_for_update().filter(source=source, url=url).first()
        else:
            existing = (
                Document.objects.select_for_update().filter(source=source, url="", content_hash=doc_hash).first()
            )
        if existing is not None and existing.content_hash == doc_hash and existing.status == Document.Status.ACTIVE:
            return IngestResult(document=existing, created=False, changed=False, chunks_kept=existing.chunks.count())

        created = existing is None
        document = existing or Document(source=source, url=url)
        document.title = title
        document.mime_type = parsed.mime_type
        document.text = parsed.text
        document.content_hash = doc_hash
        document.metadata = doc_metadata
        document.status = Document.Status.ACTIVE
        payload_changed = existing is not None and existing.metadata != doc_metadata
        document.save()
        result = _chunks_replace(document=document, drafts=drafts, resync_kept=payload_changed, new_document=created)
        result.created = created
        return result


def _chunks_replace(
    *, document: Document, drafts: list[ChunkDraft], resync_kept: bool = False, new_document: bool = False
) -> IngestResult:
    """Diff the document's chunks against the new drafts by content hash (one transaction)."""
    existing: dict[str, list[Chunk]] = {}
    # A document created in this transaction has no chunks: skipping the query saves one of the
    # eight round trips a new document costs (bench/results/ingest.md).
    for chunk in () if new_document else document.chunks.all().order_by("ordinal"):
        existing.setdefault(chunk.content_hash, []).append(chunk)

    keep: list[Chunk] = []
    new: list[Chunk] = []
    for draft in drafts:
        context = chunk_context(document.title, draft.heading_path)
        digest = _sha256(embedding_input(draft, context))
        candidates = existing.get(digest)
        if candidates:
            chunk = candidates.pop(0)
            chunk.ordinal = draft.ordinal
            chunk.char_start, chunk.char_end = draft.char_start, draft.char_end
            chunk.heading_path = draft.heading_path
            chunk.metadata = draft.metadata
            if resync_kept:
                # Same text, new document metadata: the Qdrant payload must follow. The
                # embedding cache makes this an upsert, not a re-embedding.
                chunk.index_status = Chunk.IndexStatus.PENDING
            keep.append(chunk)
            continue
        new.append(
            Chunk(
                document=document,
                ordinal=draft.ordinal,
                text=draft.text,
                context=context,
                token_count=draft.token_count,
                char_start=draft.char_start,
                char_end=draft.char_end,
                heading_path=draft.heading_path,
                metadata=draft.metadata,
                content_hash=digest,
                index_status=Chunk.IndexStatus.PENDING,
            )
        )
    removed = [chunk for chunks in existing.values() for chunk in chunks]
    if removed:
        # Deleting through the queryset sends post_delete per chunk, which queues the removal
        # of their points after commit (documents.signals).
        Chunk.objects.filter(pk__in=[c.pk for c in removed]).delete()
    if keep:
        # Ordinals are unique per document with a deferred constraint, so shifting them in
        # one statement cannot collide half-way.
        Chunk.objects.bulk_update(
            keep, ["ordinal", "char_start", "char_end", "heading_path", "metadata", "index_status"]
        )
    if new:
        Chunk.objects.bulk_create(new, batch_size=500)
    return IngestResult(
        document=document,
        created=False,
        changed=True,
        chunks_added=len(new),
        chunks_removed=len(removed),
        chunks_kept=len(keep),
        added_chunk_ids=[c.pk for c in new],
    )


@transaction.atomic
def document_update(*, document: Document, title: str | None = None, metadata: dict | None = None) -> Document:
    """Change a document's title or metadata; chunks whose context changes are re-embedded."""
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise IngestError("metadata must be a JSON object.", field="metadata")
        document.metadata = metadata
    if title is not None:
        title = title.strip()
        if not title:
            raise IngestError("title may not be blank.", field="title")
        if len(title) > 1000:
            raise IngestError("title is at most 1000 characters.", field="title")
        document.title = title
    document.content_hash = _document_hash(document.title, document.text, document.metadata)
    document.save()
    # Every point's payload carries the title and metadata, so every chunk is re-synced; only
    # chunks whose context changed get a new hash, and the embedding cache spares the rest.
    chunks = list(document.chunks.all())
    for chunk in chunks:
        chunk.context = chunk_context(document.title, chunk.heading_path)
        chunk.content_hash = _sha256(embedding_input(chunk, chunk.context))
        chunk.index_status = Chunk.IndexStatus.PENDING
    Chunk.objects.bulk_update(chunks, ["context", "content_hash", "index_status"])
    return document


def document_delete(*, document: Document) -> None:
    """Delete a document; its points leave Qdrant after commit (documents.signals)."""
    document.delete()


def source_delete(*, source: Source) -> None:
    source.delete()


def document_reembed(*, document: Document) -> int:
    """Queue every chunk of the document for embedding and upsert again."""
    from documents.signals import enqueue_vector_sync

    with transaction.atomic():
        count = document.chunks.update(index_status=Chunk.IndexStatus.PENDING, last_error="")
        transaction.on_commit(enqueue_vector_sync)
    return count
