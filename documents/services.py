"""Writes: the one ingestion path every entry point uses (admin, API, commands, crawler).

PostgreSQL is the truth. A document and its chunks are stored in one transaction; the chunks'
search vectors are generated columns, so new text is keyword-searchable at commit. Embedding
and the Qdrant upsert happen after commit (see vectors.sync), driven by each chunk's
``index_status``, so an outage of the embedder or of Qdrant delays vector search but loses
nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Q
from django.db.models.expressions import RawSQL

from documents.chunking import ChunkDraft, chunk_document, heading_path_bounded
from documents.files import Original, file_keep, file_open, file_release_on_commit
from documents.filestore import FileStoreUnavailable
from documents.models import Chunk, Document, Source
from documents.parsers import ParseError, parse_document
from documents.parsers.ocr import NeedsOcr, ocr_deferred, ocr_pages_watched
from documents.signals import announce, embedder_token_limit
from documents.tokenizer import get_tokenizer

logger = logging.getLogger(__name__)


class DocumentGone(Exception):
    """The document (or source) was deleted by another writer before this one could lock it."""


class IngestError(Exception):
    """Input that cannot be ingested: a document, a source, or a crawl job of a site (crawl.jobs).

    ``field`` names the offending input for API errors, form errors and command messages.
    """

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
    # Accepted but not read yet: the file needs OCR, which the task worker does (``document_read``).
    deferred: bool = False


def source_get_or_create(*, name: str, kind: str = Source.Kind.UPLOAD, base_url: str = "") -> Source:
    name = (name or "").strip()
    if not name:
        raise IngestError("A source name is required.", field="source")
    if len(name) > 200:
        raise IngestError("A source name is at most 200 characters.", field="source")
    source, _ = Source.objects.get_or_create(name=name, defaults={"kind": kind, "base_url": base_url})
    return source


# Metadata is stored as jsonb, copied into every chunk's vector-store payload and flattened into
# filter terms; the vector engine's payload decoder refuses deep nesting (qdrant-edge: "recursion
# limit exceeded" at ~128 levels) and an unreadable payload in its write-ahead log breaks the whole
# collection. These bounds keep metadata far inside what every engine and jsonb can hold while
# leaving room for real-world tags, authors and nested records.
METADATA_MAX_DEPTH = 8  # levels of objects and arrays, the top-level object included
METADATA_MAX_KEYS = 256  # keys at all levels; also the most filter terms a point keeps (vectorstore)
METADATA_MAX_KEY_CHARS = 100  # as long as a search filter's key may be
METADATA_MAX_BYTES = 64 * 1024  # serialized as UTF-8 JSON; copied into every chunk's payload
_SURROGATE = re.compile("[\ud800-\udfff]")


def metadata_check(value) -> None:
    """IngestError (field ``metadata``) unless ``value`` is metadata every store can hold.

    A JSON object (None: none given) within the bounds above, whose keys and strings are valid
    Unicode without NUL (jsonb cannot store \\u0000, nor UTF-8 a lone surrogate such as the
    JSON escape \\ud800), and whose numbers are finite (jsonb has no NaN or Infinity). One
    function for every entry point: API, admin, commands and the crawler reach it through the
    ingest and update services, and the sources API and admin call it directly.
    """
    if value is None:
        return
    if not isinstance(value, dict):
        raise IngestError("metadata must be a JSON object.", field="metadata")
    keys = 0
    # Every value and string character costs at least a byte of JSON: counting them ends the
    # walk of a huge body after METADATA_MAX_BYTES steps instead of after all of it.
    least_bytes = 0
    # Iterative, depth-first: a structure nested past Python's recursion limit must be refused
    # here, not crash the walk.
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        least_bytes += 1 + (len(item) if isinstance(item, str) else 0)
        if least_bytes > METADATA_MAX_BYTES:
            break
        if isinstance(item, dict | list | tuple):
            if depth > METADATA_MAX_DEPTH:
                raise IngestError(
                    f"metadata nests deeper than {METADATA_MAX_DEPTH} levels of objects and arrays.", field="metadata"
                )
            if isinstance(item, dict):
                keys += len(item)
                if keys > METADATA_MAX_KEYS:
                    raise IngestError(f"metadata has more than {METADATA_MAX_KEYS} keys.", field="metadata")
                for key in item:
                    if not isinstance(key, str):
                        raise IngestError("metadata keys must be strings.", field="metadata")
                    if len(key) > METADATA_MAX_KEY_CHARS:
                        raise IngestError(
                            f"metadata keys are at most {METADATA_MAX_KEY_CHARS} characters: {key[:40]!r}… is longer.",
                            field="metadata",
                        )
                    _metadata_string_check(key)
                    least_bytes += len(key)
                stack.extend((sub, depth + 1) for sub in item.values())
            else:
                stack.extend((sub, depth + 1) for sub in item)
        elif isinstance(item, str):
            _metadata_string_check(item)
        elif isinstance(item, float) and not math.isfinite(item):
            raise IngestError("metadata numbers must be finite (JSON has no NaN or Infinity).", field="metadata")
        elif item is not None and not isinstance(item, bool | int | float):
            raise IngestError(f"metadata values must be JSON values, not {type(item).__name__}.", field="metadata")
    if least_bytes > METADATA_MAX_BYTES or (
        len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")) > METADATA_MAX_BYTES
    ):
        raise IngestError(f"metadata is larger than {METADATA_MAX_BYTES} bytes as JSON.", field="metadata")


def _metadata_string_check(text: str) -> None:
    if "\x00" in text:
        raise IngestError("metadata may not contain NUL (\\u0000) characters.", field="metadata")
    if _SURROGATE.search(text):
        raise IngestError(
            "metadata may not contain lone surrogates (\\ud800-\\udfff): they are not valid Unicode.", field="metadata"
        )


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
    limit = embedder_token_limit()  # the vectors app answers (documents.signals)
    budget = settings.CHUNK_SIZE_TOKENS
    if limit:
        # The longest context line, as chunks will carry it (headings bounded by the chunker).
        longest = max(
            (heading_path_bounded(s.heading_path) for s in parsed.sections), key=lambda p: sum(map(len, p)), default=[]
        )
        context = chunk_context(title, longest)
        context_tokens = len(tokenizer.encode(context, add_special_tokens=False).ids) + 1 if context else 0
        budget = min(budget, limit - 2 - context_tokens)
    return max(budget, MIN_CHUNK_TOKENS)


def _document_hash(title: str, text: str, metadata: dict) -> str:
    import json

    return _sha256(json.dumps([title, text, metadata], sort_keys=True, ensure_ascii=False))


def _identity_key(key: str) -> int:
    return zlib.crc32(key.encode("utf-8")) - 2**31


@dataclass
class _Prepared:
    """A document parsed and chunked, ready to store (everything before the transaction)."""

    title: str
    url: str
    text: str
    mime_type: str
    metadata: dict
    content_hash: str
    drafts: list[ChunkDraft]
    original: Original | None = None

    @property
    def identity(self) -> str:
        """What two ingests of the same document share: its url, or its content when it has none."""
        return self.url or self.content_hash


@dataclass
class _ToRead:
    """An upload that needs OCR, checked and not read: stored PROCESSING for the worker to read."""

    url: str
    original: Original
    # What the upload asked for, kept on the document (``reading["request"]``) until it is read:
    # the uploader's title ("" for the file's own), metadata, declared type and file name.
    request: dict
    pages: int  # pages OCR will read

    @property
    def identity(self) -> str:
        """Its url, or its bytes when it has none: the text that would say more is not read yet."""
        return self.url or f"file:{self.original.sha256}"


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
    keep_file: bool = False,
    defer_ocr: bool = False,
) -> IngestResult:
    """Parse, chunk and store one document; re-ingesting identical content changes nothing.

    Changed content keeps the chunks whose text (and context) did not change, deletes the ones
    that disappeared and inserts the new ones as ``pending``; only those get embedded.
    With ``keep_file`` (uploads), the bytes are kept as the document's original (documents.files).
    With ``defer_ocr`` (uploads over HTTP), a file that needs OCR is checked and kept but not
    read: the document is stored PROCESSING and the result is ``deferred``; the caller queues
    ``documents.tasks.document_read_enqueue`` for the worker to read it.
    """
    prepared = _document_prepare(
        title=title,
        url=url,
        data=data,
        text=text,
        mime=mime,
        filename=filename,
        metadata=metadata,
        keep_file=keep_file,
        defer_ocr=defer_ocr,
    )
    if isinstance(prepared, _ToRead):
        return _document_defer(source, prepared)
    return _document_store_alone(source, prepared)


# How many documents bulk callers (manage.py ingest, manage.py evaluate, the ingest bench) hand
# to document_ingest_many at a time: one transaction each.
INGEST_BATCH_DOCUMENTS = 64


def document_ingest_many(*, source: Source, items: list[dict]) -> list[IngestResult | IngestError]:
    """``document_ingest`` for several documents of one source, in one transaction; results in order.

    Each item holds ``document_ingest``'s keyword arguments. An item that cannot be parsed gets
    its IngestError in its place and the others are stored. Bulk commands use it: per document,
    storing a short text cost ~4 ms, most of it six round trips and the ORM's per-statement
    work (lock, lookup, document insert, chunk insert, commit); here the lock, the lookup and the
    inserts of new documents and of their chunks are one statement each for the whole batch
    (bench/results/ingest.md). Documents already stored go through ``document_ingest``'s
    per-document diff. Should the batch's transaction fail (a concurrent writer took a url
    first, say), nothing of it is kept and the items are stored one by one instead, each in
    its own transaction, so one failing item costs only itself. Should the store of originals
    be unreachable, nothing of the batch is kept and each item gets that error. Items with
    ``defer_ocr`` that need OCR are stored PROCESSING one by one, as ``document_ingest`` does.
    """
    results: list[IngestResult | IngestError | None] = [None] * len(items)
    prepared: dict[int, _Prepared] = {}
    for i, item in enumerate(items):
        try:
            ready = _document_prepare(**item)
            if isinstance(ready, _ToRead):
                results[i] = _document_defer(source, ready)
            else:
                prepared[i] = ready
        except IngestError as exc:
            results[i] = exc
        except DatabaseError as exc:
            logger.warning("storing document %r for reading failed: %s", item.get("filename"), exc)
            results[i] = IngestError(f"could not store the document: {exc}", code="DatabaseError")
    # A second item with the same identity must see the first one stored: it goes to the next round.
    pending = list(prepared)
    while pending:
        seen: set[str] = set()
        batch, later = [], []
        for i in pending:
            (later if prepared[i].identity in seen else batch).append(i)
            seen.add(prepared[i].identity)
        try:
            with transaction.atomic():
                stored = _documents_store_batch(source, [prepared[i] for i in batch])
        except IngestError as exc:
            if exc.code != FILE_STORE_UNAVAILABLE:
                raise
            # The store of originals is down: the batch fails as a whole, each item with the
            # store's error, instead of being retried one by one into the same outage.
            logger.warning("storing a batch of %d documents failed: %s", len(batch), exc.message)
            stored = [exc] * len(batch)
        except DatabaseError as exc:
            # Expected, and reported per item below: one line, no traceback (a command prints it).
            logger.warning("storing a batch of %d documents failed (%s); storing them one by one", len(batch), exc)
            stored = []
            for i in batch:
                try:
                    stored.append(_document_store_alone(source, prepared[i]))
                except DatabaseError as exc:
                    logger.warning("storing document %r failed: %s", prepared[i].url or prepared[i].title, exc)
                    stored.append(IngestError(f"could not store the document: {exc}", code="DatabaseError"))
                except IngestError as exc:
                    if exc.code != FILE_STORE_UNAVAILABLE:
                        raise
                    stored.append(exc)
        for i, result in zip(batch, stored, strict=True):
            results[i] = result
        pending = later
    return results  # type: ignore[return-value]


def _document_prepare(
    *,
    title: str = "",
    url: str = "",
    data: bytes | None = None,
    text: str | None = None,
    mime: str = "",
    filename: str = "",
    metadata: dict | None = None,
    keep_file: bool = False,
    defer_ocr: bool = False,
) -> _Prepared | _ToRead:
    """Validate, parse and chunk: everything that needs no database. Raises IngestError.

    With ``defer_ocr``, a file that needs OCR is returned as a ``_ToRead`` once checked (its
    type, size and pixels), before any OCR: for ``_document_defer`` to store.
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
    metadata_check(metadata)
    metadata = dict(metadata or {})
    title = (title or "").strip()
    url = (url or "").strip()
    if len(title) > 1000:
        raise IngestError("title is at most 1000 characters.", field="title")
    if len(url) > 2000:
        raise IngestError("url is at most 2000 characters.", field="url")

    try:
        with ocr_deferred() if defer_ocr else nullcontext():
            parsed = parse_document(
                data=data, text=text, mime=mime, filename=filename, url=url, max_chars=settings.INGEST_MAX_TEXT_CHARS
            )
    except NeedsOcr as exc:
        assert data is not None  # only files are read by OCR
        request = {"title": title, "metadata": metadata, "mime": mime, "filename": filename}
        return _ToRead(url=url, original=Original.of(data, filename, exc.mime), request=request, pages=exc.pages)
    except ParseError as exc:
        raise IngestError(str(exc), field="file" if data is not None else "text", code=type(exc).__name__) from exc

    title = title or parsed.title or filename or url
    title = title[:1000]
    doc_metadata = {**parsed.metadata, **metadata}
    if filename:
        doc_metadata.setdefault("filename", filename)

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
    return _Prepared(
        title=title,
        url=url,
        text=parsed.text,
        mime_type=parsed.mime_type,
        metadata=doc_metadata,
        content_hash=_document_hash(title, parsed.text, doc_metadata),
        drafts=drafts,
        # The type parsing found, not the one the client declared: the file is served with it.
        original=Original.of(data, filename, parsed.mime_type) if keep_file and data is not None else None,
    )


