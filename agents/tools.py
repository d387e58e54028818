"""What the MCP tools do, as plain synchronous Django code over the REST API's own parts.

Each function validates its arguments with the serializer of the matching REST endpoint (so the
limits and messages are the API's), calls the same service or selector, and returns the same JSON
body. A bad argument raises ``ToolError`` naming the argument, which the SDK hands to the agent
as an ``isError`` result it can correct; nothing here ends a session.

Project imports are kept to this block, so moving a module (vectors, accounts) is a one-line change.
"""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max
from mcp.server.mcpserver.exceptions import ToolError

from agents.principal import current_principal
from crawl.api import CrawlJobCreateSerializer, CrawlJobSerializer
from crawl.fetching import Fetcher
from crawl.models import CrawlJob
from crawl.services import crawl_job_cancel, crawl_job_create, crawl_job_enqueue
from documents.api import DEFAULT_API_SOURCE, DocumentCreateSerializer, DocumentFilter, DocumentSerializer
from documents.models import Chunk, Document, Source
from documents.services import IngestError, document_delete, document_ingest, source_get_or_create
from documents.sync import pending_chunks, vectors_sync_pending
from documents.vectorstore import vector_store_reset
from ragsite.api import ApiError, Pagination
from search.api import (
    AskParams,
    SearchParams,
    ask_begin,
    ask_finish,
    search_filters,
    search_rerank,
    search_response_body,
)
from search.selectors import SearchUnavailable, chunk_search

DOCUMENT_PAGE_MAX = 100_000  # characters of a document's text per get_document call
LIST_DOCUMENTS_MAX = Pagination.max_limit


def source_uri(source_id: int) -> str:
    return f"ragsite://sources/{source_id}"


def document_uri(document_id: int) -> str:
    return f"ragsite://documents/{document_id}"


def require_write(tool: str) -> None:
    principal = current_principal.get()
    if principal is None or not principal.can_write:
        raise ToolError(
            f"{tool} changes the knowledge base and needs a write-scoped API key; this key is read-only. "
            "Ask for a key created with `manage.py create_api_key --scope write`."
        )


def _validated(serializer_class, data: dict, names: dict[str, str] | None = None) -> dict:
    """The REST serializer's validated data, or a ToolError naming the tool's arguments."""
    serializer = serializer_class(data=data)
    if serializer.is_valid():
        return serializer.validated_data
    raise ToolError(_errors_text(serializer.errors, names or {}))


def _errors_text(errors, names: dict[str, str]) -> str:
    if not isinstance(errors, dict):
        return "; ".join(str(e) for e in errors)
    parts = []
    for field, messages in errors.items():
        messages = messages if isinstance(messages, list) else [messages]
        text = " ".join(str(m) for m in messages)
        if field == "non_field_errors":
            parts.append(text)
        else:
            parts.append(f"Invalid argument '{names.get(field, field)}': {text}")
    return "; ".join(parts)


def _ids(value, argument: str) -> str | None:
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ToolError(f"Invalid argument '{argument}': give at least one id.")
    return ",".join(str(item) for item in items)


# --- read tools ------------------------------------------------------------------------------


def list_sources() -> dict:
    sources = Source.objects.annotate(
        document_count=Count("documents", distinct=True),
        chunk_count=Count("documents__chunks"),
        documents_updated=Max("documents__updated_at"),
    ).order_by("name")
    results = []
    for source in sources:
        updated = max(filter(None, [source.updated_at, source.documents_updated]))
        results.append(
            {
                "id": source.pk,
                "name": source.name,
                "kind": source.kind,
                "base_url": source.base_url,
                "document_count": source.document_count,
                "chunk_count": source.chunk_count,
                "last_updated": updated.isoformat(),
                "uri": source_uri(source.pk),
            }
        )
    return {"count": len(results), "sources": results}


def search(
    *, query: str, mode: str | None, limit: int, source, document, metadata: dict | None, rerank: bool | None = None
) -> dict:
    data: dict = {"q": query, "limit": limit, "offset": 0}
    if rerank is not None:
        data["rerank"] = rerank
    if mode is not None:
        data["mode"] = mode
    if source is not None:
        data["source"] = str(source)
    if document is not None:
        data["document"] = _ids(document, "document")
    if metadata is not None:
        data["metadata"] = [f"{key}:{value}" for key, value in metadata.items()]
    params = _validated(SearchParams, data, {"q": "query"})
    try:
        response = chunk_search(
            params["q"],
            mode=params.get("mode"),
            limit=params["limit"],
            offset=params["offset"],
            filters=search_filters(params),
            rerank=search_rerank(params),
        )
    except SearchUnavailable as exc:
        raise ToolError(f"{exc}. Try mode='keyword'.") from exc
    body = search_response_body(response)
    for hit in body["results"]:
        hit["chunk_id"] = str(hit["chunk_id"])
        hit["page"] = (hit.get("metadata") or {}).get("page")
        hit["document_uri"] = document_uri(hit["document_id"])
    return body


