"""Where a search hit or a citation leads: the document view, at the hit's chunk."""

from __future__ import annotations

from django.urls import reverse
from django.utils.http import urlencode


def document_view_url(document_id: int, chunk_id: str | None = None) -> str:
    url = reverse("document-view", args=[document_id])
    return f"{url}?{urlencode({'chunk': chunk_id})}#hit" if chunk_id else url
