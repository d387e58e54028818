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
import zlib
from dataclasses import dataclass, field

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Q

from documents.chunking import ChunkDraft, chunk_document, heading_path_bounded
from documents.files import Original, file_keep, file_release_on_commit
from documents.filestore import FileStoreUnavailable
from documents.models import Chunk, Document, Source
from documents.parsers import ParseError, parse_document
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
) -> IngestResult:
    """Parse, chunk and store one document; re-ingesting identical content changes nothing.

    Changed content keeps the chunks whose text (and context) did not change, deletes the ones
    that disappeared and inserts the new ones as ``pending``; only those get embedded.
    With ``keep_file`` (uploads), the bytes are kept as the document's original (documents.files).
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
    )
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
    be unreachable, nothing of the batch is kept and each item gets that error.
    """
    results: list[IngestResult | IngestError | None] = [None] * len(items)
    prepared: dict[int, _Prepared] = {}
    for i, item in enumerate(items):
        try:
            prepared[i] = _document_prepare(**item)
        except IngestError as exc:
            results[i] = exc
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
) -> _Prepared:
    """Validate, parse and chunk: everything that needs no database. Raises IngestError."""
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
        parsed = parse_document(
            data=data, text=text, mime=mime, filename=filename, url=url, max_chars=settings.INGEST_MAX_TEXT_CHARS
        )
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
DOCUMENT_CONTENT_FIELDS = ["title", "mime_type", "text", "content_hash", "metadata", "status", *FILE_FIELDS]


def _document_fill(document: Document, prepared: _Prepared) -> None:
    document.title = prepared.title
    document.mime_type = prepared.mime_type
    document.text = prepared.text
    document.content_hash = prepared.content_hash
    document.metadata = prepared.metadata
    document.status = Document.Status.ACTIVE
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