def ask(*, question: str, source, conversation, rerank: bool | None = None) -> dict:
    """As POST /api/ask/ (not streamed): the same validation, conversation and answer code."""
    data: dict = {"question": question}
    if source is not None:
        data["source"] = str(source)
    if conversation is not None:
        data["conversation"] = conversation
    if rerank is not None:
        data["rerank"] = rerank
    params = _validated(AskParams, data)
    principal = current_principal.get()
    try:
        body = ask_finish(ask_begin(params, owner=f"key:{principal.key_id}"))
    except ApiError as exc:
        field = getattr(exc, "field", None)
        prefix = f"Invalid argument '{field}': " if field else ""
        raise ToolError(f"{prefix}{exc.detail}") from exc
    for citation in body["citations"]:
        citation["chunk_id"] = str(citation["chunk_id"])
        citation["document_uri"] = document_uri(citation["document_id"])
    return body


def list_documents(*, source, query: str | None, limit: int, offset: int) -> dict:
    if not 1 <= limit <= LIST_DOCUMENTS_MAX:
        raise ToolError(f"Invalid argument 'limit': between 1 and {LIST_DOCUMENTS_MAX}.")
    if offset < 0:
        raise ToolError("Invalid argument 'offset': at least 0.")
    data = {}
    if source is not None:
        data["source"] = str(source)
    if query:
        data["q"] = query
    queryset = (
        Document.objects.select_related("source").annotate(chunk_count=Count("chunks")).order_by("-updated_at", "-id")
    )
    filtered = DocumentFilter(data=data, queryset=queryset)
    if not filtered.is_valid():
        raise ToolError(_errors_text(filtered.errors, {"q": "query"}))
    documents = filtered.qs
    total = documents.count()
    page = list(documents[offset : offset + limit])
    results = DocumentSerializer(page, many=True).data
    for item in results:
        item["uri"] = document_uri(item["id"])
    after = offset + len(page)
    return {"count": total, "results": results, "next_offset": after if after < total else None}


def get_document(*, id: int, start: int, length: int) -> dict:
    if start < 0:
        raise ToolError("Invalid argument 'start': at least 0.")
    if not 1 <= length <= DOCUMENT_PAGE_MAX:
        raise ToolError(f"Invalid argument 'length': between 1 and {DOCUMENT_PAGE_MAX}.")
    document = Document.objects.select_related("source").filter(pk=id).first()
    if document is None:
        raise ToolError(f"Invalid argument 'id': no document with id {id}. list_documents or search give ids.")
    total = len(document.text)
    end = min(start + length, total)
    chunks = (
        Chunk.objects.filter(document=document, char_end__gt=start, char_start__lt=max(end, start + 1))
        .order_by("ordinal")
        .values("id", "ordinal", "char_start", "char_end", "heading_path", "metadata", "token_count", "index_status")
    )
    return {
        "id": document.pk,
        "uri": document_uri(document.pk),
        "title": document.title,
        "url": document.url,
        "source": document.source.name,
        "source_id": document.source_id,
        "mime_type": document.mime_type,
        "metadata": document.metadata,
        "created_at": document.created_at.isoformat(),
        "updated_at": document.updated_at.isoformat(),
        "chunk_count": document.chunks.count(),
        "total_chars": total,
        "start": min(start, total),
        "end": end,
        "next_start": end if end < total else None,
        "text": document.text[start:end],
        "chunks": [
            {
                "id": str(c["id"]),
                "ordinal": c["ordinal"],
                "char_start": c["char_start"],
                "char_end": c["char_end"],
                "heading_path": c["heading_path"],
                "page": (c["metadata"] or {}).get("page"),
                "token_count": c["token_count"],
                "index_status": c["index_status"],
            }
            for c in chunks
        ],
    }


def source_detail(source_id: int) -> dict | None:
    source = Source.objects.filter(pk=source_id).first()
    if source is None:
        return None
    documents = list(
        Document.objects.filter(source=source).order_by("-updated_at", "-id").values("id", "title", "url")[:100]
    )
    return {
        "id": source.pk,
        "name": source.name,
        "kind": source.kind,
        "base_url": source.base_url,
        "metadata": source.metadata,
        "document_count": Document.objects.filter(source=source).count(),
        "recent_documents": [{**d, "uri": document_uri(d["id"])} for d in documents],
    }


def document_text(document_id: int) -> str | None:
    return Document.objects.filter(pk=document_id).values_list("text", flat=True).first()


# --- write tools -----------------------------------------------------------------------------


