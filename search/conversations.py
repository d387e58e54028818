"""Conversations: follow-up questions searched with what came before, and kept for their owner.

A follow-up ("and what about its side effects?") retrieves nothing useful on its own, so before
searching it is rewritten into a standalone query:

- by the LLM when one is configured (``LLM_MODEL``, ``ASK_REWRITE_WITH_LLM``): one short call
  with the prompt in ``search/prompts/rewrite_query.txt``; on any failure the offline rule;
- otherwise by a deterministic rule: a question that is short, or that refers back (a pronoun,
  or a lead such as "and", "what about"), gets the salient words of the previous turn's query
  added. A question that stands alone is searched as it is.

The rewritten query is returned with the answer (``searched_for``), so users see why they got
what they got. Writes live here (``conversation_*``, ``turn_record``); the API and the page are
thin shells over them.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from search.models import Conversation, Turn

logger = logging.getLogger(__name__)

REWRITE_PROMPT = (Path(__file__).parent / "prompts" / "rewrite_query.txt").read_text(encoding="utf-8")
MAX_CARRIED_TERMS = 6
MAX_QUERY_CHARS = 500
PURGE_INTERVAL = 3600  # seconds between retention purges in one process

_WORD = re.compile(r"[^\W_]+(?:[-'\u2019][^\W_]+)*")
_REFERRING = frozenset(
    "it its it's itself they them their theirs themselves this that these those he him his she her hers "
    "one ones there such former latter same".split()
)
_LEADS = re.compile(r"^\s*(?:and|but|also|so|then|or|what about|how about|what of|why not|and what|and how)\b", re.I)
# Words that say nothing about the subject: kept out of the carried terms and of the "short" count.
_FUNCTION_WORDS = (
    frozenset(
        """a about above after again against all am an and any are as at be because been before being below between
    both but by can could did do does doing down during each few for from further had has have having here how
    i if in into is just me more most my no nor not now of off on once only or other our out over own should so
    some than then to too under until up very was we were what when where which while who whom why will with would
    you your tell explain describe please much many also else like know get make give show mean means""".split()
    )
    | _REFERRING
)


class ConversationNotFound(Exception):
    """No conversation with this id belongs to the caller (the API answers 404)."""


@dataclass
class Rewrite:
    query: str
    rewritten_by: str  # "none", "rule" or "llm"
    took_ms: float
    warning: str = ""


# --- owners ---------------------------------------------------------------------------------------


def conversation_owner(request) -> str:
    """Who the request acts for: an API key, a signed-in user, or an anonymous visitor's session."""
    from accounts.models import ApiKey

    if isinstance(getattr(request, "auth", None), ApiKey):
        return f"key:{request.auth.pk}"
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and getattr(user, "pk", None):
        return f"user:{user.pk}"
    session = request.session
    if not session.session_key:
        session.save()
    return f"session:{session.session_key}"


def conversation_get(*, conversation_id, owner: str) -> Conversation:
    conversation = Conversation.objects.filter(pk=conversation_id, owner=owner).first()
    if conversation is None:
        raise ConversationNotFound(f"No conversation {conversation_id} of yours.")
    return conversation


def conversation_delete(*, conversation: Conversation) -> None:
    conversation.delete()


def conversation_history(conversation: Conversation | None) -> list[Turn]:
    """The last ASK_HISTORY_TURNS turns, oldest first."""
    if conversation is None or settings.ASK_HISTORY_TURNS == 0:
        return []
    turns = list(conversation.turns.order_by("-position")[: settings.ASK_HISTORY_TURNS])
    return list(reversed(turns))


def conversation_start(*, owner: str, question: str) -> Conversation:
    """A new conversation for ``owner``, titled by its first question."""
    _purge_now_and_then()
    return Conversation.objects.create(owner=owner, title=" ".join(question.split())[:200])


def conversation_abandon(*, conversation: Conversation) -> None:
    """Remove a conversation started for a question whose answer failed (if it has no turn)."""
    if not conversation.turns.exists():
        conversation.delete()


