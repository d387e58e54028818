"""What can go wrong while answering, with the HTTP status and code the API answers with."""

from __future__ import annotations


class AnswerError(Exception):
    """The answer could not be produced. ``status`` and ``code`` are what the API answers with."""

    status = 502
    code = "answer_failed"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class LLMTimeout(AnswerError):
    status = 504
    code = "llm_timeout"


class LLMRateLimited(AnswerError):
    status = 503
    code = "llm_rate_limited"


class LLMAuthError(AnswerError):
    status = 502
    code = "llm_auth_failed"


class LLMUnavailable(AnswerError):
    status = 502
    code = "llm_unavailable"


class AnswerUnavailable(AnswerError):
    """The offline provider cannot run (the local embedder failed)."""

    status = 503
    code = "answer_unavailable"
