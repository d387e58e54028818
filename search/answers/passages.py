"""The numbered passages a provider answers from, and what an answer is made of."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from documents.chunking import chunk_page
from search.selectors import SearchResult
from search.snippets import snippet_safe_html

# A passage cut to fit the budget must still say something; below this many tokens, stop instead.
MIN_PASSAGE_TOKENS = 48


@dataclass(frozen=True)
class Passage:
    n: int
    chunk_id: str
    document_id: int
    title: str
    url: str
    source: str
    snippet: str  # safe HTML: escaped text, matched words in <mark>
    text: str  # what the provider is given (may be cut to fit the token budget)
    heading_path: tuple[str, ...] = ()
    similarity: float | None = None
    page: int | None = None  # PDF/TIFF page or slide the passage starts on

    @property
    def label(self) -> str:
        """Title and headings, the passage's header line in the prompt."""
        parts = [self.title or "Untitled", *[h for h in self.heading_path if h and h != self.title]]
        return " > ".join(parts)

    def prompt_text(self) -> str:
        lines = [f"[{self.n}] {self.label}"]
        if self.url:
            lines.append(f"Source: {self.url}")
        lines.append(self.text)
        return "\n".join(lines)


@dataclass
class AnswerContext:
    """What retrieval found for a question: the numbered passages a provider may cite."""

    question: str
    mode: str
    passages: list[Passage]
    took_ms: float = 0.0
    warnings: list[str] = field(default_factory=list)
    retrieved: int = 0  # search results before relevance, dedupe and budget
    reranked: bool | None = None  # None: no rerank asked for
    rerank_error: str = ""
    history: list[tuple[str, str]] = field(default_factory=list)  # earlier (question, answer) turns
    closest: list[dict] = field(default_factory=list)  # when nothing is relevant: the nearest documents
    searched_for: str = ""  # the standalone query searched (the question itself unless rewritten)

    @property
    def found(self) -> bool:
        return bool(self.passages)


@dataclass
class Answer:
    question: str
    mode: str
    provider: str
    model: str
    text: str
    passages: list[Passage]
    cited: list[int]
    found: bool
    took_ms: float
    warnings: list[str] = field(default_factory=list)
    reranked: bool | None = None
    rerank_error: str = ""
    closest: list[dict] = field(default_factory=list)


def _normalised(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.casefold()))


def answer_context_build(
    *,
    results: Sequence[SearchResult],
    budget_tokens: int,
    tokenizer=None,
    similarities: dict[str, float] | None = None,
) -> list[Passage]:
    """Number the results as passages, best first, without duplicates, within ``budget_tokens``.

    The budget counts each passage as the provider sees it (header line, source URL and text),
    with the embedder's tokenizer: an approximation of any LLM's count that runs a little high.
    """
    if tokenizer is None:
        from documents.tokenizer import get_tokenizer

        tokenizer = get_tokenizer()
    similarities = similarities or {}
    passages: list[Passage] = []
    seen: set[str] = set()
    used = 0
    for result in results:
        digest = hashlib.sha256(_normalised(result.text).encode()).hexdigest()
        if digest in seen or not result.text.strip():
            continue  # the same text under two URLs (mirrors, re-crawls) cites as one passage
        seen.add(digest)
        passage = Passage(
            n=len(passages) + 1,
            chunk_id=str(result.chunk_id),
            document_id=result.document_id,
            title=result.title,
            url=result.url,
            source=result.source,
            snippet=snippet_safe_html(result.snippet),
            text=result.text.strip(),
            heading_path=tuple(result.heading_path or ()),
            similarity=similarities.get(str(result.chunk_id)),
            page=chunk_page(result.metadata),
        )
        cost = _count_tokens(tokenizer, passage.prompt_text()) + 2  # the blank line between passages
        if used + cost > budget_tokens:
            room = budget_tokens - used - (cost - _count_tokens(tokenizer, passage.text))
            if room >= MIN_PASSAGE_TOKENS:
                passages.append(_replace_text(passage, _cut_to_tokens(tokenizer, passage.text, room)))
            break
        passages.append(passage)
        used += cost
    return passages


def _count_tokens(tokenizer, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False).ids)


def _cut_to_tokens(tokenizer, text: str, tokens: int) -> str:
    """The longest start of ``text`` within ``tokens`` tokens, ending at a sentence if one ends late enough."""
    encoding = tokenizer.encode(text, add_special_tokens=False)
    if len(encoding.ids) <= tokens:
        return text
    end = encoding.offsets[max(tokens - 2, 0)][1]  # room for the ellipsis
    cut = text[:end]
    sentence_end = max(cut.rfind(". "), cut.rfind("? "), cut.rfind("! "), cut.rfind("\n"))
    if sentence_end > len(cut) // 2:
        return cut[: sentence_end + 1].rstrip()
    return cut.rstrip() + " …"


def _replace_text(passage: Passage, text: str) -> Passage:
    return replace(passage, text=text)
