"""The one module that talks to Qdrant: a small vector-store interface over three engines.

- ``QDRANT_URL`` set: a Qdrant server through qdrant-client (many processes may share it).
- ``QDRANT_URL`` unset: an embedded store on disk under ``QDRANT_PATH``, owned by one process.
  ``QDRANT_LOCAL_ENGINE`` picks the embedded engine: ``edge`` (qdrant-edge-py, the Qdrant engine
  in-process: SIMD scoring, payload indexes, optional HNSW) or ``client`` (qdrant-client's local
  mode: pure Python, brute force, payload filters evaluated point by point). ``edge`` is the
  default because it measured 10-100x faster (bench/results/vectorstore.md).

Every engine stores the same payload, so filters mean the same everywhere. Besides the payload the
caller gives (document_id, source_id, source, title, url, ordinal, metadata), each point carries
``metadata_terms``: the document metadata flattened to ``"key=value"`` strings with a keyword
index, so a metadata filter is an indexed lookup instead of a scan of every payload. Values are
compared as strings: ints in decimal, booleans as ``true``/``false``, integral floats as ints
(``3.0`` -> ``"3"``), lists match any element, nested dicts as ``parent.child``. Callers never see
``metadata_terms``; it is removed from search hits.
"""

from __future__ import annotations

import abc
import contextlib
import json
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

ENGINES = ("edge", "client")
DEFAULT_LOCAL_ENGINE = "edge"
TERMS_KEY = "metadata_terms"
# Fields with a payload index (where the engine has them): filters on these skip the payload scan.
INTEGER_INDEXES = ("document_id", "source_id")
KEYWORD_INDEXES = (TERMS_KEY,)
REINDEX_HINT = "Run `manage.py vectors_reindex --recreate` to rebuild the collection for the current embedder."

_MAX_TERM_CHARS = 256  # longer values (free text) are not useful as exact-match filters
_MAX_TERMS = 256
_MAX_DEPTH = 3
# Every payload is copied within these bounds before it reaches an engine, whatever the database
# holds: qdrant-edge accepts a payload nested ~125 levels deep into its write-ahead log and then
# cannot read it back (serde's recursion limit), which broke every search and every later write
# of the collection. Search reads only document_id and the flattened metadata_terms (depth
# _MAX_DEPTH), so nothing a filter needs is lost.
PAYLOAD_MAX_DEPTH = 10  # containers nested in a payload (the metadata object is the first)
PAYLOAD_MAX_NODES = 4096  # values in one payload
PAYLOAD_MAX_STRING = 8192  # characters in one string (titles are 1,000, URLs 2,000)


class VectorStoreError(Exception):
    """Anything the vector store could not do."""


class VectorStoreUnavailable(VectorStoreError):
    """Try again later: the server is down, or the embedded store is owned by another process."""


class VectorStoreMismatch(VectorStoreError):
    """The collection was built for another embedding model or dimension."""


class PointRefused(VectorStoreError, ValueError):
    """One point cannot be stored (a zero or non-finite vector, an id that is not a UUID)."""


@dataclass(frozen=True, slots=True)
class VectorPoint:
    id: str  # the chunk's UUID
    vector: np.ndarray | list[float]
    payload: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class VectorHit:
    id: str
    score: float
    payload: dict


@dataclass(frozen=True, slots=True)
class Conditions:
    """Engine-neutral filter: every present part must match (AND); lists inside are any-of."""

    source_ids: tuple[int, ...] | None = None
    document_ids: tuple[int, ...] | None = None
    term_groups: tuple[tuple[str, ...], ...] = ()  # each group: any-of metadata terms

    @property
    def empty(self) -> bool:
        return self.source_ids is None and self.document_ids is None and not self.term_groups


# --- payload helpers ---------------------------------------------------------------------------


def metadata_value_term(value: Any) -> str | None:
    """The string a metadata value is matched as, or None when it is not filterable."""
    if isinstance(value, bool):  # before int: bool is an int
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        return value if len(value) <= _MAX_TERM_CHARS else None
    return None


