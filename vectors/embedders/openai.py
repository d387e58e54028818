"""OpenAI (or any OpenAI-compatible server) embeddings with batching, retries and validation.

The client's own retries are switched off (`max_retries=0`) so that the policy lives in one
place: rate limits (429), server errors (5xx) and connection errors/timeouts are retried with
exponential backoff and full jitter, honouring Retry-After; authentication (401), permission
(403) and quota (429 `insufficient_quota`) errors raise `EmbeddingAuthError` at once, because
retrying cannot fix them and the sync must stop with the chunks left pending.
"""

from __future__ import annotations

import logging
import random
import threading
import time

import numpy as np

from ragsite.openai_client import openai_client
from vectors.embedders.base import EmbeddingAuthError, EmbeddingError, EmbeddingUnavailable, normalize_rows

logger = logging.getLogger(__name__)

KNOWN_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
# OpenAI's documented input limits: 2,048 inputs and 300,000 tokens per request, 8,191 tokens each.
MAX_INPUTS_PER_REQUEST = 2048
MAX_TOKENS_PER_REQUEST = 300_000
MAX_TOKENS_PER_INPUT = 8191
# No tokenizer for OpenAI's encodings here (see get_tokenizer): size requests from characters,
# at the conservative end of English's ~4 characters per token.
_CHARS_PER_TOKEN_ESTIMATE = 3
MAX_RETRY_DELAY = 30.0
_QUOTA_CODES = {"insufficient_quota", "billing_hard_limit_reached", "billing_not_active"}


class OpenAIEmbedder:
    max_tokens = MAX_TOKENS_PER_INPUT

    def __init__(
        self,
        *,
        model: str,
        dimensions: int = 0,
        batch_size: int = 64,
        api_key: str = "",
        base_url: str = "",
        timeout: float = 30.0,
        max_retries: int = 4,
        retry_base_delay: float = 0.5,
    ) -> None:
        self.model_id = model
        self.batch_size = max(1, min(batch_size, MAX_INPUTS_PER_REQUEST))
        self.max_retries = max_retries
        self.retry_base_delay = retry_base_delay
        # `dimensions` is an API parameter only the text-embedding-3 family accepts; for another
        # model (e.g. on a local server) EMBEDDING_DIMENSIONS only declares what to expect.
        self._send_dimensions = bool(dimensions) and model.startswith("text-embedding-3")
        self._dimension: int | None = dimensions or KNOWN_DIMENSIONS.get(model)
        self._dimension_lock = threading.Lock()
        # Retries are this class's own policy (see the module docstring), not the client's.
        self._client = openai_client(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0)

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            with self._dimension_lock:
                if self._dimension is None:
                    # Unknown model and no EMBEDDING_DIMENSIONS: ask the server once.
                    self._dimension = len(self._request(["dimension probe"], expected_dimension=None)[0])
                    logger.info("Embedding model %s has %d dimensions (probed).", self.model_id, self._dimension)
        return self._dimension

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.empty((0, self.dimension), dtype=np.float32)
        dimension = self.dimension
        parts = [self._request(batch, expected_dimension=dimension) for batch in self._batches(list(texts))]
        return np.concatenate(parts, axis=0)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]

    def _batches(self, texts: list[str]) -> list[list[str]]:
        batches: list[list[str]] = []
        current: list[str] = []
        current_tokens = 0
        for text in texts:
            tokens = len(text) // _CHARS_PER_TOKEN_ESTIMATE + 1
            if current and (len(current) >= self.batch_size or current_tokens + tokens > MAX_TOKENS_PER_REQUEST):
                batches.append(current)
                current, current_tokens = [], 0
            current.append(text)
            current_tokens += tokens
        if current:
            batches.append(current)
        return batches

    def _request(self, batch: list[str], *, expected_dimension: int | None) -> np.ndarray:
        import openai

        attempt = 0
        while True:
            try:
                kwargs = {"dimensions": self._dimension} if self._send_dimensions else {}
                response = self._client.embeddings.create(model=self.model_id, input=batch, **kwargs)
                return _validated(response, count=len(batch), dimension=expected_dimension)
            except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                raise EmbeddingAuthError(
                    f"Embedding provider refused the credentials ({exc.status_code}): {_message(exc)}"
                ) from exc
            except openai.RateLimitError as exc:
                if _is_quota_error(exc):
                    raise EmbeddingAuthError(f"Embedding provider quota exhausted: {_message(exc)}") from exc
                failure: Exception = exc
            except openai.APIStatusError as exc:
                if exc.status_code < 500:
                    # 400/404/413/422: the request itself is wrong; the same request will fail again.
                    raise EmbeddingError(f"Embedding request rejected ({exc.status_code}): {_message(exc)}") from exc
                failure = exc
            except openai.APIConnectionError as exc:  # includes APITimeoutError
                failure = exc
            except openai.APIResponseValidationError as exc:
                raise EmbeddingError(f"Malformed embedding response: {exc}") from exc
            if attempt >= self.max_retries:
                raise EmbeddingUnavailable(
                    f"Embedding provider unavailable after {attempt + 1} attempts: {_describe(failure)}"
                ) from failure
            delay = self._retry_delay(attempt, failure)
            logger.warning(
                "Embedding request failed (%s); retry %d/%d in %.2fs.",
                _describe(failure),
                attempt + 1,
                self.max_retries,
                delay,
            )
            time.sleep(delay)
            attempt += 1

    def _retry_delay(self, attempt: int, failure: Exception) -> float:
        # Full jitter: many workers hitting the same limit must not retry in lockstep.
        delay = random.uniform(0, min(MAX_RETRY_DELAY, self.retry_base_delay * 2**attempt))
        retry_after = _retry_after_seconds(failure)
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_DELAY))
        return delay


