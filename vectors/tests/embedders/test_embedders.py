"""Embedding providers: the real packaged model (torch and ONNX) and the real openai client
against a real OpenAI-compatible HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from django.core.management import call_command
from django.test import override_settings

from documents.tokenizer import get_tokenizer
from ragsite.tests.openai_server import (  # noqa: F401 - fixtures
    hashed_embedding,
    openai_server_fixture,
    openai_server_session_fixture,
)
from vectors.embedders import (
    EmbeddingAuthError,
    EmbeddingError,
    EmbeddingUnavailable,
    get_embedder,
)
from vectors.embedders.onnx import FP32_FILE, INT8_FILE, MANIFEST_FILE, OnnxEncoder, export_onnx_model

LOCAL = {"EMBEDDING_BACKEND": "local", "EMBEDDING_MODEL": "all-MiniLM-L6-v2", "EMBEDDING_BATCH_SIZE": 16}

SAMPLES = [
    "The mitochondria is the powerhouse of the cell.",
    "Vitamin D supplementation reduces the risk of fractures in older adults.",
    "Quarterly revenue grew by twelve percent thanks to strong sales in Europe.",
    "A heavy storm closed the harbour and all ferries were cancelled.",
    "Neural networks learn representations from data.",
    "",
]


@pytest.fixture(scope="session")
def torch_embedder():
    # Loaded once per session: the model load is the slow part of these tests.
    with override_settings(**LOCAL, EMBEDDING_RUNTIME="torch"):
        yield get_embedder()


@pytest.fixture(scope="session")
def onnx_data_dir(tmp_path_factory):
    """A fresh DATA_DIR whose ONNX export is made once per session, by two racing exporters."""
    data_dir = tmp_path_factory.mktemp("embeddings-data")
    target = data_dir / "models" / "all-MiniLM-L6-v2" / "onnx"
    # EMBEDDING_MODEL_DIR too: the suite otherwise shares one export in var/models, and these
    # tests are about making one.
    with override_settings(
        **LOCAL, DATA_DIR=data_dir, EMBEDDING_MODEL_DIR=data_dir / "models", EMBEDDING_RUNTIME="onnx-int8"
    ):
        # Like an API process and a worker starting together: the lazy export inside get_embedder()
        # and `manage.py embedder_export` run at once on an empty folder.
        with ThreadPoolExecutor(max_workers=2) as pool:
            lazy = pool.submit(get_embedder)
            explicit = pool.submit(export_onnx_model, target)
            lazy.result()
            explicit.result()
    return data_dir


@pytest.fixture(scope="session")
def int8_embedder(onnx_data_dir):
    with override_settings(
        **LOCAL, DATA_DIR=onnx_data_dir, EMBEDDING_MODEL_DIR=onnx_data_dir / "models", EMBEDDING_RUNTIME="onnx-int8"
    ):
        yield get_embedder()


@pytest.fixture(scope="session")
def onnx_fp32_embedder(onnx_data_dir):
    with override_settings(
        **LOCAL, DATA_DIR=onnx_data_dir, EMBEDDING_MODEL_DIR=onnx_data_dir / "models", EMBEDDING_RUNTIME="onnx-fp32"
    ):
        yield get_embedder()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


# --- local model -----------------------------------------------------------------------------


@pytest.mark.slow
def test_local_embeddings_are_unit_length_float32_with_384_dimensions(torch_embedder):
    vectors = torch_embedder.embed_documents(SAMPLES)

    assert vectors.shape == (len(SAMPLES), 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert torch_embedder.dimension == 384
    assert torch_embedder.max_tokens == 256
    assert torch_embedder.model_id == "all-MiniLM-L6-v2"


@pytest.mark.slow
def test_a_paraphrase_is_closer_than_an_unrelated_sentence(torch_embedder):
    query = torch_embedder.embed_query("How do I reset my password?")
    paraphrase, unrelated = torch_embedder.embed_documents(
        ["Steps to change a forgotten account password.", "The recipe needs two cups of flour and an egg."]
    )

    assert cosine(query, paraphrase) > cosine(query, unrelated) + 0.2


@pytest.mark.slow
def test_a_query_embeds_like_the_same_text_as_a_document(torch_embedder):
    text = "Aspirin lowers the risk of heart attack."

    np.testing.assert_allclose(torch_embedder.embed_query(text), torch_embedder.embed_documents([text])[0], atol=1e-5)


@pytest.mark.slow
def test_text_beyond_256_tokens_is_truncated_by_the_model(torch_embedder):
    head = "Protein folding is determined by the amino acid sequence. " * 40  # > 256 tokens already
    same, longer = torch_embedder.embed_documents([head, head + "Completely different tail about football."])

    assert cosine(same, longer) > 0.9999


@pytest.mark.slow
def test_no_texts_give_an_empty_matrix(torch_embedder):
    assert torch_embedder.embed_documents([]).shape == (0, 384)


@pytest.mark.slow
def test_get_embedder_is_cached_per_process_and_keyed_by_settings(torch_embedder, int8_embedder, onnx_data_dir):
    with override_settings(**LOCAL, EMBEDDING_RUNTIME="torch"):
        assert get_embedder() is torch_embedder
    with override_settings(
        **LOCAL, DATA_DIR=onnx_data_dir, EMBEDDING_MODEL_DIR=onnx_data_dir / "models", EMBEDDING_RUNTIME="onnx-int8"
    ):
        assert get_embedder() is int8_embedder
    assert int8_embedder is not torch_embedder


@pytest.mark.slow
def test_racing_exports_leave_one_complete_model_in_the_data_dir(onnx_data_dir, int8_embedder):
    target = onnx_data_dir / "models" / "all-MiniLM-L6-v2" / "onnx"

    assert (target / FP32_FILE).exists() and (target / INT8_FILE).exists()
    assert json.loads((target / MANIFEST_FILE).read_text())["model"] == "all-MiniLM-L6-v2"
    assert not [p for p in target.iterdir() if p.name.startswith(".export-")]  # no leftover temp folders


@pytest.mark.slow
def test_export_of_a_current_model_rewrites_nothing(onnx_data_dir, int8_embedder):
    target = onnx_data_dir / "models" / "all-MiniLM-L6-v2" / "onnx"
    before = {p.name: p.stat().st_mtime_ns for p in target.iterdir()}

    export_onnx_model(target)

    assert {p.name: p.stat().st_mtime_ns for p in target.iterdir()} == before


@pytest.mark.slow
def test_embedder_export_command_reports_an_existing_export(onnx_data_dir, int8_embedder, capsys):
    with override_settings(DATA_DIR=onnx_data_dir, EMBEDDING_MODEL_DIR=onnx_data_dir / "models"):
        call_command("embedder_export")

    assert "already current" in capsys.readouterr().out


@pytest.mark.slow
def test_onnx_fp32_reproduces_sentence_transformers(torch_embedder, onnx_fp32_embedder):
    np.testing.assert_allclose(
        onnx_fp32_embedder.embed_documents(SAMPLES), torch_embedder.embed_documents(SAMPLES), atol=1e-4
    )
    # Same vectors, so the same model_id: switching between them needs no re-index.
    assert onnx_fp32_embedder.model_id == torch_embedder.model_id


@pytest.mark.slow
def test_onnx_int8_stays_close_to_fp32_and_is_recorded_as_another_model(torch_embedder, int8_embedder):
    # Real sentences: an empty input is only [CLS] [SEP], where int8 noise is not averaged over
    # tokens (its cosine is ~0.977); bench/results/embedder.md has the corpus-wide figures.
    texts = [t for t in SAMPLES if t]
    fp32 = torch_embedder.embed_documents(texts)
    int8 = int8_embedder.embed_documents(texts)

    np.testing.assert_allclose(np.linalg.norm(int8, axis=1), 1.0, atol=1e-5)
    assert (fp32 * int8).sum(axis=1).min() > 0.98
    assert int8_embedder.model_id == "all-MiniLM-L6-v2+onnx-int8"


def test_shrinking_the_onnx_arena_after_a_document_batch_changes_no_vector(onnx_data_dir):
    # The service returns ONNX Runtime's arena blocks to the system after each call that ran a
    # document batch (memory: see OnnxEncoder); batches and queries must embed exactly as with
    # the arena kept, in any order, including a query right after a shrink.
    path = onnx_data_dir / "models" / "all-MiniLM-L6-v2" / "onnx" / INT8_FILE
    kept = OnnxEncoder(path, threads=1, batch_size=4, arena="keep")
    shrunk = OnnxEncoder(path, threads=1, batch_size=4)
    documents = [t * 20 for t in SAMPLES]  # three batches of padded, longer-than-a-query texts
    for texts in (documents, SAMPLES[:1], documents[:3], SAMPLES[1:2]):
        np.testing.assert_array_equal(shrunk.encode(texts), kept.encode(texts))


def test_an_unknown_onnx_arena_policy_is_a_clear_error(onnx_data_dir):
    path = onnx_data_dir / "models" / "all-MiniLM-L6-v2" / "onnx" / INT8_FILE
    with pytest.raises(EmbeddingError, match="arena policy"):
        OnnxEncoder(path, arena="grow")


def test_an_unknown_local_model_is_a_clear_error():
    with override_settings(**{**LOCAL, "EMBEDDING_MODEL": "bge-large"}), pytest.raises(EmbeddingError, match="offline"):
        get_embedder()


def test_the_openai_backend_counts_tokens_with_the_same_tokenizer(openai_server, settings):
    settings.EMBEDDING_BACKEND = "openai"
    settings.OPENAI_BASE_URL = openai_server.base_url

    assert len(get_tokenizer().encode("hello world").ids) == 4


# --- OpenAI-compatible backend ----------------------------------------------------------------


@pytest.fixture
def openai_settings(settings, openai_server):
    settings.EMBEDDING_BACKEND = "openai"
    settings.EMBEDDING_MODEL = "text-embedding-3-small"
    settings.EMBEDDING_DIMENSIONS = 0
    settings.EMBEDDING_BATCH_SIZE = 2
    settings.OPENAI_API_KEY = "sk-test"
    settings.OPENAI_BASE_URL = openai_server.base_url
    settings.OPENAI_TIMEOUT = 5.0
    settings.OPENAI_MAX_RETRIES = 3
    settings.OPENAI_RETRY_BASE_DELAY = 0.001  # keep retry tests fast; the policy is the same
    return settings


def test_openai_embeddings_are_batched_ordered_and_unit_length(openai_settings, openai_server):
    texts = ["alpha beta", "gamma", "delta epsilon", "zeta", "eta theta iota"]

    vectors = get_embedder().embed_documents(texts)

    assert [len(r.json["input"]) for r in openai_server.requests_to("/v1/embeddings")] == [2, 2, 1]
    assert vectors.shape == (5, 1536) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    for text, vector in zip(texts, vectors, strict=True):
        np.testing.assert_allclose(vector, hashed_embedding(text, 1536), atol=1e-6)


def test_openai_sends_the_api_key_and_model(openai_settings, openai_server):
    get_embedder().embed_query("hello")

    (request,) = openai_server.requests_to("/v1/embeddings")
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.json["model"] == "text-embedding-3-small"


def test_openai_retries_rate_limits_and_server_errors_then_succeeds(openai_settings, openai_server):
    openai_server.fail_next("/v1/embeddings", status=429, times=2)
    openai_server.fail_next("/v1/embeddings", status=500)

    vector = get_embedder().embed_query("retry me")

    assert len(openai_server.requests_to("/v1/embeddings")) == 4
    np.testing.assert_allclose(vector, hashed_embedding("retry me", 1536), atol=1e-6)


def test_openai_gives_up_as_unavailable_when_retries_run_out(openai_settings, openai_server):
    openai_settings.OPENAI_MAX_RETRIES = 2
    openai_server.fail_next("/v1/embeddings", status=503, times=10)

    with pytest.raises(EmbeddingUnavailable, match="3 attempts"):
        get_embedder().embed_documents(["a", "b"])
    assert len(openai_server.requests_to("/v1/embeddings")) == 3


def test_openai_connection_refused_is_unavailable_after_retries(openai_settings):
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    openai_settings.OPENAI_BASE_URL = f"http://127.0.0.1:{port}/v1"
    openai_settings.OPENAI_MAX_RETRIES = 1

    with pytest.raises(EmbeddingUnavailable, match="2 attempts"):
        get_embedder().embed_query("anyone there?")


@pytest.mark.parametrize(
    ("status", "code"),
    [(401, None), (403, None), (429, "insufficient_quota")],
    ids=["unauthorized", "forbidden", "quota"],
)
def test_openai_auth_and_quota_errors_stop_at_once(openai_settings, openai_server, status, code):
    openai_server.fail_next("/v1/embeddings", status=status, code=code, times=5)

    with pytest.raises(EmbeddingAuthError):
        get_embedder().embed_documents(["a", "b", "c"])
    assert len(openai_server.requests_to("/v1/embeddings")) == 1


@pytest.mark.parametrize("kind", ["count", "dimension"])
def test_openai_malformed_response_is_rejected_without_vectors(openai_settings, openai_server, kind):
    openai_server.malform_next("/v1/embeddings", kind)

    with pytest.raises(EmbeddingError, match="Malformed") as excinfo:
        get_embedder().embed_documents(["one", "two"])
    assert not isinstance(excinfo.value, EmbeddingAuthError | EmbeddingUnavailable)
    assert len(openai_server.requests_to("/v1/embeddings")) == 1


def test_openai_a_rejected_request_is_not_retried(openai_settings, openai_server):
    openai_server.fail_next("/v1/embeddings", status=400, message="input too long")

    with pytest.raises(EmbeddingError, match="input too long"):
        get_embedder().embed_query("x")
    assert len(openai_server.requests_to("/v1/embeddings")) == 1


def test_openai_configured_dimensions_are_requested_and_checked(openai_settings, openai_server):
    openai_settings.EMBEDDING_DIMENSIONS = 256

    embedder = get_embedder()
    vectors = embedder.embed_documents(["short vectors"])

    assert embedder.dimension == 256 and vectors.shape == (1, 256)
    assert openai_server.requests_to("/v1/embeddings")[0].json["dimensions"] == 256


def test_openai_known_model_dimension_needs_no_request(openai_settings, openai_server):
    openai_settings.EMBEDDING_MODEL = "text-embedding-3-large"

    assert get_embedder().dimension == 3072
    assert openai_server.requests_to("/v1/embeddings") == []


def test_openai_unknown_model_dimension_is_probed_once(openai_settings, openai_server):
    openai_settings.EMBEDDING_MODEL = "nomic-embed-text"
    openai_server.model_dimensions["nomic-embed-text"] = 768

    embedder = get_embedder()
    assert embedder.dimension == 768
    assert embedder.embed_documents(["a", "b"]).shape == (2, 768)
    assert len(openai_server.requests_to("/v1/embeddings")) == 2  # one probe, one batch
    assert "dimensions" not in openai_server.requests_to("/v1/embeddings")[1].json