def add_document(*, text: str | None, url: str | None, title: str | None, source: str | None, metadata) -> dict:
    require_write("add_document")
    if text is None and not url:
        raise ToolError("Invalid argument 'text': give the document's text, or 'url' to fetch it from.")
    fields = {
        "title": title or "",
        "url": url or "",
        "source": source or DEFAULT_API_SOURCE,
        "metadata": metadata or {},
    }
    if text is not None:
        data = _validated(DocumentCreateSerializer, {**fields, "text": text})
        content = {"text": data["text"], "mime": "text/plain"}
    else:
        data = _validated(DocumentCreateSerializer, {**fields, "text": "-"})
        content = _fetch(data["url"])
        data["url"] = content.pop("url")
    try:
        with transaction.atomic():
            src = source_get_or_create(name=data["source"], kind=Source.Kind.API)
            result = document_ingest(
                source=src, title=data["title"], url=data["url"], metadata=data["metadata"], **content
            )
    except IngestError as exc:
        raise ToolError(f"Invalid argument '{_INGEST_FIELDS.get(exc.field, exc.field)}': {exc.message}") from exc
    document = result.document
    return {
        "id": document.pk,
        "uri": document_uri(document.pk),
        "status": "new" if result.created else ("changed" if result.changed else "unchanged"),
        "title": document.title,
        "url": document.url,
        "source": src.name,
        "chunk_count": document.chunks.count(),
        "chunks_added": result.chunks_added,
        "chunks_removed": result.chunks_removed,
    }


# IngestError names the REST field; the tool's argument for a fetched body is `url`.
_INGEST_FIELDS = {"file": "url", "non_field_errors": "text"}


def _fetch(url: str) -> dict:
    """The body at ``url``, fetched as the crawler fetches: public addresses only, bounded in size and time."""
    if not url.lower().startswith(("http://", "https://")):
        raise ToolError("Invalid argument 'url': only http(s) URLs can be fetched.")
    with Fetcher(max_connections=1) as fetcher:
        result = fetcher.fetch(url, max_bytes=settings.INGEST_MAX_BYTES)
    if not result.ok:
        raise ToolError(f"Invalid argument 'url': could not fetch {url}: {result.error or f'HTTP {result.status}'}")
    return {"data": result.content, "mime": result.content_type, "url": result.final_url}


def delete_document(*, id: int) -> dict:
    require_write("delete_document")
    document = Document.objects.filter(pk=id).first()
    if document is None:
        raise ToolError(f"Invalid argument 'id': no document with id {id}.")
    title = document.title
    document_delete(document=document)
    return {"deleted": id, "title": title}


def start_crawl(*, url: str, max_pages: int, max_depth: int, include, exclude, source: str | None) -> dict:
    require_write("start_crawl")
    data: dict = {"start_url": url, "max_pages": max_pages, "max_depth": max_depth}
    data["include"] = include or []
    data["exclude"] = exclude or []
    if source is not None:
        data["source"] = source
    names = {"start_url": "url"}
    params = _validated(CrawlJobCreateSerializer, data, names)
    try:
        with transaction.atomic():
            job = crawl_job_create(
                start_url=params["start_url"],
                source=params.get("source"),
                max_pages=params["max_pages"],
                max_depth=params["max_depth"],
                include=params["include"],
                exclude=params["exclude"],
                allowed_hosts=params["allowed_hosts"],
                path_prefix_only=params["path_prefix_only"],
                use_sitemap=params["use_sitemap"],
                delete_missing=params["delete_missing"],
            )
            crawl_job_enqueue(job=job)
    except IngestError as exc:
        raise ToolError(f"Invalid argument '{names.get(exc.field, exc.field)}': {exc.message}") from exc
    return _job_body(job.pk)


def crawl_status(*, job_id: int) -> dict:
    require_write("crawl_status")
    return _job_body(job_id)


def cancel_crawl(*, job_id: int) -> dict:
    require_write("cancel_crawl")
    job = _job(job_id)
    crawl_job_cancel(job=job)
    return _job_body(job_id)


def _job(job_id: int) -> CrawlJob:
    job = CrawlJob.objects.select_related("source").filter(pk=job_id).first()
    if job is None:
        raise ToolError(f"Invalid argument 'job_id': no crawl job with id {job_id}.")
    return job


def _job_body(job_id: int) -> dict:
    body = dict(CrawlJobSerializer(_job(job_id)).data)
    body["source_uri"] = source_uri(body["source_id"])
    return body


# --- stdio without a server (agents.management.commands.mcp) ------------------------------------


def embed_pending() -> None:
    """Embed and index chunks stored as pending (the work the server's task worker would do)."""
    if pending_chunks().exists():
        vectors_sync_pending()


def vector_store_release() -> None:
    """Close this process's embedded store and its lock; the next use opens it again."""
    vector_store_reset()