def metadata_terms(metadata: Any) -> list[str]:
    """Flatten a metadata dict into ``key=value`` strings (see the module docstring)."""
    terms: list[str] = []

    def walk(prefix: str, value: Any, depth: int) -> None:
        if len(terms) >= _MAX_TERMS:
            return
        if isinstance(value, dict):
            if depth >= _MAX_DEPTH:
                return
            for key, sub in value.items():
                key = str(key)
                if "=" in key or not key:  # "=" would make the term ambiguous
                    continue
                walk(f"{prefix}.{key}" if prefix else key, sub, depth + 1)
        elif isinstance(value, list | tuple):
            for item in value:
                if not isinstance(item, dict | list | tuple):
                    walk(prefix, item, depth)
        else:
            term = metadata_value_term(value)
            if term is not None and prefix:
                terms.append(f"{prefix}={term}")

    if isinstance(metadata, dict):
        walk("", metadata, 0)
    return list(dict.fromkeys(terms))


def build_conditions(
    *,
    source_ids: Iterable[int] | None = None,
    document_ids: Iterable[int] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Conditions:
    groups: list[tuple[str, ...]] = []
    for key, wanted in (metadata or {}).items():
        values = wanted if isinstance(wanted, list | tuple | set) else [wanted]
        group = tuple(dict.fromkeys(f"{key}={t}" for t in map(metadata_value_term, values) if t is not None))
        groups.append(group)  # an empty group matches nothing, like an unmatchable value should
    return Conditions(
        source_ids=None if source_ids is None else tuple(int(i) for i in source_ids),
        document_ids=None if document_ids is None else tuple(int(i) for i in document_ids),
        term_groups=tuple(groups),
    )


def point_id(value: Any) -> str:
    """Canonical text form of a point id (Qdrant accepts UUIDs; chunks use them)."""
    try:
        return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))
    except ValueError:
        raise ValueError(f"vector point ids must be UUIDs, got {value!r}") from None


def as_vector(vector: Any, dimension: int | None) -> list[float]:
    array = np.asarray(vector, dtype=np.float32)
    if array.ndim != 1:
        raise ValueError(f"a vector must be one-dimensional, got shape {array.shape}")
    if dimension is not None and array.shape[0] != dimension:
        raise VectorStoreMismatch(
            f"got a {array.shape[0]}-dimensional vector but the collection holds {dimension} dimensions. "
            + REINDEX_HINT
        )
    if not np.all(np.isfinite(array)) or not np.any(array):
        # A zero or NaN vector has no cosine direction; storing one would be a silent placeholder.
        raise ValueError("refusing to store or search a zero or non-finite vector")
    return array.tolist()


def bounded_payload(payload: dict) -> dict:
    """A copy of ``payload`` within PAYLOAD_MAX_DEPTH/NODES/STRING that every engine can store.

    Deeper containers, values past the node budget and non-finite floats are left out; strings
    are cut and lone surrogates (not encodable as UTF-8) replaced. Plain payloads come back equal.
    """
    budget = [PAYLOAD_MAX_NODES]

    def copy(value: Any, depth: int) -> tuple[bool, Any]:
        if budget[0] <= 0:
            return False, None
        budget[0] -= 1
        if value is None or isinstance(value, bool | int):
            return True, value
        if isinstance(value, float):
            return (True, value) if math.isfinite(value) else (False, None)
        if isinstance(value, str):
            return True, _clean_string(value)
        if isinstance(value, dict | list | tuple):
            if depth >= PAYLOAD_MAX_DEPTH:
                return False, None
            if isinstance(value, dict):
                out: dict = {}
                for key, sub in value.items():
                    keep, sub = copy(sub, depth + 1)
                    if keep:
                        out[_clean_string(str(key))] = sub
                return True, out
            items = []
            for sub in value:
                keep, sub = copy(sub, depth + 1)
                if keep:
                    items.append(sub)
            return True, items
        return True, _clean_string(str(value))

    return copy(dict(payload), -1)[1]


