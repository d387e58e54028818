"""Search filters shared by every mode: which sources, documents and document metadata to search.

The same ``SearchFilters`` value is applied three ways: to a Chunk queryset (ORM), to the raw SQL
of keyword search, and (by the semantic module) to Qdrant payload filters. Metadata values are
compared as text: ``{"page": "3"}`` matches a document whose metadata holds ``"page": 3`` or
``"page": "3"``, because filters arrive as strings from a query string.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet
from django.db.models.fields.json import KeyTextTransform

from documents.models import Document


@dataclass(frozen=True)
class SearchFilters:
    source_ids: list[int] | None = None
    document_ids: list[int] | None = None
    metadata: dict[str, str] | None = None

    @property
    def is_empty(self) -> bool:
        # An empty list is a filter that matches nothing, not "no filter": only None means unset.
        return self.source_ids is None and self.document_ids is None and not self.metadata


NO_FILTERS = SearchFilters()


def chunk_queryset_filter(queryset: QuerySet, *, filters: SearchFilters | None) -> QuerySet:
    """Restrict a Chunk queryset to the chunks that ``filters`` allow."""
    if filters is None or filters.is_empty:
        return queryset
    if filters.source_ids is not None:
        queryset = queryset.filter(document__source_id__in=filters.source_ids)
    if filters.document_ids is not None:
        queryset = queryset.filter(document_id__in=filters.document_ids)
    for index, (key, value) in enumerate(sorted((filters.metadata or {}).items())):
        alias = f"_filter_metadata_{index}"
        queryset = queryset.alias(**{alias: KeyTextTransform(key, "document__metadata")}).filter(**{alias: str(value)})
    return queryset


def chunk_filter_sql(
    filters: SearchFilters | None, *, chunk_alias: str = "c", per_chunk: bool = False
) -> tuple[str, dict[str, object]]:
    """A SQL condition on a chunk table alias, with named parameters (``%(name)s`` style).

    Returns ``("TRUE", {})`` when nothing is filtered, so callers can always write ``AND <sql>``.
    Every value travels as a parameter; only the alias and fixed table names are pasted.

    Conditions on the document (source, metadata) are a semi-join by default, which lets the
    planner start from the documents: right for "which chunks pass the filter". With
    ``per_chunk`` they are checked for each chunk by its document's primary key instead, and
    the planner cannot start from the documents: right when the chunks come from another index
    (the full-text one). There, with statistics that are missing or stale (a fresh bulk load,
    autovacuum off or late), the planner took the document side for a handful of rows and ran
    one full-text index scan per document of the source: 5,183 scans, 3.1 s for one query
    (bench/results/planner.md).
    """
    if filters is None or filters.is_empty:
        return "TRUE", {}
    conditions: list[str] = []
    params: dict[str, object] = {}
    if filters.document_ids is not None:
        conditions.append(f"{chunk_alias}.document_id = ANY(%(filter_document_ids)s)")
        params["filter_document_ids"] = [int(pk) for pk in filters.document_ids]
    document_conditions: list[str] = []
    if filters.source_ids is not None:
        document_conditions.append("d.source_id = ANY(%(filter_source_ids)s)")
        params["filter_source_ids"] = [int(pk) for pk in filters.source_ids]
    for index, (key, value) in enumerate(sorted((filters.metadata or {}).items())):
        document_conditions.append(f"(d.metadata ->> %(filter_meta_key_{index})s) = %(filter_meta_value_{index})s")
        params[f"filter_meta_key_{index}"] = str(key)
        params[f"filter_meta_value_{index}"] = str(value)
    if document_conditions:
        table = Document._meta.db_table
        where = " AND ".join(document_conditions)
        if per_chunk:
            # OFFSET 0 keeps PostgreSQL from turning the EXISTS into a join (it never flattens a
            # sub-query with an OFFSET), so it stays a primary-key look-up per chunk.
            conditions.append(
                f"EXISTS (SELECT 1 FROM {table} d WHERE d.id = {chunk_alias}.document_id AND {where} OFFSET 0)"
            )
        else:
            conditions.append(f"{chunk_alias}.document_id IN (SELECT d.id FROM {table} d WHERE {where})")
    return "(" + " AND ".join(conditions) + ")", params
