"""An optional rerank stage: the best candidates of a search, reordered by a rerank endpoint.

Off unless ``RERANK_URL`` is set. Two wire protocols, both common:

- ``cohere`` (Cohere, Jina, vLLM, Infinity...): ``POST {"model", "query", "documents": [...],
  "top_n"}`` -> ``{"results": [{"index", "relevance_score"}]}``;
- ``tei`` (Hugging Face text-embeddings-inference): ``POST {"query", "texts": [...],
  "truncate": true}`` -> ``[{"index", "score"}]``.

A rerank endpoint is a dependency the search must survive: on a timeout, an error status or an
answer that does not fit the protocol, the candidates come back in their original order with
the reason, and the caller says ``"reranked": false`` (never a 5xx).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
from django.conf import settings

logger = logging.getLogger(__name__)

# What is sent per candidate: a rerank model reads a few hundred tokens at most, and a request
# body must stay small whatever the chunks hold.
MAX_CHARS_PER_DOCUMENT = 4000
MAX_RESPONSE_BYTES = 1_000_000


class RerankError(Exception):
    """The endpoint could not rerank; the message says why, for the response's ``rerank_error``."""


@dataclass
class RerankOutcome:
    order: list[int]  # indexes into the candidates, best first (all of them)
    scores: dict[int, float]  # index -> the endpoint's score (reranked candidates only)
    reranked: bool
    error: str = ""
    took_ms: float = 0.0


def rerank_enabled() -> bool:
    return bool(settings.RERANK_URL)


def rerank(query: str, texts: Sequence[str]) -> RerankOutcome:
    """Reorder ``texts`` for ``query``; on any failure the original order with ``reranked=False``."""
    started = time.perf_counter()
    if not texts:
        return RerankOutcome(order=[], scores={}, reranked=True)
    try:
        scores = _scores(query, [text[:MAX_CHARS_PER_DOCUMENT] for text in texts])
    except RerankError as exc:
        logger.warning("rerank fell back to the original order: %s", exc)
        return RerankOutcome(
            order=list(range(len(texts))),
            scores={},
            reranked=False,
            error=str(exc),
            took_ms=round((time.perf_counter() - started) * 1000, 2),
        )
    scored = sorted(scores, key=lambda i: (-scores[i], i))
    rest = [i for i in range(len(texts)) if i not in scores]  # not returned (a top_n cut): keep their order
    return RerankOutcome(
        order=scored + rest,
        scores=scores,
        reranked=True,
        took_ms=round((time.perf_counter() - started) * 1000, 2),
    )


def _scores(query: str, texts: list[str]) -> dict[int, float]:
    api = settings.RERANK_API
    if api == "tei":
        body: dict = {"query": query, "texts": texts, "truncate": True}
    else:
        body = {"query": query, "documents": texts, "top_n": len(texts)}
        if settings.RERANK_MODEL:
            body["model"] = settings.RERANK_MODEL
    headers = {"Accept": "application/json"}
    if settings.RERANK_API_KEY:
        headers["Authorization"] = f"Bearer {settings.RERANK_API_KEY}"
    try:
        with httpx.Client(timeout=settings.RERANK_TIMEOUT, follow_redirects=False) as client:
            with client.stream("POST", settings.RERANK_URL, json=body, headers=headers) as response:
                raw = bytearray()
                for piece in response.iter_bytes():
                    raw += piece
                    if len(raw) > MAX_RESPONSE_BYTES:
                        raise RerankError("the rerank endpoint's answer is too large")
                if response.status_code != 200:
                    raise RerankError(f"the rerank endpoint answered HTTP {response.status_code}")
    except httpx.TimeoutException:
        raise RerankError(
            f"the rerank endpoint did not answer within RERANK_TIMEOUT ({settings.RERANK_TIMEOUT:g} s)"
        ) from None
    except httpx.HTTPError as exc:
        raise RerankError(f"cannot reach the rerank endpoint ({type(exc).__name__})") from None
    try:
        import json

        data = json.loads(bytes(raw))
    except ValueError:
        raise RerankError("the rerank endpoint's answer is not JSON") from None
    items = data if api == "tei" else (data.get("results") if isinstance(data, dict) else None)
    score_key = "score" if api == "tei" else "relevance_score"
    if not isinstance(items, list):
        raise RerankError(f"the rerank endpoint's answer does not follow the {api} protocol")
    scores: dict[int, float] = {}
    for item in items:
        if not isinstance(item, dict):
            raise RerankError(f"the rerank endpoint's answer does not follow the {api} protocol")
        index, score = item.get("index"), item.get(score_key)
        if (
            not isinstance(index, int)
            or isinstance(index, bool)
            or not 0 <= index < len(texts)
            or not isinstance(score, int | float)
            or isinstance(score, bool)
            or not math.isfinite(score)
        ):
            raise RerankError(f"the rerank endpoint's answer does not follow the {api} protocol")
        scores[index] = float(score)
    if not scores:
        raise RerankError("the rerank endpoint returned no scores")
    return scores
