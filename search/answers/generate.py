"""The answer as events (streamed or whole) from the configured provider, citations checked."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from django.conf import settings

from search.answers.citations import CitationFilter, _is_dont_know
from search.answers.errors import AnswerError
from search.answers.extractive import ExtractiveProvider
from search.answers.llm import OpenAIChatProvider
from search.answers.passages import Answer, AnswerContext, Passage
from search.answers.providers import AnswerProvider

logger = logging.getLogger(__name__)

NOT_FOUND_ANSWER = "I could not find this in the knowledge base."
UNCITED_WARNING = "The answer cites none of the passages; check it against the sources before relying on it."


def answer_provider() -> AnswerProvider:
    """The configured provider: an OpenAI-compatible model when LLM_MODEL is set, else extractive."""
    if settings.LLM_MODEL:
        return OpenAIChatProvider.from_settings()
    return ExtractiveProvider()


def answer_generate(*, context: AnswerContext, provider: AnswerProvider | None = None) -> Answer:
    """Answer from the context's passages (not streamed). Raises AnswerError."""
    started = time.perf_counter()
    provider = provider or answer_provider()
    events = list(answer_events(context=context, provider=provider, stream=False))
    done = events[-1][1]
    text = "".join(data["text"] for event, data in events if event == "delta")
    return Answer(
        question=context.question,
        mode=context.mode,
        provider=provider.name,
        model=provider.model,
        text=text,
        passages=context.passages,
        cited=done["cited"],
        found=done["found"],
        took_ms=round(context.took_ms + (time.perf_counter() - started) * 1000, 2),
        warnings=done["warnings"],
        reranked=context.reranked,
        rerank_error=context.rerank_error,
        closest=context.closest,
    )


def answer_events(
    *, context: AnswerContext, provider: AnswerProvider, raise_errors: bool = True, stream: bool = True
) -> Iterator[tuple[str, dict]]:
    """The answer as events: ``("delta", {"text"})`` pieces, then ``("done", {...})``.

    Markers are checked on the fly, so each delta can be shown as it comes. With
    ``raise_errors=False`` an AnswerError becomes a final ``("error", {...})`` event (a stream
    cannot change its HTTP status once it has started). ``stream=False`` asks the provider for
    the whole answer in one request (one delta).
    """
    started = time.perf_counter()
    warnings = list(context.warnings)
    if not context.found:
        yield "delta", {"text": NOT_FOUND_ANSWER}
        yield "done", _done(NOT_FOUND_ANSWER, [], False, warnings, context, started)
        return
    cleaner = CitationFilter(len(context.passages))
    try:
        if stream:
            pieces = provider.stream(question=context.question, passages=context.passages, history=context.history)
        else:
            pieces = iter(
                [provider.answer(question=context.question, passages=context.passages, history=context.history)]
            )
        for piece in pieces:
            text = cleaner.feed(piece)
            if text:
                yield "delta", {"text": text}
        text = cleaner.flush()
        if text:
            yield "delta", {"text": text}
    except AnswerError as exc:
        logger.warning("answer failed (%s, %s): %s", provider.name, exc.code, exc.message)
        if raise_errors:
            raise
        yield "error", {"code": exc.code, "message": exc.message, "status": exc.status}
        return
    answer = cleaner.text.strip()
    found = bool(answer) and not _is_dont_know(answer)
    if cleaner.dropped:
        logger.info("dropped citation markers not among the %d passages: %s", len(context.passages), cleaner.dropped)
    if not answer:
        warnings.append("The answer provider returned an empty answer.")
    elif found and not cleaner.cited:
        warnings.append(UNCITED_WARNING)
    yield "done", _done(answer, cleaner.cited, found, warnings, context, started)


def _done(
    answer: str, cited: list[int], found: bool, warnings: list[str], context: AnswerContext, started: float
) -> dict:
    return {
        "answer": answer,
        "cited": list(cited),
        "found": found,
        "warnings": warnings,
        "took_ms": round(context.took_ms + (time.perf_counter() - started) * 1000, 2),
    }


def citation_body(passage: Passage, *, cited: bool | None = None) -> dict:
    body = {
        "n": passage.n,
        "chunk_id": passage.chunk_id,
        "document_id": passage.document_id,
        "title": passage.title,
        "url": passage.url,
        "source": passage.source,
        "snippet": passage.snippet,
        "heading_path": list(passage.heading_path),
        "page": passage.page,
    }
    if cited is not None:
        body["cited"] = cited
    return body