def _clean_string(value: str) -> str:
    value = value[:PAYLOAD_MAX_STRING]
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def prepare_payload(payload: dict) -> dict:
    out = bounded_payload(payload)
    out[TERMS_KEY] = metadata_terms(out.get("metadata"))
    return out


def public_payload(payload: dict | None) -> dict:
    out = dict(payload or {})
    out.pop(TERMS_KEY, None)
    return out


def mismatch_message(
    *, where: str, have_dimension: int | None, have_model: str | None, dimension: int, model_id: str
) -> str:
    return (
        f"The vector collection {where} was built for model {have_model or 'unknown'!r} with "
        f"{have_dimension if have_dimension is not None else 'unknown'} dimensions, but the embedder is "
        f"{model_id!r} with {dimension} dimensions. {REINDEX_HINT}"
    )


# --- single-owner lock for embedded stores ----------------------------------------------------------


class OwnerLock:
    """An exclusive, non-blocking flock on ``<QDRANT_PATH>/owner.lock`` naming the owner's pid.

    Both embedded engines allow one process per store; this lock turns the second process's
    failure into a message that says who holds the store and what to do. The kernel drops the
    lock when the owner dies, so a crash never leaves a stale lock behind.
    """

    def __init__(self, directory: Path, *, engine: str) -> None:
        import fcntl

        self.path = directory / "owner.lock"
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise VectorStoreUnavailable(self._busy_message(directory)) from None
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "engine": engine, "since": time.time()}).encode())
        self._fd: int | None = fd

    def _busy_message(self, directory: Path) -> str:
        try:
            pid = json.loads(self.path.read_text() or "{}").get("pid", "unknown")
        except (OSError, ValueError):
            pid = "unknown"
        return (
            f"The local vector store at {directory} is in use by another process (pid {pid}). "
            "Stop it, or run a Qdrant server and set QDRANT_URL so several processes can share it."
        )

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # closing the only descriptor releases the flock
            self._fd = None


# --- the interface ------------------------------------------------------------------------------


