"""Reads of documents' models shared by the apps above (search, crawl) and documents' own API."""

from __future__ import annotations

from documents.models import Source
from ragsite.api import object_id


def source_by_id_or_name(value: str) -> Source | None:
    """The source with this id, else the one with this name (surrounding spaces ignored), else None.

    An id is ASCII digits within bigint (``object_id``): anything else, "²" included, is a name.
    """
    value = (value or "").strip()
    if (pk := object_id(value)) is not None:
        source = Source.objects.filter(pk=pk).first()
        if source is not None:
            return source
    return Source.objects.filter(name=value).first()
