"""Reads of documents' models shared by the apps above (search, crawl) and documents' own API."""

from __future__ import annotations

import re

from documents.models import Source

# ASCII digits only: str.isdigit() also accepts "²" or "٣", which int() then refuses or reads as
# another number. And no longer than a bigint can hold, so the lookup cannot overflow the column.
_SOURCE_ID = re.compile(r"\d{1,18}", re.ASCII)


def source_by_id_or_name(value: str) -> Source | None:
    """The source with this id, else the one with this name (surrounding spaces ignored), else None."""
    value = (value or "").strip()
    if _SOURCE_ID.fullmatch(value):
        source = Source.objects.filter(pk=int(value)).first()
        if source is not None:
            return source
    return Source.objects.filter(name=value).first()
