"""The interface every answer provider implements."""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence

from search.answers.passages import Passage

# An earlier turn of a conversation: (question, answer).
Exchange = tuple[str, str]


class AnswerProvider(abc.ABC):
    """Answers a question from numbered passages; markers ``[n]`` cite them."""

    name: str = ""
    model: str = ""
    # True when ``stream`` yields text as it is generated (worth showing piece by piece).
    streams: bool = False

    @abc.abstractmethod
    def stream(self, *, question: str, passages: Sequence[Passage], history: Sequence[Exchange] = ()) -> Iterator[str]:
        """The answer in pieces. ``history``: the conversation's earlier turns, oldest first. Raises AnswerError."""

    def answer(self, *, question: str, passages: Sequence[Passage], history: Sequence[Exchange] = ()) -> str:
        return "".join(self.stream(question=question, passages=passages, history=history))
