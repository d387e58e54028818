"""The one package that talks to Qdrant: a small vector-store interface (``base``) over three engines.

- ``QDRANT_URL`` set: a Qdrant server through qdrant-client (``qdrant``; many processes may share it).
- ``QDRANT_URL`` unset: an embedded store on disk under ``QDRANT_PATH``, owned by one process.
  ``QDRANT_LOCAL_ENGINE`` picks the embedded engine: ``edge`` (qdrant-edge-py, the Qdrant engine
  in-process: SIMD scoring, payload indexes, optional HNSW built by ``edge_index`` in a child
  process) or ``client`` (qdrant-client's local mode: pure Python, brute force, payload filters
  evaluated point by point). ``edge`` is the default because it measured 10-100x faster
  (bench/results/vectorstore.md).

This module is the factory (the implementations import only ``base``, and are imported here
only when opened, so a process pays for the engine it uses); it re-exports ``base``'s interface.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from vectors.stores.base import (
    DEFAULT_LOCAL_ENGINE,
    ENGINES,
    PAYLOAD_MAX_DEPTH,
    PAYLOAD_MAX_NODES,
    PAYLOAD_MAX_STRING,
    REINDEX_HINT,
    Conditions,
    PointRefused,
    VectorHit,
    VectorPoint,
    VectorStore,
    VectorStoreError,
    VectorStoreMismatch,
    VectorStoreUnavailable,
    bounded_payload,
    build_conditions,
)

__all__ = [
    "PAYLOAD_MAX_DEPTH",
    "PAYLOAD_MAX_NODES",
    "PAYLOAD_MAX_STRING",
    "REINDEX_HINT",
    "Conditions",
    "PointRefused",
    "VectorHit",
    "VectorPoint",
    "VectorStore",
    "VectorStoreError",
    "VectorStoreMismatch",
    "VectorStoreUnavailable",
    "bounded_payload",
    "build_conditions",
    "get_vector_store",
    "vector_store_open",
    "vector_store_reset",
]


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
        from vectors.stores.qdrant import QdrantClientStore

        return QdrantClientStore(collection=collection, url=url, api_key=api_key, timeout=timeout)
    if path is None:
        raise VectorStoreError("an embedded vector store needs a path (QDRANT_PATH) when QDRANT_URL is unset")
    if engine == "edge":
        from vectors.stores.edge import EdgeStore

        return EdgeStore(collection=collection, path=Path(path), index_threshold=index_threshold, index_idle=index_idle)
    if engine == "client":
        from vectors.stores.qdrant import QdrantClientStore

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

    setting_changed.connect(_on_setting_changed, dispatch_uid="vectors.stores.reset")
    # Flushes the edge shard and releases the owner lock on a clean exit; a crash is covered by
    # the engine's write-ahead log and the kernel dropping the flock.
    atexit.register(vector_store_reset)


_connect_signals()
