"""The document view at ``/documents/<id>/?chunk=<chunk id>``: where a search hit or a citation leads.

It shows the document's extracted text with the hit's chunk highlighted (``#hit`` scrolls to
it), the chunk's heading path and page or slide, and a link to the original file (a PDF opens
at the page). The page is bounded: one part of at most PART_CHARS characters of text is read
from the database (``substr`` in the query, so a 20 MB text is never loaded whole) and
rendered; links page through the rest.
"""

from __future__ import annotations

import uuid

from django.db.models.functions import Length, Substr
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import urlencode

from documents.models import Chunk, Document
from documents.parsers import type_name
from search.links import document_view_url
from search.views import link_url, login_redirect, page_allowed

# Text per part of the page: ~40 KB of HTML, some 10 printed pages; a hit shows with the text
# before it (a quarter of the part) and after it.
PART_CHARS = 40_000
# How far a part's edges move to fall on a line break rather than mid-word.
SNAP_CHARS = 2_000
SLIDE_TYPES = {
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.oasis.opendocument.presentation",
}


def location_label(mime_type: str, metadata: dict) -> str:
    """Where in the original a chunk sits: "p. 12", "pp. 12-13" or "slide 4"; "" when unknown."""
    page = metadata.get("page") if isinstance(metadata, dict) else None
    if not isinstance(page, int) or isinstance(page, bool):
        return ""
    pages = [p for p in metadata.get("pages") or [] if isinstance(p, int) and not isinstance(p, bool)]
    last = max(pages) if len(pages) > 1 else page
    if mime_type in SLIDE_TYPES:
        return f"slide {page}" if last == page else f"slides {page}\u2013{last}"
    return f"p. {page}" if last == page else f"pp. {page}\u2013{last}"


def _chunk(document: Document, value: str) -> Chunk | None:
    try:
        chunk_id = uuid.UUID(value)
    except ValueError:
        return None
    return (
        Chunk.objects.filter(pk=chunk_id, document_id=document.pk)
        .only("id", "ordinal", "char_start", "char_end", "heading_path", "metadata")
        .first()
    )


def _offset(value: str | None, length: int) -> int | None:
    if value is None:
        return None
    value = value.strip()
    if not (value.isascii() and value.isdigit()) or len(value) > 12:
        return None
    return min(int(value), length)


def _part(document_id: int, length: int, start: int, end: int, hit: tuple[int, int] | None):
    """Read [start, end) of the text (widened to line breaks) in one query; the shown bounds and text."""
    lo, hi = max(0, start - SNAP_CHARS), min(length, end + SNAP_CHARS)
    raw = Document.objects.filter(pk=document_id).annotate(part=Substr("text", lo + 1, hi - lo))
    raw = raw.values_list("part", flat=True).first() or ""
    if start > 0:
        # Move back to the line start, but never past the hit's start.
        limit = min(start, hit[0]) if hit else start
        cut = raw.rfind("\n", max(0, start - SNAP_CHARS) - lo, limit - lo)
        start = lo + cut + 1 if cut != -1 else start
    if end < length:
        cut = raw.find("\n", end - lo)
        end = lo + cut if cut != -1 and cut <= end + SNAP_CHARS - lo else end
    return start, end, raw[start - lo : end - lo]


def document_view(request: HttpRequest, pk: str) -> HttpResponse:
    from ragsite.api import object_id  # here: importing it first thing would load DRF before its settings module

    if not page_allowed(request):
        return login_redirect(request)
    document_id = object_id(pk)
    document = (
        Document.objects.filter(pk=document_id)
        .select_related("source")
        .defer("text")
        .annotate(text_length=Length("text"))
        .first()
        if document_id
        else None
    )
    if document is None:
        raise Http404("No such document.")
    length = document.text_length or 0
    chunk_param = request.GET.get("chunk", "")
    chunk = _chunk(document, chunk_param) if chunk_param else None
    hit = (min(chunk.char_start, length), min(chunk.char_end, length)) if chunk else None

    at = _offset(request.GET.get("at"), length)
    if at is not None:
        start = at
    elif hit:
        start = max(0, hit[0] - PART_CHARS // 4)
    else:
        start = 0
    end = min(length, start + PART_CHARS)
    if hit and at is None and hit[1] > end:
        end = min(length, hit[1], start + 2 * PART_CHARS)  # a chunk longer than the part: show it whole
    start, end, text = _part(document.pk, length, start, end, hit if at is None else None)

    before, marked, after = text, "", ""
    if hit and hit[0] < end and hit[1] > start:
        a, b = max(hit[0], start) - start, min(hit[1], end) - start
        before, marked, after = text[:a], text[a:b], text[b:]

    page_label = location_label(document.mime_type, chunk.metadata) if chunk else ""
    file_url = ""
    if document.file_sha256:
        file_url = reverse("document-file", args=[document.pk])
        page = chunk.metadata.get("page") if chunk else None
        if document.file_type == "application/pdf" and isinstance(page, int):
            file_url += f"#page={page}"

    def at_url(offset: int) -> str:
        query = {"chunk": str(chunk.pk)} if chunk else {}
        return "?" + urlencode(query | {"at": offset})

    context = {
        "document": document,
        "source_url": link_url(document.url),
        "file_url": file_url,
        "chunk": chunk,
        "chunk_missing": bool(chunk_param) and chunk is None,
        "heading_path": [h for h in (chunk.heading_path if chunk else []) if h and h != document.title],
        "page_label": page_label,
        "type_name": type_name(document.mime_type),
        "hit_shown": bool(marked),
        "hit_url": document_view_url(document.pk, str(chunk.pk)) if chunk else "",
        "before": before,
        "marked": marked,
        "after": after,
        "shown_from": start,
        "shown_to": end,
        "length": length,
        "earlier_url": at_url(max(0, start - PART_CHARS)) if start > 0 else "",
        "later_url": at_url(end) if end < length else "",
        "first_url": at_url(0) if start > 0 else "",
        "user": request.user,
    }
    return render(request, "search/document.html", context)