def _validated(response, *, count: int, dimension: int | None) -> np.ndarray:
    data = list(getattr(response, "data", None) or [])
    if len(data) != count:
        raise EmbeddingError(f"Malformed embedding response: {len(data)} vectors for {count} inputs.")
    try:
        data.sort(key=lambda item: item.index)
        indices = [item.index for item in data]
        vectors = [list(item.embedding) for item in data]
    except (AttributeError, TypeError) as exc:
        raise EmbeddingError(f"Malformed embedding response: {exc}") from exc
    if indices != list(range(count)):
        raise EmbeddingError("Malformed embedding response: indices do not match the inputs.")
    lengths = {len(v) for v in vectors}
    if len(lengths) != 1 or (dimension is not None and lengths != {dimension}):
        raise EmbeddingError(
            f"Malformed embedding response: vector lengths {sorted(lengths)}, expected {dimension or 'one length'}."
        )
    try:
        matrix = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise EmbeddingError(f"Malformed embedding response: {exc}") from exc
    return normalize_rows(matrix)


def _error_field(exc: Exception, name: str) -> str:
    value = getattr(exc, name, None)
    body = getattr(exc, "body", None)
    if not value and isinstance(body, dict):
        inner = body.get("error", body)
        value = inner.get(name) if isinstance(inner, dict) else None
    return str(value or "")


def _is_quota_error(exc: Exception) -> bool:
    return _error_field(exc, "code") in _QUOTA_CODES or _error_field(exc, "type") in _QUOTA_CODES


def _message(exc: Exception) -> str:
    return _error_field(exc, "message") or str(exc)


def _describe(exc: Exception) -> str:
    status = getattr(exc, "status_code", None)
    return f"{type(exc).__name__}{f' {status}' if status else ''}: {_message(exc)}"


def _retry_after_seconds(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    value = headers.get("retry-after-ms")
    try:
        if value is not None:
            return float(value) / 1000
        value = headers.get("retry-after")
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare for this API; the backoff still applies