def _existing_documents(source: Source, prepared: list[_Prepared]) -> dict[str, Document]:
    """The stored documents these would replace, by identity, locked for update (in a transaction).

    One statement in id order: every writer locks documents in id order before their chunks
    (see ``_chunks_lock``), so two writers can wait for each other but never deadlock.
    """
    urls = [p.url for p in prepared if p.url]
    hashes = [p.content_hash for p in prepared if not p.url]
    found: dict[str, Document] = {}
    if not urls and not hashes:
        return found
    match = Q(url__in=urls) if urls else Q(pk__in=[])
    if hashes:
        match |= Q(url="", content_hash__in=hashes)
    for doc in Document.objects.select_for_update().filter(match, source=source).order_by("pk"):
        if doc.url:
            found[doc.url] = doc
        else:
            found.setdefault(doc.content_hash, doc)
    return found


def _source_hold(source: Source) -> None:
    """Keep the source from being deleted until this transaction ends (FOR KEY SHARE).

    Taken before any document lock, as ``source_delete`` takes the source first. Without it a
    document stored beside its source's deletion failed at commit on the foreign key (a 500);
    now it waits, and finds the source gone.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM documents_source WHERE id = %s FOR KEY SHARE", [source.pk])
        held = cursor.fetchone() is not None
    if not held:
        raise IngestError(
            f"The source {source.name!r} was deleted while this document was being stored.",
            field="source",
            code="conflict",
        )


def _chunks_lock(document_ids: list[int]) -> None:
    """Lock every chunk of these documents, in id order, in one statement.

    Writers hold the document rows first, so they never wait for each other here; the vector
    sync marks chunks without the document lock, also in id order (vectors.sync.mark), so a
    writer and the sync cannot each hold a chunk the other waits for.
    """
    if not document_ids:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM (SELECT 1 FROM documents_chunk WHERE document_id = ANY(%s) ORDER BY id FOR UPDATE) x",
            [sorted(document_ids)],
        )


def _document_store_alone(source: Source, prepared: _Prepared) -> IngestResult:
    """Store one prepared document in its own transaction (a savepoint inside the caller's)."""
    with transaction.atomic():
        _lock_document_identities(source.pk, [prepared.identity])
        _source_hold(source)
        return _document_store(source, prepared, _existing_documents(source, [prepared]).get(prepared.identity))


def _document_store(source: Source, prepared: _Prepared, existing: Document | None) -> IngestResult:
    """Store one prepared document over ``existing`` (None: a new one), inside the caller's transaction."""
    if (
        existing is not None
        and existing.content_hash == prepared.content_hash
        and existing.status == Document.Status.ACTIVE
    ):
        if prepared.original is not None and existing.file_sha256 != prepared.original.sha256:
            # Same text from other bytes (or stored before originals were kept): keep these.
            _original_fill(existing, prepared.original)
            Document.objects.filter(pk=existing.pk).update(**{f: getattr(existing, f) for f in FILE_FIELDS})
        return IngestResult(document=existing, created=False, changed=False, chunks_kept=existing.chunks.count())
    created = existing is None
    document = existing or Document(source=source, url=prepared.url)
    payload_changed = existing is not None and existing.metadata != prepared.metadata
    _document_fill(document, prepared)
    if created:
        document.save()
    else:
        # The row is locked (``_existing_documents``): name the columns, so nothing else of
        # the row is written from this copy.
        _chunks_lock([document.pk])
        document.save(update_fields=[*DOCUMENT_CONTENT_FIELDS, "updated_at"])
    result = _chunks_replace(
        document=document, drafts=prepared.drafts, resync_kept=payload_changed, new_document=created
    )
    result.created = created
    return result


FILE_FIELDS = ["file_sha256", "file_name", "file_type", "file_size"]
DOCUMENT_CONTENT_FIELDS = [
    "title",
    "mime_type",
    "text",
    "content_hash",
    "metadata",
    "status",
    "error",
    "reading",
    *FILE_FIELDS,
]


def _document_fill(document: Document, prepared: _Prepared) -> None:
    document.title = prepared.title
    document.mime_type = prepared.mime_type
    document.text = prepared.text
    document.content_hash = prepared.content_hash
    document.metadata = prepared.metadata
    document.status = Document.Status.ACTIVE
    # Stored, by whichever writer: a read in the background left pending or failed is over.
    document.error = ""
    document.reading = {}
    _original_fill(document, prepared.original)


def _original_fill(document: Document, original: Original | None) -> None:
    """Keep the original on disk and name it on the row (inside the storing transaction).

    New content without an original (text sent for an uploaded document's url) drops the old
    original: it no longer matches the text. A file no document names is deleted after commit.
    """
    previous = document.file_sha256
    if original is None:
        document.file_sha256, document.file_name, document.file_type, document.file_size = "", "", "", 0
    else:
        _original_keep(original)
        document.file_sha256 = original.sha256
        document.file_name = original.name[:255]
        document.file_type = original.content_type[:200]
        document.file_size = len(original.data)
    if previous and previous != document.file_sha256:
        file_release_on_commit(previous)


FILE_STORE_UNAVAILABLE = "file_store_unavailable"


def _original_keep(original: Original) -> None:
    """Store the original, or fail the whole ingest: a document is never stored without the
    original it was uploaded with (the client still has the bytes and can send them again)."""
    try:
        file_keep(original.data, original.sha256)
    except FileStoreUnavailable as exc:
        raise IngestError(
            f"The original file could not be stored ({exc}); nothing was stored: send it again later.",
            field="file",
            code=FILE_STORE_UNAVAILABLE,
        ) from exc


def _documents_store_batch(source: Source, prepared: list[_Prepared]) -> list[IngestResult]:
    """Store prepared documents with distinct identities, inside the caller's transaction."""
    _lock_document_identities(source.pk, [p.identity for p in prepared])
    _source_hold(source)
    existing = _existing_documents(source, prepared)
    # All the chunks this batch may touch, in one ordered statement (not document by document,
    # which would take chunk locks out of id order across documents).
    _chunks_lock([doc.pk for doc in existing.values()])
    results: list[IngestResult | None] = [None] * len(prepared)
    new: list[tuple[int, Document]] = []
    for i, item in enumerate(prepared):
        if item.identity in existing:
            results[i] = _document_store(source, item, existing[item.identity])
        else:
            document = Document(source=source, url=item.url)
            _document_fill(document, item)
            new.append((i, document))
    if new:
        Document.objects.bulk_create([document for _, document in new], batch_size=500)
        chunks: list[Chunk] = []
        # bulk_create sends no post_save: announce the new documents as save() would.
        announce(document_ids=[document.pk for _, document in new])
        for i, document in new:
            added = _new_chunks(document, prepared[i].drafts)
            chunks.extend(added)
            results[i] = IngestResult(
                document=document,
                created=True,
                changed=True,
                chunks_added=len(added),
                added_chunk_ids=[c.pk for c in added],
            )
        Chunk.objects.bulk_create(chunks, batch_size=500)
    return results  # type: ignore[return-value]


def _lock_document_identities(source_id: int, keys: list[str]) -> None:
    """Serialise concurrent ingests of the same (source, url/content) until the transaction ends.

    One statement for all the keys, taken in a fixed order so two batches cannot deadlock.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_advisory_xact_lock(%s, k)) FROM (SELECT DISTINCT unnest(%s::int[]) AS k ORDER BY 1) x",
            [source_id, sorted({_identity_key(key) for key in keys})],
        )


def _chunks_replace(
    *, document: Document, drafts: list[ChunkDraft], resync_kept: bool = False, new_document: bool = False
) -> IngestResult:
    """Diff the document's chunks against the new drafts by content hash (one transaction)."""
    existing: dict[str, list[Chunk]] = {}
    # A document created in this transaction has no chunks: skipping the query saves one of the
    # eight round trips a new document costs (bench/results/ingest.md).
    # Only what the diff reads and writes: a large document has tens of thousands of chunks.
    for chunk in () if new_document else document.chunks.defer("text", "context").order_by("ordinal"):
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
        new.append(_new_chunk(document, draft, context, digest))
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


def _new_chunk(document: Document, draft: ChunkDraft, context: str, digest: str) -> Chunk:
    return Chunk(
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


def _new_chunks(document: Document, drafts: list[ChunkDraft]) -> list[Chunk]:
    """The chunks of a document stored for the first time."""
    out = []
    for draft in drafts:
        context = chunk_context(document.title, draft.heading_path)
        out.append(_new_chunk(document, draft, context, _sha256(embedding_input(draft, context))))
    return out


def _document_lock(document_id: int) -> Document:
    """The document's row, re-read and locked FOR UPDATE; DocumentGone if it was deleted.

    The first lock every writer of an existing document takes (then its chunks, in id order).
    """
    document = Document.objects.select_for_update().filter(pk=document_id).first()
    if document is None:
        raise DocumentGone(f"Document {document_id} no longer exists.")
    return document


def document_update(*, document: Document, title: str | None = None, metadata: dict | None = None) -> Document:
    """Change a document's title or metadata; chunks whose context changes are re-embedded.

    Works on the row as it is now (locked), not on the caller's copy: a re-ingest that committed
    since the caller read it keeps its text. DocumentGone if the document was deleted meanwhile.
    """
    if metadata is not None:
        metadata_check(metadata)
    if title is not None:
        title = title.strip()
        if not title:
            raise IngestError("title may not be blank.", field="title")
        if len(title) > 1000:
            raise IngestError("title is at most 1000 characters.", field="title")
    with transaction.atomic():
        document = _document_lock(document.pk)
        if metadata is not None:
            document.metadata = metadata
        if title is not None:
            document.title = title
        document.content_hash = _document_hash(document.title, document.text, document.metadata)
        # Only these columns: a full-row save would write back whatever the copy held, and on a
        # row deleted meanwhile Django inserts it again.
        document.save(update_fields=["title", "metadata", "content_hash", "updated_at"])
        _chunks_lock([document.pk])
        # Every point's payload carries the title and metadata, so every chunk is re-synced; only
        # chunks whose context changed get a new hash, and the embedding cache spares the rest.
        chunks = list(document.chunks.all())
        for chunk in chunks:
            chunk.context = chunk_context(document.title, chunk.heading_path)
            chunk.content_hash = _sha256(embedding_input(chunk, chunk.context))
            chunk.index_status = Chunk.IndexStatus.PENDING
        Chunk.objects.bulk_update(chunks, ["context", "content_hash", "index_status"])
    return document


def document_delete(*, document: Document) -> bool:
    """Delete a document; its points leave Qdrant after commit (documents.signals).

    False if another writer deleted it first. Locks the document, then its chunks, as every
    writer does: Django's cascade alone deletes the chunks first and the document last, the
    opposite order, which deadlocked beside a PATCH or a re-ingest.
    """
    with transaction.atomic():
        try:
            locked = _document_lock(document.pk)
        except DocumentGone:
            return False
        _chunks_lock([locked.pk])
        locked.delete()
    return True


def source_delete(*, source: Source) -> bool:
    """Delete a source with its documents and chunks; False if it was already deleted.

    The source row first (ingests into it hold it FOR KEY SHARE, so they finish first or find
    it gone), then its documents in id order, then their chunks in id order.
    """
    with transaction.atomic():
        locked = Source.objects.select_for_update().filter(pk=source.pk).first()
        if locked is None:
            return False
        document_ids = list(
            Document.objects.select_for_update().filter(source=locked).order_by("pk").values_list("pk", flat=True)
        )
        _chunks_lock(document_ids)
        locked.delete()
    return True


def document_reembed(*, document: Document) -> int:
    """Queue every chunk of the document for embedding and upsert again (0 if it was deleted)."""
    with transaction.atomic():
        try:
            _document_lock(document.pk)
        except DocumentGone:
            return 0
        _chunks_lock([document.pk])
        # Also the explicit way out of quarantine (vectors.quarantine): the attempts start again.
        count = Chunk.objects.filter(document_id=document.pk).update(
            index_status=Chunk.IndexStatus.PENDING, last_error="", sync_attempts=0, sync_retry_at=None
        )
        announce(document_ids=[document.pk])
    return count


def document_rechunk(*, document: Document) -> IngestResult:
    """Chunk the document's stored text again and diff its chunks against it (one transaction).

    The repair for chunks that hold text other than ``document.text`` (the drift check in
    vectors.repair finds them). Markdown keeps its headings; other types were stored as their
    extracted text, which is chunked as plain text. Unchanged chunks keep their vectors.
    """
    from documents.parsers import TEXT_MARKDOWN, TEXT_PLAIN

    with transaction.atomic():
        document = Document.objects.select_for_update().get(pk=document.pk)
        mime = TEXT_MARKDOWN if document.mime_type == TEXT_MARKDOWN else TEXT_PLAIN
        parsed = parse_document(text=document.text, mime=mime)
        tokenizer = get_tokenizer()
        chunk_tokens = chunk_token_budget(tokenizer, document.title, parsed)
        drafts = chunk_document(
            parsed,
            tokenizer=tokenizer,
            chunk_tokens=chunk_tokens,
            overlap_tokens=min(settings.CHUNK_OVERLAP_TOKENS, chunk_tokens // 4),
        )
        return _chunks_replace(document=document, drafts=drafts)


# --- Uploads read in the background ------------------------------------------------------------
#
# OCR takes seconds a page; an upload over HTTP that needs it is checked, kept and stored
# PROCESSING (``_document_defer``), and the task worker reads it (``document_read``, run by
# documents.tasks) and stores it as any ingest is stored: the same locks in the same order, the
# same chunk diff, the same ``chunks_changed`` announcement. A new document has no chunks until
# then, so no search finds it; a document sent again keeps its previous text and chunks until
# the new file is read, and keeps them if it cannot be (FAILED, with the reason in ``error``).
# Every upload gets a token (``reading["upload"]``): a reader stores its result only if the
# document still waits for the upload it read, so a file sent again meanwhile is never
# overwritten by the older one.

# Advisory lock namespace of "this document is being read" (session locks, two-key form). Negative,
# so it never meets an ingest's (source id, identity) locks or the workers' liveness locks.
_READER_NAMESPACE = -0x7265
# Reads that failed for a reason of the server's (not the file's), waited for before the next try.
READ_RETRY_SECONDS = 60


def _document_defer(source: Source, item: _ToRead) -> IngestResult:
    """Store an upload that needs OCR as PROCESSING, with its original; unchanged if already read.

    Known by its url, or (without one) by its bytes: the same file sent again is unchanged once
    read, the same upload while it is read is that document (not a second one), and a failed one
    is read again. Locks as every writer does: the identity, the source, the document rows.
    """
    with transaction.atomic():
        _lock_document_identities(source.pk, [item.identity])
        _source_hold(source)
        found = Document.objects.select_for_update().filter(source=source, url=item.url)
        if not item.url:
            found = found.filter(file_sha256=item.original.sha256)
        candidates = list(found.order_by("pk"))
        for existing in candidates:
            if _read_already(existing, item):
                return IngestResult(
                    document=existing, created=False, changed=False, chunks_kept=existing.chunks.count()
                )
        for existing in candidates:
            if existing.status == Document.Status.PROCESSING and _reading_matches(existing, item):
                # The same upload again while it is read: that read answers it.
                return IngestResult(document=existing, created=False, changed=False, deferred=True)
        # With a url there is one candidate; without, an ACTIVE one with the same bytes but other
        # metadata stays as it is, as two ingests of the same text with other metadata would.
        existing = next((d for d in candidates if item.url or d.status != Document.Status.ACTIVE), None)
        created = existing is None
        if created:
            request = item.request
            metadata = {**request["metadata"]}
            if request["filename"]:
                metadata.setdefault("filename", request["filename"])
            existing = Document(
                source=source,
                url=item.url,
                title=(request["title"] or request["filename"] or item.url)[:1000],
                mime_type=item.original.content_type,
                metadata=metadata,
            )
        document = existing
        document.status = Document.Status.PROCESSING
        document.error = ""
        document.reading = {
            "upload": uuid.uuid4().hex,
            "request": item.request,
            "pages": item.pages,
            "page": 0,
            "attempts": 0,
        }
        _original_fill(document, item.original)
        if created:
            document.save()
        else:
            # Its text, chunks and title stay those of the last version read until this one is.
            document.save(update_fields=["status", "error", "reading", *FILE_FIELDS, "updated_at"])
    return IngestResult(document=document, created=created, changed=True, deferred=True)


def _read_already(document: Document, item: _ToRead) -> bool:
    """Whether ``document`` is this upload already read: its bytes, with what the upload asks.

    The text is not known before OCR, so the content hash cannot be compared: the same bytes
    read into an ACTIVE document with the same file name, the uploader's title (if any) and the
    uploader's metadata are the same document.
    """
    request = item.request
    metadata = document.metadata or {}
    return (
        document.status == Document.Status.ACTIVE
        and document.file_sha256 == item.original.sha256
        and metadata.get("filename", "") == request["metadata"].get("filename", request["filename"])
        and (not request["title"] or document.title == request["title"][:1000])
        and all(metadata.get(key) == value for key, value in request["metadata"].items())
    )


def _reading_matches(document: Document, item: _ToRead) -> bool:
    return document.file_sha256 == item.original.sha256 and (document.reading or {}).get("request") == item.request


@dataclass(frozen=True)
class _Claim:
    """A reader's hold on one upload: which document, which upload of it, and what was asked."""

    document_id: int
    source: Source
    url: str
    sha256: str
    upload: str
    request: dict


def document_read(document_id: int, *, on_page: Callable[[int], None] | None = None) -> IngestResult | None:
    """Read a PROCESSING upload from its original, OCR included, and store it; run by the worker.

    Returns the stored result, or None when there was nothing to store: the document is gone,
    not PROCESSING (stored by another writer), sent again meanwhile (the newer upload's task
    reads it), or could not be read (then FAILED, ``error`` says why; its original is kept, and
    sending the file again reads it again).

    Idempotent, and one reader per document at a time (a session advisory lock: a second task
    for it waits, then finds it done). Each start counts an attempt before any work, so a worker
    killed mid-OCR counts too; the start after TASKS_MAX_ATTEMPTS fails the document instead.
    ``on_page(n)`` is called before the n-th page is read by OCR; should it raise (the worker
    is stopping), the read stops there, the attempt is not counted and the exception goes on.
    Any other exception (the store of originals is down, say) leaves the document PROCESSING,
    for ``document_read_interrupted`` to decide what comes next.
    """
    with _reader_lock(document_id):
        claim = _read_claim(document_id)
        if claim is None:
            return None
        stopped = False

        def page(number: int) -> None:
            nonlocal stopped
            _read_progress(claim, number)
            try:
                if on_page is not None:
                    on_page(number)
            except BaseException:
                stopped = True
                raise

        try:
            data = _read_original(claim)
            request = claim.request
            with ocr_pages_watched(page):
                prepared = _document_prepare(
                    title=request["title"],
                    url=claim.url,
                    data=data,
                    mime=request["mime"],
                    filename=request["filename"],
                    metadata=request["metadata"],
                    keep_file=True,
                )
        except IngestError as exc:
            _read_fail(claim, exc.message)
            return None
        except BaseException:
            if stopped:
                _read_unclaim(claim)
            raise
        return _read_store(claim, prepared)


@contextmanager
def _reader_lock(document_id: int) -> Iterator[None]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s, %s)", [_READER_NAMESPACE, _lock_int(document_id)])
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [_READER_NAMESPACE, _lock_int(document_id)])


def _lock_int(document_id: int) -> int:
    """A document id as the int4 the two-key advisory lock takes (ids past 2**31 wrap: a rare
    shared lock, never a wrong one)."""
    return (document_id + 2**31) % 2**32 - 2**31


def _read_claim(document_id: int) -> _Claim | None:
    """Count an attempt on a PROCESSING document (committed before any work); None if there is
    nothing to read, or the attempts are spent (then it is FAILED)."""
    with transaction.atomic():
        # The document's row only: the source is read, not locked (ingests into it share it).
        document = (
            Document.objects.select_for_update(of=("self",)).select_related("source").filter(pk=document_id).first()
        )
        if document is None or document.status != Document.Status.PROCESSING:
            return None
        reading = dict(document.reading or {})
        attempts = int(reading.get("attempts") or 0)
        failure = ""
        if "request" not in reading or "upload" not in reading:
            failure = "What the upload asked for was not kept with it; send the file again."
        elif attempts >= settings.TASKS_MAX_ATTEMPTS:
            failure = (
                f"Reading the file stopped {attempts} times before it was done (the task worker was stopped, "
                "killed or ran out of memory). Send the file again to retry."
            )
        if failure:
            Document.objects.filter(pk=document_id).update(status=Document.Status.FAILED, error=failure)
            logger.warning("document %s: not read: %s", document_id, failure)
            return None
        reading.update(attempts=attempts + 1, page=0)
        Document.objects.filter(pk=document_id).update(reading=reading)
        return _Claim(
            document_id=document_id,
            source=document.source,
            url=document.url,
            sha256=document.file_sha256,
            upload=reading["upload"],
            request=reading["request"],
        )


def _waiting(claim: _Claim):
    """The document, while it still waits for the upload this reader claimed."""
    return Document.objects.filter(
        pk=claim.document_id, status=Document.Status.PROCESSING, reading__upload=claim.upload
    )


def _read_progress(claim: _Claim, page: int) -> None:
    _waiting(claim).update(reading=RawSQL("jsonb_set(reading, '{page}', to_jsonb(%s::int))", [page]))


def _read_unclaim(claim: _Claim) -> None:
    """The read was stopped from outside (the worker is stopping): that start was no attempt."""
    _waiting(claim).update(
        reading=RawSQL(
            "jsonb_set(jsonb_set(reading, '{page}', '0'), '{attempts}', "
            "to_jsonb(greatest((reading ->> 'attempts')::int - 1, 0)))",
            [],
        )
    )


def _read_original(claim: _Claim) -> bytes:
    """The original's bytes from the store, checked against their hash. IngestError when it is
    missing or damaged; FileStoreUnavailable when the store cannot be reached."""
    stored = file_open(Document(pk=claim.document_id, file_sha256=claim.sha256))
    if stored is None:
        raise IngestError("The uploaded file is missing from the file store; send it again.", field="file")
    try:
        data = stored.stream.read(settings.INGEST_MAX_BYTES + 1)
    finally:
        stored.stream.close()
    if hashlib.sha256(data).hexdigest() != claim.sha256:
        raise IngestError("The stored copy of the uploaded file is damaged; send it again.", field="file")
    return data


def _read_fail(claim: _Claim, reason: str) -> None:
    if _waiting(claim).update(status=Document.Status.FAILED, error=reason):
        logger.info("document %s could not be read: %s", claim.document_id, reason)


def _read_store(claim: _Claim, prepared: _Prepared) -> IngestResult | None:
    """Store what was read over the PROCESSING document, as every ingest stores: the identity
    lock, the source, the document row, its chunks in id order."""
    with transaction.atomic():
        _lock_document_identities(claim.source.pk, [prepared.identity])
        _source_hold(claim.source)
        document = _waiting(claim).select_for_update().first()
        if document is None:
            return None  # deleted, stored by another writer, or sent again meanwhile
        return _document_store(claim.source, prepared, document)


def document_read_again(*, document: Document) -> bool:
    """Put a FAILED upload that was to be read in the background back in line, attempts reset.

    For a read that failed for a passing reason (a worker killed too often, an OCR timeout on a
    busy machine): the kept original is read again, as sending the file again would. False when
    there is nothing to read again (not failed, no original, not an upload read in the background).
    The caller queues ``documents.tasks.document_read_enqueue`` for it.
    """
    with transaction.atomic():
        found = Document.objects.select_for_update(of=("self",)).filter(pk=document.pk).first()
        if found is None or found.status != Document.Status.FAILED or not found.file_sha256:
            return False
        reading = dict(found.reading or {})
        if "request" not in reading or "upload" not in reading:
            return False
        reading.update(upload=uuid.uuid4().hex, attempts=0, page=0)
        Document.objects.filter(pk=found.pk).update(status=Document.Status.PROCESSING, error="", reading=reading)
    return True


def document_read_interrupted(document_id: int, reason: str) -> bool:
    """A read ended by an error of the server's (not the file's): True if it should be tried
    again later; once TASKS_MAX_ATTEMPTS are spent the document is FAILED with ``reason``."""
    with transaction.atomic():
        document = Document.objects.select_for_update().filter(pk=document_id).first()
        if document is None or document.status != Document.Status.PROCESSING:
            return False
        if int((document.reading or {}).get("attempts") or 0) < settings.TASKS_MAX_ATTEMPTS:
            return True
        Document.objects.filter(pk=document_id).update(status=Document.Status.FAILED, error=reason)
        return False


def documents_to_read() -> list[int]:
    """The documents waiting to be read, oldest first (a worker starting queues their reads)."""
    return list(Document.objects.filter(status=Document.Status.PROCESSING).order_by("pk").values_list("pk", flat=True))