@transaction.atomic
def turn_record(
    *,
    conversation: Conversation,
    question: str,
    rewrite: Rewrite,
    answer: str,
    status: str,
    mode: str,
    provider: str,
    model: str,
    citations: list[dict],
    timings: dict,
) -> Turn:
    """Store a turn; positions are taken under the conversation's row lock (two tabs may ask at once)."""
    locked = Conversation.objects.select_for_update().filter(pk=conversation.pk).first()
    if locked is None:  # deleted by its owner while the answer was being written
        raise ConversationNotFound(f"Conversation {conversation.pk} was deleted.")
    last = locked.turns.order_by("-position").values_list("position", flat=True).first()
    turn = Turn.objects.create(
        conversation=locked,
        position=0 if last is None else last + 1,
        question=question,
        searched_for=rewrite.query,
        rewritten_by=rewrite.rewritten_by,
        answer=answer,
        status=status,
        citations=citations,
        mode=mode,
        provider=provider,
        model=model or "",
        timings=timings,
    )
    Conversation.objects.filter(pk=locked.pk).update(updated_at=timezone.now())
    return turn


_last_purge = 0.0


def conversations_purge() -> int:
    """Delete conversations whose last turn is older than CONVERSATION_RETENTION_DAYS."""
    cutoff = timezone.now() - timedelta(days=settings.CONVERSATION_RETENTION_DAYS)
    deleted, _ = Conversation.objects.filter(updated_at__lt=cutoff).delete()
    return deleted


def _purge_now_and_then() -> None:
    global _last_purge
    now = time.monotonic()
    if now - _last_purge >= PURGE_INTERVAL:
        _last_purge = now
        conversations_purge()


# --- the standalone query -------------------------------------------------------------------------


def standalone_query(question: str, history: list[Turn]) -> Rewrite:
    """The query to search for ``question`` given the conversation's earlier turns."""
    started = time.perf_counter()
    if not history:
        return Rewrite(query=question, rewritten_by="none", took_ms=0.0)
    warning = ""
    if settings.LLM_MODEL and settings.ASK_REWRITE_WITH_LLM:
        try:
            query = _llm_rewrite(question, history)
        except Exception as exc:  # any failure of the model: the offline rule still works
            logger.warning("query rewrite by the LLM failed, using the offline rule: %s", exc)
            warning = "The follow-up was rewritten by the offline rule: the language model failed."
        else:
            if query:
                return Rewrite(query=query, rewritten_by="llm", took_ms=_ms(started))
    query = rule_rewrite(question, [turn.searched_for for turn in history])
    return Rewrite(
        query=query,
        rewritten_by="rule" if query != question else "none",
        took_ms=_ms(started),
        warning=warning,
    )


def rule_rewrite(question: str, earlier_queries: list[str]) -> str:
    """The question, plus the previous query's salient words when it does not stand alone."""
    if not earlier_queries or not is_follow_up(question):
        return question
    asked = {word.casefold() for word in _WORD.findall(question)}
    carried: list[str] = []
    for word in _WORD.findall(earlier_queries[-1]):
        key = word.casefold()
        if key in _FUNCTION_WORDS or key in asked or len(key) < 2 or key in (c.casefold() for c in carried):
            continue
        carried.append(word)
        if len(carried) == MAX_CARRIED_TERMS:
            break
    if not carried:
        return question
    return f"{question.strip()} {' '.join(carried)}"[:MAX_QUERY_CHARS]


def is_follow_up(question: str) -> bool:
    """Short, pronoun-led, led by "and"/"what about", or referring back with a pronoun."""
    words = [word.casefold() for word in _WORD.findall(question)]
    if not words:
        return False
    content = [word for word in words if word not in _FUNCTION_WORDS]
    return (
        len(content) <= 2
        or words[0] in _REFERRING
        or bool(_LEADS.match(question))
        or any(word in _REFERRING for word in words)
    )


def _llm_rewrite(question: str, history: list[Turn]) -> str:
    from search.answers.llm import _openai_client

    lines = []
    for turn in history:
        lines.append(f"User: {turn.question}")
        lines.append(f"Assistant: {turn.answer[:600]}")
    lines.append(f"User: {question}")
    client = _openai_client(
        settings.OPENAI_API_KEY, settings.OPENAI_BASE_URL, min(float(settings.OPENAI_TIMEOUT), 10.0), 0
    )
    completion = client.chat.completions.create(
        model=settings.LLM_MODEL,
        messages=[
            {"role": "system", "content": REWRITE_PROMPT},
            {"role": "user", "content": "Conversation:\n" + "\n".join(lines) + "\n\nStandalone query:"},
        ],
        max_tokens=64,
    )
    text = (completion.choices[0].message.content or "").strip() if completion.choices else ""
    text = text.splitlines()[0].strip().strip("\"'") if text else ""
    return text[:MAX_QUERY_CHARS]


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
