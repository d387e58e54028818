"""The one place an OpenAI client (for OpenAI or any OpenAI-compatible server) is built.

Callers choose their own timeout and retry policy: the embedder retries itself with backoff
(``max_retries=0`` here), an interactive answer retries once, a follow-up rewrite never.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=8)
def openai_client(*, api_key: str, base_url: str, timeout: float, max_retries: int):
    """A shared client for these arguments (it pools its connections; safe across threads)."""
    import openai

    # A local OpenAI-compatible server often needs no key, but the client insists on one.
    return openai.OpenAI(
        api_key=api_key or "unused", base_url=base_url or None, timeout=float(timeout), max_retries=int(max_retries)
    )
