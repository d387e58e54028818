"""qdrant-client engine: a Qdrant server (``QDRANT_URL``) or the client's local mode on disk.

Only calls that behave the same in both modes are used (query_points, upsert, delete with
PointIdsList/FilterSelector, scroll, count, create/get/delete collection, collection_exists),
so the server path and ``QDRANT_LOCAL_ENGINE=client`` share one implementation. The model and
dimension are recorded in the collection's own metadata (Qdrant >= 1.16, and local mode).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from vectors.stores.base import (
    INTEGER_INDEXES,
    KEYWORD_INDEXES,
    Conditions,
    OwnerLock,
    VectorHit,
    VectorStore,
    VectorStoreError,
    VectorStoreMismatch,
    VectorStoreUnavailable,
    mismatch_message,
    public_payload,
)

logger = logging.getLogger(__name__)

META_KEY = "ragsite"
UPSERT_BATCH = 256  # keeps each server request well under its body-size limit
DELETE_BATCH = 1000


def qdrant_filter(conditions: Conditions) -> qm.Filter | None:
    if conditions.empty:
        return None
    must: list[Any] = []
    if conditions.source_ids is not None:
        must.append(qm.FieldCondition(key="source_id", match=qm.MatchAny(any=list(conditions.source_ids))))
    if conditions.document_ids is not None:
        must.append(qm.FieldCondition(key="document_id", match=qm.MatchAny(any=list(conditions.document_ids))))
    for group in conditions.term_groups:
        must.append(qm.FieldCondition(key="metadata_terms", match=qm.MatchAny(any=list(group))))
    return qm.Filter(must=must)


class QdrantClientStore(VectorStore):
    def __init__(
        self,
        *,
        collection: str,
        url: str = "",
        api_key: str = "",
        timeout: int = 10,
        path: Path | None = None,
    ) -> None:
        super().__init__(collection=collection)
        self.url = url
        self.timeout = timeout
        self._owner: OwnerLock | None = None
        self._known_dimension: int | None = None
        if url:
            self.engine = "server"
            self.where = url
            # check_compatibility=False: the version probe would contact the server while the
            # process starts, before anything needs Qdrant (and warn when it is down).
            self.client = QdrantClient(
                url=url, api_key=api_key or None, timeout=int(timeout), check_compatibility=False, prefer_grpc=False
            )
        else:
            if path is None:
                raise VectorStoreError("local mode needs a path")
            self.engine = "client"
            self.where = str(path)
            self._owner = OwnerLock(path, engine=self.engine)
            try:
                # Several threads use the client under our lock, so SQLite's same-thread check
                # only gets in the way.
                self.client = QdrantClient(path=str(path / "client"), force_disable_check_same_thread=True)
            except RuntimeError as exc:  # the client's own lock: someone opened the folder without us
                self._owner.release()
                raise VectorStoreUnavailable(
                    f"The local vector store at {path} is in use by another process ({exc}). Stop it, or run "
                    "a Qdrant server and set QDRANT_URL so several processes can share it."
                ) from exc
            except BaseException:
                self._owner.release()
                raise

    # error mapping ----------------------------------------------------------------------------

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ResponseHandlingException as exc:  # connection refused, DNS, timeouts
            raise VectorStoreUnavailable(
                f"The Qdrant server at {self.url} (QDRANT_URL) did not answer within QDRANT_TIMEOUT="
                f"{self.timeout}s: {exc.source!r}"
            ) from exc
        except UnexpectedResponse as exc:
            if exc.status_code in (401, 403):
                raise VectorStoreError(
                    f"The Qdrant server at {self.url} rejected the request (HTTP {exc.status_code}); check QDRANT_API_KEY."
                ) from exc
            if exc.status_code in (502, 503, 504) or (exc.status_code or 0) >= 500:
                raise VectorStoreUnavailable(
                    f"The Qdrant server at {self.url} (QDRANT_URL) failed: HTTP {exc.status_code} {exc.content!r:.300}"
                ) from exc
            raise VectorStoreError(f"Qdrant rejected the request: HTTP {exc.status_code} {exc.content!r:.300}") from exc
        except (ValueError, RuntimeError) as exc:  # local mode reports its errors as these
            raise VectorStoreError(f"Qdrant local mode: {exc}") from exc

    @staticmethod
    def _is_missing(exc: BaseException) -> bool:
        cause = exc.__cause__
        if isinstance(cause, UnexpectedResponse):
            return cause.status_code == 404
        return "not found" in str(cause or exc).lower()

    # collection metadata ----------------------------------------------------------------------

    def _read_collection(self) -> tuple[int, dict, int] | None:
        """(dimension, recorded metadata, points) of the collection, or None when it does not exist."""
        if not self._call(self.client.collection_exists, self.collection):
            return None
        info = self._call(self.client.get_collection, self.collection)
        params = info.config.params.vectors
        if isinstance(params, dict):  # named vectors: we only ever create the unnamed one
            params = params.get("") or next(iter(params.values()))
        metadata = (getattr(info.config, "metadata", None) or {}).get(META_KEY) or {}
        self._known_dimension = int(params.size)
        self._payload_schema = set((info.payload_schema or {}).keys())
        return int(params.size), metadata, int(info.points_count or 0)

    def _create(self, *, dimension: int, model_id: str) -> None:
        try:
            self._call(
                self.client.create_collection,
                self.collection,
                vectors_config=qm.VectorParams(size=dimension, distance=qm.Distance.COSINE),
                metadata={META_KEY: {"model_id": model_id, "dimension": dimension}},
            )
        except VectorStoreError as exc:
            # Another process (API and worker start together) may have created it first.
            if not (isinstance(exc.__cause__, UnexpectedResponse) and exc.__cause__.status_code == 409):
                raise
        self._known_dimension = dimension
        self._payload_schema = set()
        self._create_indexes()

    def _create_indexes(self) -> None:
        if self.engine != "server":
            return  # local mode keeps no payload indexes (and warns on each one)
        wanted = [(name, qm.PayloadSchemaType.INTEGER) for name in INTEGER_INDEXES]
        wanted += [(name, qm.PayloadSchemaType.KEYWORD) for name in KEYWORD_INDEXES]
        for name, schema in wanted:
            if name not in self._payload_schema:
                self._call(self.client.create_payload_index, self.collection, name, field_schema=schema, wait=True)

    def _ensure(self, *, dimension: int, model_id: str) -> None:
        found = self._read_collection()
        if found is None:
            self._create(dimension=dimension, model_id=model_id)
            return
        have_dimension, meta, points = found
        have_model = meta.get("model_id")
        if have_dimension != dimension or (have_model is not None and have_model != model_id):
            raise VectorStoreMismatch(
                mismatch_message(
                    where=f"{self.collection!r} at {self.where}",
                    have_dimension=have_dimension,
                    have_model=have_model,
                    dimension=dimension,
                    model_id=model_id,
                )
            )
        if have_model is None:
            # A server older than 1.16 drops collection metadata; the dimension still matched.
            logger.warning(
                "Qdrant collection %r records no embedding model (%d points); only its dimension was checked",
                self.collection,
                points,
            )
        self._create_indexes()

    def _recreate(self, *, dimension: int, model_id: str) -> None:
        if self._call(self.client.collection_exists, self.collection):
            self._call(self.client.delete_collection, self.collection)
        self._known_dimension = None
        self._create(dimension=dimension, model_id=model_id)

    def _stored_dimension(self) -> int | None:
        if self._known_dimension is None:
            self._read_collection()
        return self._known_dimension

    # points -----------------------------------------------------------------------------------

    def _upsert(self, points: list[tuple[str, list[float], dict]]) -> None:
        for start in range(0, len(points), UPSERT_BATCH):
            batch = [
                qm.PointStruct(id=pid, vector=vector, payload=payload)
                for pid, vector, payload in points[start : start + UPSERT_BATCH]
            ]
            self._call(self.client.upsert, self.collection, points=batch, wait=True)

    def _delete_ids(self, ids: list[str]) -> None:
        for start in range(0, len(ids), DELETE_BATCH):
            selector = qm.PointIdsList(points=ids[start : start + DELETE_BATCH])
            try:
                self._call(self.client.delete, self.collection, points_selector=selector, wait=True)
            except VectorStoreError as exc:
                if self._is_missing(exc):
                    return  # no collection, so the points are gone already
                raise

    def _delete_where(self, conditions: Conditions) -> None:
        selector = qm.FilterSelector(filter=qdrant_filter(conditions))
        try:
            self._call(self.client.delete, self.collection, points_selector=selector, wait=True)
        except VectorStoreError as exc:
            if not self._is_missing(exc):
                raise

    def _search(
        self, vector: list[float], *, limit: int, conditions: Conditions, payload_fields: list[str] | None
    ) -> list[VectorHit]:
        try:
            response = self._call(
                self.client.query_points,
                self.collection,
                query=vector,
                query_filter=qdrant_filter(conditions),
                limit=limit,
                with_payload=True if payload_fields is None else (payload_fields or False),
                with_vectors=False,
            )
        except VectorStoreError as exc:
            if self._is_missing(exc):
                self._known_dimension = None
                return []
            raise
        return [
            VectorHit(id=str(p.id), score=float(p.score), payload=public_payload(p.payload)) for p in response.points
        ]

    def _count(self) -> int:
        try:
            return int(self._call(self.client.count, self.collection, exact=True).count)
        except VectorStoreError as exc:
            if self._is_missing(exc):
                return 0
            raise

    def _scroll_ids(self, *, offset: Any, limit: int) -> tuple[list[str], Any]:
        try:
            records, next_offset = self._call(
                self.client.scroll, self.collection, limit=limit, offset=offset, with_payload=False, with_vectors=False
            )
        except VectorStoreError as exc:
            if self._is_missing(exc):
                return [], None
            raise
        return [str(r.id) for r in records], next_offset

    def _health(self) -> dict:
        found = self._read_collection()
        report: dict[str, Any] = {"url": self.url} if self.engine == "server" else {"path": self.where}
        if found is None:
            return {**report, "exists": False, "points": 0, "dimension": None, "model_id": None}
        dimension, meta, points = found
        return {**report, "exists": True, "points": points, "dimension": dimension, "model_id": meta.get("model_id")}

    def _close(self) -> None:
        try:
            self.client.close()
        finally:
            if self._owner is not None:
                self._owner.release()
