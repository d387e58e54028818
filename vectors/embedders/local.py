"""The packaged all-MiniLM-L6-v2 (384 dims, 256 tokens), fully offline, on torch or ONNX Runtime."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from documents.tokenizer import packaged_model_path
from vectors.embedders import onnx
from vectors.embedders.base import LOCAL_MODEL, EmbeddingError, normalize_rows

logger = logging.getLogger(__name__)


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
            path = onnx_dir / onnx.onnx_file_for(runtime)
            if not onnx.export_is_current(onnx_dir):
                logger.warning(
                    "ONNX model missing in %s: exporting it now from the packaged weights (run "
                    "`manage.py embedder_export` at setup to avoid this delay).",
                    onnx_dir,
                )
                onnx.export_onnx_model(onnx_dir)
            self._encode = onnx.OnnxEncoder(path, threads=threads, batch_size=batch_size).encode

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

    if threads:
        torch.set_num_threads(threads)
    model = SentenceTransformer(str(packaged_model_path()), device="cpu")

    def encode(texts: list[str]) -> np.ndarray:
        return model.encode(
            texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        ).astype(np.float32, copy=False)

    return encode
