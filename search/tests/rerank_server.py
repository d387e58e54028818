"""Rerank endpoints for tests: the project's real embedder scoring as a bi-encoder, in both protocols.

Routes on the shared local OpenAI-compatible test server (``ragsite.tests.openai_server``):
``POST /v1/rerank`` speaks Cohere's protocol (Jina and vLLM speak the same), ``POST /rerank``
Hugging Face TEI's. Scores are cosine similarities of the real local model's vectors, so the
order a test expects is computed independently by ``bi_encoder_scores``.
"""

from __future__ import annotations

import numpy as np
import pytest

from ragsite.tests.openai_server import OpenAICompatibleServer, Reply, Request, error_reply

COHERE_PATH = "/v1/rerank"
TEI_PATH = "/rerank"


def bi_encoder_scores(query: str, texts: list[str]) -> list[float]:
    from vectors.embedders import get_embedder

    embedder = get_embedder()
    query_vector = np.asarray(embedder.embed_query(query), dtype=np.float32)
    vectors = np.asarray(embedder.embed_documents(list(texts)), dtype=np.float32)
    return [float(score) for score in vectors @ query_vector]


def cohere_handler(server: OpenAICompatibleServer, request: Request) -> Reply:
    body = request.json or {}
    documents, query = body.get("documents"), body.get("query")
    if not isinstance(documents, list) or not isinstance(query, str):
        return error_reply(400, message="query and documents are required")
    scores = bi_encoder_scores(query, [d if isinstance(d, str) else d.get("text", "") for d in documents])
    order = sorted(range(len(scores)), key=lambda i: -scores[i])[: int(body.get("top_n") or len(scores))]
    return Reply(
        body={"results": [{"index": i, "relevance_score": scores[i]} for i in order], "model": body.get("model")}
    )


def tei_handler(server: OpenAICompatibleServer, request: Request) -> Reply:
    body = request.json or {}
    texts, query = body.get("texts"), body.get("query")
    if not isinstance(texts, list) or not isinstance(query, str):
        return error_reply(400, message="query and texts are required")
    scores = bi_encoder_scores(query, texts)
    return Reply(body=[{"index": i, "score": scores[i]} for i in sorted(range(len(scores)), key=lambda i: -scores[i])])


@pytest.fixture(name="rerank_server")
def rerank_server_fixture(openai_server: OpenAICompatibleServer) -> OpenAICompatibleServer:
    openai_server.route(COHERE_PATH, cohere_handler)
    openai_server.route(TEI_PATH, tei_handler)
    return openai_server


def endpoint(server: OpenAICompatibleServer, path: str) -> str:
    return server.base_url.removesuffix("/v1") + path
