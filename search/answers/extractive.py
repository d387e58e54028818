"""Offline answers: the question's best sentences from the passages, each cited."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from search.answers.errors import AnswerUnavailable
from search.answers.passages import Passage, _normalised
from search.answers.providers import AnswerProvider, Exchange
from search.relevance import content_terms as _terms
from search.snippet_markup import markup_strip

# Splits after . ! ? (and closing quotes/brackets) when the next sentence starts like one.
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])[\"'\u201d\u2019)\]]*\s+(?=[\"'\u201c\u2018(\[]?[A-Z0-9])")
_ABBREVIATION_END = re.compile(r"\b(?:e\.g|i\.e|etc|vs|cf|al|Dr|Mr|Mrs|Ms|Prof|St|Fig|No|approx)\.$", re.IGNORECASE)
_LIST_PREFIX = re.compile(r"^\s*(?:[-*•+]|\d{1,3}[.)])\s+")


@dataclass
class _Sentence:
    passage: Passage
    position: int
    text: str


# Lines that are not prose: headings, table rows, block quotes' markers are kept apart.
_NOT_PROSE = re.compile(r"^\s*(?:#{1,6}(?:\s|$)|\|)")
_FENCE = re.compile(r"^\s*(?:```|~~~)")
_SENTENCE_END = re.compile(r"[.!?\u2026][\"'\u201d\u2019)\]]*$")


def passage_paragraphs(text: str) -> list[tuple[str, bool]]:
    """``(paragraph, is_list_item)``: hard-wrapped lines joined with spaces, headings, tables and code left out.

    A single newline inside a paragraph is a line wrap, not a sentence end (text files wrapped at
    72 columns, Markdown source, text extracted from HTML or PDF); a blank line, a list item, a
    heading, a table row or a code fence ends the paragraph.
    """
    paragraphs: list[tuple[str, bool]] = []
    current: list[str] = []
    is_item = False
    in_code = False

    def end() -> None:
        nonlocal current, is_item
        if current:
            paragraphs.append((" ".join(current), is_item))
        current, is_item = [], False

    for raw in text.splitlines():
        if _FENCE.match(raw):
            end()
            in_code = not in_code
            continue
        line = raw.strip()
        if in_code or not line or _NOT_PROSE.match(line):
            end()
            continue
        if line.startswith(">"):
            line = line.lstrip("> ").strip()
        item = _LIST_PREFIX.match(line)
        if item:
            end()
            is_item = True
            line = line[item.end() :].strip()
        if line:
            current.append(line)
    end()
    return paragraphs


def _split_sentences(paragraph: str) -> list[str]:
    pieces: list[str] = []
    for piece in _SENTENCE_BREAK.split(paragraph):
        if pieces and _ABBREVIATION_END.search(pieces[-1]):
            pieces[-1] = f"{pieces[-1]} {piece}"
        else:
            pieces.append(piece)
    return [piece.strip() for piece in pieces if piece.strip()]


def passage_sentences(passage: Passage, *, max_words: int = 80) -> list[_Sentence]:
    """The passage's whole sentences, without headings, list bullets or the pieces a chunk cut.

    A chunk may start inside a sentence (a lower-case first fragment) and end inside one (a last
    prose fragment with no closing punctuation): both are left out, as is a "sentence" of more
    than ``max_words`` words (a table or a list run together), so an answer never quotes half a
    sentence.
    """
    sentences: list[_Sentence] = []
    paragraphs = passage_paragraphs(passage.text)
    for number, (paragraph, is_item) in enumerate(paragraphs):
        pieces = _split_sentences(paragraph)
        for index, piece in enumerate(pieces):
            words = piece.split()
            if len(words) < 4 or len(words) > max_words:
                continue
            if number == 0 and index == 0 and piece[0].islower():
                continue  # the tail of a sentence cut by the chunk's start
            last = number == len(paragraphs) - 1 and index == len(pieces) - 1
            if last and not is_item and not _SENTENCE_END.search(piece):
                continue  # the head of a sentence cut by the chunk's end
            # Quoted as a person reads it: a Markdown source's **, [text](url) and `code` marks out.
            text = " ".join(markup_strip(piece).split())
            if text:
                sentences.append(_Sentence(passage=passage, position=len(sentences), text=text))
    return sentences


def _with_marker(sentence: str, n: int) -> str:
    """``Green tea is steamed [1].``: the marker goes before the closing punctuation."""
    match = re.search(r"([.!?…]+[\"'\u201d\u2019)\]]*)$", sentence)
    if match:
        return f"{sentence[: match.start()].rstrip()} [{n}]{match.group(1)}"
    return f"{sentence} [{n}]."


class ExtractiveProvider(AnswerProvider):
    """The question's best sentences from the passages, each followed by its citation.

    Score = 0.7 x cosine(question, sentence) with the local embedder + 0.3 x the idf-weighted
    share of the question's content words that the sentence contains, plus a small bonus for the
    better-ranked passages. Then 2-4 sentences: the best, and the next ones while they stay close
    to it, skipping near-duplicates. Neighbouring sentences of a passage stay together in their
    order, so the answer reads like an excerpt; otherwise the best comes first.
    """

    name = "extractive"
    streams = False
    max_sentences = 4
    min_sentences = 2
    max_candidates = 96

    @property
    def model(self) -> str:  # type: ignore[override]
        from vectors.embedders import get_embedder

        try:
            return get_embedder().model_id
        except Exception:  # informative only; a broken embedder fails loudly when answering
            return ""

    def stream(self, *, question: str, passages: Sequence[Passage], history: Sequence[Exchange] = ()) -> Iterator[str]:
        # The history shaped the passages (the standalone query that found them); the sentences
        # are chosen for the question as asked.
        chosen = self.select(question=question, passages=passages)
        for index, sentence in enumerate(chosen):
            yield ("" if index == 0 else " ") + _with_marker(sentence.text, sentence.passage.n)

    def select(self, *, question: str, passages: Sequence[Passage]) -> list[_Sentence]:
        from vectors.embedders import EmbeddingError, get_embedder

        candidates: list[_Sentence] = []
        seen: set[str] = set()
        for passage in passages:
            for sentence in passage_sentences(passage):
                key = _normalised(sentence.text)
                if key not in seen:  # overlapping chunks repeat sentences
                    seen.add(key)
                    candidates.append(sentence)
        if not candidates:
            return []
        question_terms = _terms(question)
        sentence_terms = [_terms(s.text) for s in candidates]
        document_frequency: dict[str, int] = {}
        for terms in sentence_terms:
            for term in terms:
                document_frequency[term] = document_frequency.get(term, 0) + 1
        total = len(candidates)

        def idf(term: str) -> float:
            return math.log(1 + (total + 1) / (document_frequency.get(term, 0) + 0.5))

        question_weight = sum(idf(t) for t in question_terms) or 1.0
        overlap = np.array(
            [sum(idf(t) for t in question_terms & terms) / question_weight for terms in sentence_terms],
            dtype=np.float32,
        )
        if len(candidates) > self.max_candidates:
            # Embedding costs about a millisecond a sentence on a CPU; keep the likeliest ones.
            keep = sorted(
                range(len(candidates)), key=lambda i: (-overlap[i], candidates[i].passage.n, candidates[i].position)
            )[: self.max_candidates]
            keep.sort()
            candidates = [candidates[i] for i in keep]
            overlap = overlap[keep]
        try:
            embedder = get_embedder()
            query = np.asarray(embedder.embed_query(question), dtype=np.float32)
            vectors = np.asarray(embedder.embed_documents([s.text for s in candidates]), dtype=np.float32)
        except (EmbeddingError, OSError) as exc:
            raise AnswerUnavailable(f"The local embedder failed, so no answer could be extracted: {exc}") from exc
        similarity = vectors @ query
        count = max(p.n for p in passages)
        rank_bonus = np.array([0.05 * (1 - (s.passage.n - 1) / max(count, 1)) for s in candidates], dtype=np.float32)
        scores = 0.7 * similarity + 0.3 * overlap + rank_bonus

        order = np.argsort(-scores, kind="stable")
        best = float(scores[order[0]])
        picked: list[int] = []
        for index in order:
            if len(picked) >= self.max_sentences:
                break
            if len(picked) >= self.min_sentences and float(scores[index]) < 0.75 * best:
                break
            if any(float(vectors[index] @ vectors[other]) > 0.9 for other in picked):
                continue  # says the same as a sentence already chosen
            picked.append(int(index))
        # Neighbouring sentences of one passage stay together and in order (a "they" keeps its
        # referent); such runs, and lone sentences, come best first.
        picked.sort(key=lambda i: (candidates[i].passage.n, candidates[i].position))
        runs: list[list[int]] = []
        for index in picked:
            previous = runs[-1][-1] if runs else None
            if (
                previous is not None
                and candidates[previous].passage.n == candidates[index].passage.n
                and candidates[index].position == candidates[previous].position + 1
            ):
                runs[-1].append(index)
            else:
                runs.append([index])
        runs.sort(key=lambda run: -max(float(scores[i]) for i in run))
        return [candidates[i] for run in runs for i in run]