class VectorStore(abc.ABC):
    """One collection of chunk vectors. Thread-safe: every engine call runs under one lock."""

    engine: str = ""

    def __init__(self, *, collection: str) -> None:
        self.collection = collection
        # Embedded engines are not safe for concurrent use (qdrant-client local mode mutates
        # dicts and a SQLite connection; the edge shard is closed and replaced by recreate()),
        # and the web process calls us from request threads and the task-worker thread.
        self._lock = threading.RLock()
        self._dimension: int | None = None  # set once ensure_collection() verified the collection
        self._model_id: str | None = None
        self._closed = False
        self.pid = os.getpid()

    # public API -------------------------------------------------------------------------------

    def ensure_collection(self, *, dimension: int, model_id: str) -> None:
        """Create the collection on first use; raise VectorStoreMismatch if it was built for another model."""
        if dimension <= 0:
            raise ValueError("dimension must be positive")
        with self._lock:
            self._check_open()
            if self._dimension == dimension and self._model_id == model_id:
                return
            self._ensure(dimension=dimension, model_id=model_id)
            self._dimension, self._model_id = dimension, model_id

    def recreate(self, *, dimension: int, model_id: str) -> None:
        """Drop every point and create the collection anew for this model."""
        if dimension <= 0:
            raise ValueError("dimension must be positive")
        with self._lock:
            self._check_open()
            self._dimension = self._model_id = None
            self._recreate(dimension=dimension, model_id=model_id)
            self._dimension, self._model_id = dimension, model_id

    def upsert(self, points: Sequence[VectorPoint]) -> None:
        if not points:
            return
        with self._lock:
            self._check_open()
            if self._dimension is None:
                raise VectorStoreError("call ensure_collection() before upsert() so the model is checked")
            prepared = [self._prepare(p) for p in points]
            self._upsert(prepared)

    def _prepare(self, point: VectorPoint) -> tuple[str, list[float], dict]:
        # A refused point is a VectorStoreError like an engine's refusal, so the sync fails that
        # chunk alone instead of the whole run (VectorStoreMismatch, a wrong dimension, stays itself).
        try:
            return point_id(point.id), as_vector(point.vector, self._dimension), prepare_payload(point.payload or {})
        except VectorStoreError:
            raise
        except (ValueError, TypeError) as exc:
            raise PointRefused(f"point {point.id} refused: {exc}") from exc

    def delete(self, ids: Iterable[str]) -> None:
        wanted = list(dict.fromkeys(point_id(i) for i in ids))
        if not wanted:
            return
        with self._lock:
            self._check_open()
            self._delete_ids(wanted)

    def delete_where(self, *, document_id: int | None = None, source_id: int | None = None) -> None:
        if document_id is None and source_id is None:
            raise ValueError("delete_where() needs document_id or source_id; use recreate() to drop everything")
        conditions = build_conditions(
            document_ids=None if document_id is None else [document_id],
            source_ids=None if source_id is None else [source_id],
        )
        with self._lock:
            self._check_open()
            self._delete_where(conditions)

    def search(
        self,
        vector: Any,
        *,
        limit: int,
        source_ids: Iterable[int] | None = None,
        document_ids: Iterable[int] | None = None,
        metadata: dict[str, Any] | None = None,
        payload_fields: Sequence[str] | None = None,
    ) -> list[VectorHit]:
        """Nearest points by cosine similarity, best first. An empty id list matches nothing.

        ``payload_fields`` limits the payload returned to those keys (None: all of it; empty: no
        payload). At depth 200 and 100k points, embedded: every field 3.95 ms p50, only
        ``document_id`` 2.53 ms, no payload 1.46 ms (bench/results/search_scale.md); search asks
        only for ``document_id``.
        """
        conditions = build_conditions(source_ids=source_ids, document_ids=document_ids, metadata=metadata)
        if limit <= 0 or conditions.source_ids == () or conditions.document_ids == ():
            return []
        if any(not group for group in conditions.term_groups):
            return []
        with self._lock:
            self._check_open()
            dimension = self._dimension if self._dimension is not None else self._stored_dimension()
            if dimension is None:
                return []  # no collection yet: nothing has been indexed
            query = as_vector(vector, dimension)
            fields = None if payload_fields is None else [str(f) for f in payload_fields if f != TERMS_KEY]
            return self._search(query, limit=int(limit), conditions=conditions, payload_fields=fields)

    def count(self) -> int:
        with self._lock:
            self._check_open()
            return self._count()

    def iter_ids(self, batch_size: int = 1000) -> Iterator[list[str]]:
        """Every point id, in pages. The lock is held per page, never across a yield."""
        offset: Any = None
        while True:
            with self._lock:
                self._check_open()
                ids, offset = self._scroll_ids(offset=offset, limit=max(1, int(batch_size)))
            if ids:
                yield ids
            if offset is None:
                return

    def health(self) -> dict:
        """Engine, point count and recorded model; raises VectorStoreError when the store does not answer."""
        with self._lock:
            self._check_open()
            return {"engine": self.engine, "collection": self.collection, **self._health()}

    def optimize(self, *, min_unindexed: int = 0) -> bool:
        """Build search indexes now and wait; True if anything changed.

        Only the edge engine needs this (a server optimizes in the background, local mode has no
        index; edge also builds in the background by itself, see vectorstore_edge). It takes
        minutes at 100k points; ``min_unindexed`` skips it while fewer points than that still
        lack the HNSW index.
        """
        return False

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise VectorStoreError("the vector store is closed")

    # engine hooks -----------------------------------------------------------------------------

    @abc.abstractmethod
    def _ensure(self, *, dimension: int, model_id: str) -> None: ...

    @abc.abstractmethod
    def _recreate(self, *, dimension: int, model_id: str) -> None: ...

    @abc.abstractmethod
    def _stored_dimension(self) -> int | None:
        """The existing collection's dimension (cached by the engine), or None when there is none."""

    @abc.abstractmethod
    def _upsert(self, points: list[tuple[str, list[float], dict]]) -> None: ...

    @abc.abstractmethod
    def _delete_ids(self, ids: list[str]) -> None: ...

    @abc.abstractmethod
    def _delete_where(self, conditions: Conditions) -> None: ...

    @abc.abstractmethod
    def _search(
        self, vector: list[float], *, limit: int, conditions: Conditions, payload_fields: list[str] | None
    ) -> list[VectorHit]: ...

    @abc.abstractmethod
    def _count(self) -> int: ...

    @abc.abstractmethod
    def _scroll_ids(self, *, offset: Any, limit: int) -> tuple[list[str], Any]: ...

    @abc.abstractmethod
    def _health(self) -> dict: ...

    @abc.abstractmethod
    def _close(self) -> None: ...


