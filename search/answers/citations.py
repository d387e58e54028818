"""Citation markers: every ``[n]`` in an answer names a passage that was given."""

from __future__ import annotations

import re

from search.answers.passages import _normalised

# A citation marker: [1], [1, 2], [1; 3], [2-4]. Anything else in brackets is left alone.
_MARKER = re.compile(r"(\s*)\[(\s*\d{1,4}\s*(?:(?:,|;|-|\u2013)\s*\d{1,4}\s*)*)\]")
# The start of a marker that may complete in the next chunk of a stream (with its leading space).
_PARTIAL_MARKER = re.compile(r"\s*\[[\d\s,;\-\u2013]{0,24}$")
_TRAILING_SPACE = re.compile(r"\s+$")


class CitationFilter:
    """Makes every ``[n]`` in an answer refer to one of the ``count`` passages given.

    Feed it the answer in pieces (a stream) or whole; what it returns is safe to show at once.
    A dropped marker takes its leading space with it ("steamed [9]." -> "steamed."), which is
    why trailing whitespace is held back until the next piece shows what follows it.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self.cited: list[int] = []
        self.dropped: list[str] = []
        self._pending = ""
        self._parts: list[str] = []
        self._run: set[int] = set()  # numbers in the markers just emitted, with no words after them

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def feed(self, piece: str) -> str:
        buffer = self._pending + (piece or "")
        hold = _PARTIAL_MARKER.search(buffer) or _TRAILING_SPACE.search(buffer)
        cut = hold.start() if hold else len(buffer)
        self._pending = buffer[cut:]
        return self._emit(buffer[:cut])

    def flush(self) -> str:
        rest, self._pending = self._pending, ""
        return self._emit(rest)

    def _emit(self, text: str) -> str:
        if not text:
            return ""
        out: list[str] = []
        position = 0
        for match in _MARKER.finditer(text):
            if match.start() > position:
                self._run = set()  # words since the last marker: a repeated number is a new citation
            out.append(text[position : match.start()])
            out.append(self._replace(match))
            position = match.end()
        if position < len(text):
            self._run = set()
        out.append(text[position:])
        cleaned = "".join(out)
        if not self._parts:
            cleaned = cleaned.lstrip()
        self._parts.append(cleaned)
        return cleaned

    def _replace(self, match: re.Match) -> str:
        numbers: list[int] = []
        for part in re.split(r"[,;]", match.group(2)):
            low, _, high = re.sub(r"\s", "", part).replace("\u2013", "-").partition("-")
            first = int(low)
            last = int(high) if high else first
            if not first <= last <= first + 20:
                last = first  # a backwards or huge range: keep its first number only
            numbers.extend(range(first, last + 1))
        valid = []
        for number in numbers:
            if 1 <= number <= self.count and number not in valid:
                valid.append(number)
            elif not 1 <= number <= self.count:
                self.dropped.append(str(number))
        for number in valid:
            if number not in self.cited:
                self.cited.append(number)
        valid = [n for n in valid if n not in self._run]  # "[2][2]" says it once
        self._run.update(valid)
        if not valid:
            return ""
        return match.group(1) + "".join(f"[{n}]" for n in valid)


def citations_clean(text: str, *, count: int) -> tuple[str, list[int]]:
    """``(text with only markers 1..count, cited numbers in order of first mention)``."""
    cleaner = CitationFilter(count)
    cleaner.feed(text)
    cleaner.flush()
    return cleaner.text.strip(), cleaner.cited


def _is_dont_know(text: str) -> bool:
    head = _normalised(text)[:40]
    return head.startswith(("i don t know", "i do not know", "i dont know"))
