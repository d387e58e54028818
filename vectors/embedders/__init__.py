"""Embedding providers behind one small interface (``base.Embedder``), chosen by settings.

- `EMBEDDING_BACKEND=local` (default): the packaged all-MiniLM-L6-v2 (``local``), fully offline,
  on one of three runtimes (`EMBEDDING_RUNTIME`): `torch` (sentence-transformers, fp32),
  `onnx-fp32` (ONNX Runtime, same vectors to ~1e-7) or `onnx-int8` (ONNX Runtime, dynamic int8;
  different vectors, so a different `model_id`). The ONNX files are exported from the packaged
  weights into `DATA_DIR/models/` by `manage.py embedder_export` (``onnx``), or lazily on first
  use if that step was skipped.
- `EMBEDDING_BACKEND=openai`: OpenAI or any OpenAI-compatible server (`OPENAI_BASE_URL`); see
  ``openai``.

This module is the factory: it picks and caches the implementation; the implementations import
only ``base``. Chunk tokens are counted with ``documents.tokenizer`` for every backend.
"""

from __future__ import annotations

import threading
from pathlib import Path

from django.conf import settings

from vectors.embedders.base import (
    LOCAL_MODEL,
    LOCAL_MODEL_ALIASES,
    LOCAL_RUNTIMES,
    Embedder,
    EmbeddingAuthError,
    EmbeddingError,
    EmbeddingUnavailable,
)

__all__ = [
    "Embedder",
    "EmbeddingAuthError",
    "EmbeddingError",
    "EmbeddingUnavailable",
    "embedder_max_tokens",
    "embedders_reset",
    "get_embedder",
    "onnx_model_dir",
]


def onnx_model_dir() -> Path:
    """Where the ONNX export lives: EMBEDDING_MODEL_DIR (default DATA_DIR/models)/all-MiniLM-L6-v2/onnx."""
    base = settings.EMBEDDING_MODEL_DIR
    return Path(base) / LOCAL_MODEL / "onnx"


def _embedder_key() -> tuple:
    """The settings an embedder depends on; a change (e.g. override_settings) selects another one."""
    backend = settings.EMBEDDING_BACKEND
    batch_size = settings.EMBEDDING_BATCH_SIZE
    if backend == "local":
        runtime = settings.EMBEDDING_RUNTIME
        onnx_dir = str(onnx_model_dir()) if runtime != "torch" else ""
        return (
            "local",
            settings.EMBEDDING_MODEL,
            runtime,
            batch_size,
            settings.EMBEDDING_THREADS,
            onnx_dir,
        )
    if backend == "openai":
        return (
            "openai",
            settings.EMBEDDING_MODEL,
            settings.EMBEDDING_DIMENSIONS,
            batch_size,
            settings.OPENAI_API_KEY,
            settings.OPENAI_BASE_URL,
            settings.OPENAI_TIMEOUT,
            settings.OPENAI_MAX_RETRIES,
            settings.OPENAI_RETRY_BASE_DELAY,
        )
    raise EmbeddingError(f"Unknown EMBEDDING_BACKEND {backend!r}: expected local or openai.")


def _build_embedder(key: tuple) -> Embedder:
    if key[0] == "local":
        _, model, runtime, batch_size, threads, onnx_dir = key
        if model not in LOCAL_MODEL_ALIASES:
            raise EmbeddingError(
                f"EMBEDDING_MODEL={model!r} is not available offline: the local backend ships only {LOCAL_MODEL}."
            )
        if runtime not in LOCAL_RUNTIMES:
            raise EmbeddingError(f"Unknown EMBEDDING_RUNTIME {runtime!r}: expected one of {', '.join(LOCAL_RUNTIMES)}.")
        from vectors.embedders.local import LocalEmbedder

        return LocalEmbedder(runtime=runtime, batch_size=batch_size, threads=threads, onnx_dir=Path(onnx_dir))
    from vectors.embedders.openai import OpenAIEmbedder

    _, model, dimensions, batch_size, api_key, base_url, timeout, max_retries, retry_base_delay = key
    return OpenAIEmbedder(
        model=model,
        dimensions=dimensions,
        batch_size=batch_size,
        api_key=api_key,
        base_url=base_url,
        timeout=timeout,
        max_retries=max_retries,
        retry_base_delay=retry_base_delay,
    )


_embedders: dict[tuple, Embedder] = {}
_embedders_lock = threading.Lock()


def get_embedder() -> Embedder:
    """The process-wide embedder for the current settings (loaded once; the model stays in memory)."""
    key = _embedder_key()
    embedder = _embedders.get(key)
    if embedder is None:
        # One lock for all keys: loading a model twice in parallel would only double the memory peak.
        with _embedders_lock:
            embedder = _embedders.get(key)
            if embedder is None:
                embedder = _embedders[key] = _build_embedder(key)
    return embedder


def embedder_max_tokens() -> int:
    """The configured embedder's input limit in tokens, without loading a model to learn it."""
    key = _embedder_key()
    loaded = _embedders.get(key)
    if loaded is not None:
        return loaded.max_tokens
    if key[0] == "local":
        from vectors.embedders.local import LocalEmbedder

        return LocalEmbedder.max_tokens
    from vectors.embedders.openai import OpenAIEmbedder

    return OpenAIEmbedder.max_tokens


def embedders_reset() -> None:
    """Forget loaded embedders (tests; after changing settings outside override_settings)."""
    with _embedders_lock:
        _embedders.clear()
