"""Readiness checks for the vector store and the embedder (/ready)."""

from __future__ import annotations

import time

from ragsite.health import register_readiness_check
from vectors.embedders import get_embedder
from vectors.stores import get_vector_store

_EMBEDDER_OK_FOR = 300.0  # seconds: a remote embedder is not called on every probe
_embedder_ok_at = 0.0


def check_vector_store() -> dict:
    return get_vector_store().health()


def check_embedder() -> dict:
    global _embedder_ok_at
    embedder = get_embedder()
    now = time.monotonic()
    if now - _embedder_ok_at > _EMBEDDER_OK_FOR:
        vector = embedder.embed_query("readiness probe")
        if len(vector) != embedder.dimension:
            raise RuntimeError(f"embedder returned {len(vector)} dimensions, expected {embedder.dimension}")
        _embedder_ok_at = now
    return {"model": embedder.model_id, "dimension": embedder.dimension}


def register() -> None:
    register_readiness_check("qdrant", check_vector_store)
    register_readiness_check("embedder", check_embedder)