# --- construction -------------------------------------------------------------------------------


def vector_store_open(
    *,
    collection: str,
    url: str = "",
    api_key: str = "",
    timeout: int = 10,
    path: Path | str | None = None,
    engine: str = DEFAULT_LOCAL_ENGINE,
    index_threshold: int = 0,
    index_idle: float = 30.0,
) -> VectorStore:
    """Open a store explicitly (tests, benchmarks); the application uses get_vector_store().

    ``index_threshold``/``index_idle`` (edge only): build the HNSW index in the background once
    that many points lack it and no write came for that many seconds; 0 = only on request.
    """
    if url:
        from documents.vectorstore_qdrant import QdrantClientStore

        return QdrantClientStore(collection=collection, url=url, api_key=api_key, timeout=timeout)
    if path is None:
        raise VectorStoreError("an embedded vector store needs a path (QDRANT_PATH) when QDRANT_URL is unset")
    if engine == "edge":
        from documents.vectorstore_edge import EdgeStore

        return EdgeStore(collection=collection, path=Path(path), index_threshold=index_threshold, index_idle=index_idle)
    if engine == "client":
        from documents.vectorstore_qdrant import QdrantClientStore

        return QdrantClientStore(collection=collection, path=Path(path))
    raise VectorStoreError(f"QDRANT_LOCAL_ENGINE must be one of {', '.join(ENGINES)}, got {engine!r}")


def _open_from_settings() -> VectorStore:
    from django.conf import settings

    return vector_store_open(
        collection=settings.QDRANT_COLLECTION,
        url=settings.QDRANT_URL,
        api_key=settings.QDRANT_API_KEY,
        timeout=settings.QDRANT_TIMEOUT,
        path=settings.QDRANT_PATH,
        engine=settings.QDRANT_LOCAL_ENGINE,
        index_threshold=settings.QDRANT_EDGE_INDEX_THRESHOLD,
        index_idle=settings.QDRANT_EDGE_INDEX_IDLE,
    )


_store: VectorStore | None = None
_store_lock = threading.Lock()


def get_vector_store() -> VectorStore:
    """The process-wide store, opened on first use. A failed open is retried on the next call."""
    global _store
    with _store_lock:
        if _store is not None and _store.pid != os.getpid():
            # Opened before a fork: the embedded engine's files and lock belong to the parent, so
            # the child must not use (or close) them. Open anew; an embedded store then reports
            # that the parent owns it.
            _store = None
        if _store is None or _store.closed:
            _store = _open_from_settings()
        return _store


def vector_store_reset() -> None:
    """Close the process-wide store; the next get_vector_store() opens it from settings again."""
    global _store
    with _store_lock:
        store, _store = _store, None
    if store is not None and store.pid == os.getpid():
        store.close()


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith("QDRANT_") or setting == "DATA_DIR":
        vector_store_reset()


def _connect_signals() -> None:
    import atexit

    from django.core.signals import setting_changed

    setting_changed.connect(_on_setting_changed, dispatch_uid="documents.vectorstore.reset")
    # Flushes the edge shard and releases the owner lock on a clean exit; a crash is covered by
    # the engine's write-ahead log and the kernel dropping the flock.
    atexit.register(vector_store_reset)


_connect_signals()
