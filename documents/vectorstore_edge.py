"""qdrant-edge engine: the Qdrant search engine in-process, on disk under ``QDRANT_PATH/edge``.

Layout: ``edge/<collection>/`` is the shard (segments, write-ahead log, edge_config.json) and
``edge/<collection>.json`` the sidecar recording the embedding model and dimension (a shard has
no collection metadata). The sidecar is written after the shard is complete, so a crash during
creation leaves a shard without a sidecar, which ensure_collection() adopts if it is empty.

Behaviour worth knowing (qdrant-edge-py 0.9, measured in bench/results/vectorstore.md):
- Every update goes to the write-ahead log before update() returns, so a killed process loses
  nothing; flush() writes segments and lets the log be truncated. We flush at most every
  FLUSH_INTERVAL seconds of writes and on close, which bounds log replay at the next start.
- New points land in an appendable segment scored by brute force (SIMD; ~9 ms a query at 100k
  points, ~1 ms when a source/document filter narrows the candidates through a payload index).
  HNSW is built only by optimize(), which is CPU-heavy (minutes at 100k on two cores) and holds
  the GIL throughout, freezing every other thread of the process; so it never runs implicitly.
  Call it from an offline command (e.g. after ``vectors_reindex``) when the speed-up is wanted.
- Calls into the engine hold the GIL too; the store's lock serialises them, which costs nothing
  extra and keeps close()/recreate() from racing a query.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from qdrant_edge import (
    CountRequest,
    Distance,
    EdgeConfig,
    EdgeShard,
    EdgeVectorParams,
    FieldCondition,
    Filter,
    MatchAny,
    PayloadSchemaType,
    Point,
    Query,
    QueryRequest,
    ScrollRequest,
    UpdateOperation,
)

from documents.vectorstore import (
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

FLUSH_INTERVAL = 5.0  # seconds; the WAL already makes each update survive a crash
UPDATE_BATCH = 1000
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def edge_filter(conditions: Conditions) -> Filter | None:
    if conditions.empty:
        return None
    must: list[Any] = []
    if conditions.source_ids is not None:
        must.append(FieldCondition("source_id", match=MatchAny(list(conditions.source_ids))))
    if conditions.document_ids is not None:
        must.append(FieldCondition("document_id", match=MatchAny(list(conditions.document_ids))))
    for group in conditions.term_groups:
        must.append(FieldCondition("metadata_terms", match=MatchAny(list(group))))
    return Filter(must=must)


class EdgeStore(VectorStore):
    engine = "edge"

    def __init__(self, *, collection: str, path: Path) -> None:
        super().__init__(collection=collection)
        if not _NAME.match(collection) or collection in (".", ".."):
            raise VectorStoreError(
                f"QDRANT_COLLECTION {collection!r} is not a valid directory name for the edge engine"
            )
        self.root = path
        self.shard_dir = path / "edge" / collection
        self.sidecar = path / "edge" / f"{collection}.json"
        self._owner = OwnerLock(path, engine=self.engine)
        self._shard: EdgeShard | None = None
        self._meta: dict | None = None
        self._last_flush = time.monotonic()
        try:
            if (self.shard_dir / "edge_config.json").exists():
                self._shard = self._edge(EdgeShard.load, str(self.shard_dir))
            self._meta = self._read_sidecar()
        except BaseException:
            self._owner.release()
            raise

    # engine plumbing --------------------------------------------------------------------------

    def _edge(self, fn, *args):
        try:
            return fn(*args)
        except Exception as exc:
            if "WouldBlock" in str(exc):  # the shard's own WAL lock: opened without our owner lock
                raise VectorStoreUnavailable(
                    f"The local vector store at {self.root} is in use by another process. Stop it, or run a "
                    "Qdrant server and set QDRANT_URL so several processes can share it."
                ) from exc
            raise VectorStoreError(f"qdrant-edge failed on {self.shard_dir}: {exc}") from exc

    def _read_sidecar(self) -> dict | None:
        try:
            data = json.loads(self.sidecar.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise VectorStoreError(f"unreadable vector store metadata {self.sidecar}: {exc}") from exc
        return data if isinstance(data, dict) else None

    def _write_sidecar(self, meta: dict) -> None:
        tmp = self.sidecar.with_suffix(".json.tmp")
        with open(tmp, "w") as fh:
            json.dump(meta, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.sidecar)  # atomic: readers see the old or the new file, never half
        self._meta = meta

    def _maybe_flush(self, *, force: bool = False) -> None:
        if self._shard is not None and (force or time.monotonic() - self._last_flush >= FLUSH_INTERVAL):
            self._edge(self._shard.flush)
            self._last_flush = time.monotonic()

    # collection -------------------------------------------------------------------------------

    def _create(self, *, dimension: int, model_id: str) -> None:
        if self.shard_dir.exists():  # leftovers of a creation that never finished
            shutil.rmtree(self.shard_dir)
        self.shard_dir.mkdir(parents=True)
        config = EdgeConfig(vectors=EdgeVectorParams(size=dimension, distance=Distance.Cosine))
        self._shard = self._edge(EdgeShard.create, str(self.shard_dir), config)
        self._create_indexes()
        self._maybe_flush(force=True)
        self._write_sidecar({"model_id": model_id, "dimension": dimension, "created_at": time.time()})

    def _create_indexes(self) -> None:
        assert self._shard is not None
        have = set(self._edge(self._shard.info).payload_schema)
        for name in INTEGER_INDEXES:
            if name not in have:
                self._edge(self._shard.update, UpdateOperation.create_field_index(name, PayloadSchemaType.Integer))
        for name in KEYWORD_INDEXES:
            if name not in have:
                self._edge(self._shard.update, UpdateOperation.create_field_index(name, PayloadSchemaType.Keyword))

    def _ensure(self, *, dimension: int, model_id: str) -> None:
        if self._shard is None:
            self._create(dimension=dimension, model_id=model_id)
            return
        meta = self._meta
        if meta is None:
            if self._count() == 0:  # an interrupted creation: adopt the empty shard
                self._create_indexes()
                self._write_sidecar({"model_id": model_id, "dimension": dimension, "created_at": time.time()})
                return
            meta = {}
        if meta.get("dimension") != dimension or meta.get("model_id") != model_id:
            raise VectorStoreMismatch(
                mismatch_message(
                    where=f"at {self.shard_dir}",
                    have_dimension=meta.get("dimension"),
                    have_model=meta.get("model_id"),
                    dimension=dimension,
                    model_id=model_id,
                )
            )
        self._create_indexes()  # a shard made by an older version may lack one

    def _recreate(self, *, dimension: int, model_id: str) -> None:
        self._drop_shard()
        self._create(dimension=dimension, model_id=model_id)

    def _drop_shard(self) -> None:
        if self._shard is not None:
            with contextlib.suppress(Exception):
                self._shard.close()
            self._shard = None
        with contextlib.suppress(FileNotFoundError):
            self.sidecar.unlink()  # first, so a crash mid-way leaves no claim about the old model
        self._meta = None
        if self.shard_dir.exists():
            shutil.rmtree(self.shard_dir)

    def _stored_dimension(self) -> int | None:
        if self._shard is None or not self._meta:
            return None
        return int(self._meta["dimension"])

    # points -----------------------------------------------------------------------------------

    def _require_shard(self) -> EdgeShard:
        if self._shard is None:
            raise VectorStoreError("the edge shard does not exist yet; call ensure_collection()")
        return self._shard

    def _upsert(self, points: list[tuple[str, list[float], dict]]) -> None:
        shard = self._require_shard()
        for start in range(0, len(points), UPDATE_BATCH):
            batch = [Point(pid, vector, payload) for pid, vector, payload in points[start : start + UPDATE_BATCH]]
            self._edge(shard.update, UpdateOperation.upsert_points(batch))
        self._maybe_flush()

    def _delete_ids(self, ids: list[str]) -> None:
        if self._shard is None:
            return
        for start in range(0, len(ids), UPDATE_BATCH):
            self._edge(self._shard.update, UpdateOperation.delete_points(ids[start : start + UPDATE_BATCH]))
        self._maybe_flush()

    def _delete_where(self, conditions: Conditions) -> None:
        if self._shard is None:
            return
        self._edge(self._shard.update, UpdateOperation.delete_points_by_filter(edge_filter(conditions)))
        self._maybe_flush()

    def _search(self, vector: list[float], *, limit: int, conditions: Conditions) -> list[VectorHit]:
        if self._shard is None:
            return []
        request = QueryRequest(
            limit=limit,
            query=Query.Nearest(vector),
            filter=edge_filter(conditions),
            with_payload=True,
            with_vector=False,
        )
        points = self._edge(self._shard.query, request)
        return [VectorHit(id=str(p.id), score=float(p.score), payload=public_payload(p.payload)) for p in points]

    def _count(self) -> int:
        if self._shard is None:
            return 0
        return int(self._edge(self._shard.count, CountRequest(exact=True)))

    def _scroll_ids(self, *, offset: Any, limit: int) -> tuple[list[str], Any]:
        if self._shard is None:
            return [], None
        request = ScrollRequest(offset=offset, limit=limit, with_payload=False, with_vector=False)
        records, next_offset = self._edge(self._shard.scroll, request)
        return [str(r.id) for r in records], next_offset

    def _health(self) -> dict:
        report: dict[str, Any] = {"path": str(self.shard_dir)}
        if self._shard is None:
            return {**report, "exists": False, "points": 0, "dimension": None, "model_id": None}
        info = self._edge(self._shard.info)
        meta = self._meta or {}
        return {
            **report,
            "exists": True,
            "points": self._count(),
            "dimension": meta.get("dimension"),
            "model_id": meta.get("model_id"),
            "segments": int(info.segments_count),
            "indexed_vectors": int(info.indexed_vectors_count),
        }

    def optimize(self, *, min_unindexed: int = 0) -> bool:
        """Vacuum deletions and build HNSW for large segments. Blocks the whole process (GIL) meanwhile."""
        with self._lock:
            self._check_open()
            if self._shard is None:
                return False
            info = self._edge(self._shard.info)
            if min_unindexed and info.points_count - info.indexed_vectors_count < min_unindexed:
                return False
            changed = bool(self._edge(self._shard.optimize))
            self._maybe_flush(force=True)
            return changed

    def _close(self) -> None:
        try:
            if self._shard is not None:
                try:
                    self._maybe_flush(force=True)
                finally:
                    self._shard.close()
                    self._shard = None
        finally:
            self._owner.release()
