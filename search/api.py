"""GET /api/search/ and POST /api/ask/: the search and answer contracts of DESIGN.md.

Search runs search.selectors.chunk_search; ask runs search.answers (retrieve, answer, check citations).
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.validators import RegexValidator
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.views import APIView

from documents.chunking import chunk_page
from documents.selectors import source_by_id_or_name
from ragsite.api import MAX_ID, ApiError, object_id
from search.filters import SearchFilters
from search.selectors import MODES, SearchUnavailable, chunk_search

logger = logging.getLogger(__name__)


# The schema's patterns are the API's own checks (drf-spectacular publishes a RegexValidator as
# `pattern`), so a client generated from it sends only what is accepted.
NOT_BLANK = RegexValidator(r"\S", "This field may not be blank.")
# 1 to 18 digits, no 0: within PostgreSQL's bigint whatever the digits.
DOCUMENT_IDS = RegexValidator(
    r"^\s*0*[1-9][0-9]{0,17}(\s*,\s*0*[1-9][0-9]{0,17})*\s*$",
    "document takes ids (1 to 18 digits) separated by commas.",
)
METADATA_PAIR = RegexValidator(r"^\s*[^:\s][^:]*:", "Give key:value.")


class SearchParams(serializers.Serializer):
    q = serializers.CharField(
        trim_whitespace=True, validators=[NOT_BLANK], help_text='The query: words, "quoted phrases", -exclusions.'
    )
    mode = serializers.ChoiceField(
        choices=MODES, required=False, help_text="keyword, semantic or hybrid; default SEARCH_DEFAULT_MODE."
    )
    limit = serializers.IntegerField(
        required=False, default=10, min_value=1, help_text="Results per page (at most SEARCH_MAX_LIMIT)."
    )
    offset = serializers.IntegerField(
        required=False, default=0, min_value=0, help_text="Results to skip (at most SEARCH_MAX_OFFSET)."
    )
    source = serializers.CharField(required=False, help_text="Source id or name; several separated by commas.")
    document = serializers.CharField(
        required=False, validators=[DOCUMENT_IDS], help_text="Document id; several separated by commas."
    )
    metadata = serializers.ListField(
        child=serializers.CharField(validators=[METADATA_PAIR]),
        required=False,
        help_text="key:value on document metadata; repeatable.",
    )
    rerank = serializers.BooleanField(
        required=False,
        help_text="Reorder the best RERANK_TOP_N results through the rerank endpoint (RERANK_URL); "
        "default SEARCH_RERANK.",
    )

    def validate_q(self, value):
        if not value.strip():
            raise serializers.ValidationError("The query is empty.")
        if len(value) > settings.SEARCH_MAX_QUERY_CHARS:
            raise serializers.ValidationError(f"The query is longer than {settings.SEARCH_MAX_QUERY_CHARS} characters.")
        return value

    def validate_limit(self, value):
        if value > settings.SEARCH_MAX_LIMIT:
            raise serializers.ValidationError(f"limit is at most {settings.SEARCH_MAX_LIMIT}.")
        return value

    def validate_offset(self, value):
        if value > settings.SEARCH_MAX_OFFSET:
            raise serializers.ValidationError(f"offset is at most {settings.SEARCH_MAX_OFFSET}.")
        return value

    def validate_document(self, value):
        parts = [part for part in value.split(",") if part.strip()]
        ids = [object_id(part) for part in parts]
        if not ids or None in ids:
            raise serializers.ValidationError(f"document takes ids (1 to {MAX_ID}) separated by commas.")
        return ids

    def validate_source(self, value):
        ids: list[int] = []
        for part in (p.strip() for p in value.split(",")):
            if not part:
                continue
            source = source_by_id_or_name(part)
            if source is None:
                raise serializers.ValidationError(f"No source with id or name {part!r}.")
            ids.append(source.pk)
        if not ids:
            raise serializers.ValidationError("source is empty.")
        return ids

    def validate_rerank(self, value):
        from search.rerank import rerank_enabled

        if value and not rerank_enabled():
            raise serializers.ValidationError("No rerank endpoint is configured (set RERANK_URL).")
        return value

    def validate_metadata(self, value):
        pairs: dict[str, str] = {}
        for item in value:
            key, sep, val = item.partition(":")
            if not sep or not key.strip() or len(key) > 100:
                raise serializers.ValidationError(f"{item!r} is not key:value.")
            pairs[key.strip()] = val.strip()
        return pairs


def search_params(query_params) -> dict:
    data = {k: v for k, v in query_params.items() if k != "metadata"}
    if "metadata" in query_params:
        data["metadata"] = query_params.getlist("metadata")
    params = SearchParams(data=data)
    params.is_valid(raise_exception=True)
    return params.validated_data


def search_rerank(validated: dict) -> bool:
    """Rerank when asked for, else by SEARCH_RERANK (which needs RERANK_URL, checked at start-up)."""
    return validated.get("rerank", settings.SEARCH_RERANK)


def search_filters(validated: dict) -> SearchFilters:
    return SearchFilters(
        source_ids=validated.get("source"),
        document_ids=validated.get("document"),
        metadata=validated.get("metadata") or None,
    )


class SearchResultSerializer(serializers.Serializer):
    chunk_id = serializers.UUIDField()
    document_id = serializers.IntegerField()
    title = serializers.CharField()
    url = serializers.CharField()
    source = serializers.CharField()
    snippet = serializers.CharField(help_text="HTML-escaped text; matched terms wrapped in <mark>.")
    score = serializers.FloatField()
    rank = serializers.IntegerField()
    heading_path = serializers.ListField(child=serializers.CharField())
    page = serializers.IntegerField(
        allow_null=True, help_text="Where the chunk starts: PDF or TIFF page, or slide number (null: no pages)."
    )
    metadata = serializers.DictField()
    rerank_score = serializers.FloatField(required=False, help_text="The rerank endpoint's score (reranked hits).")
    low_confidence = serializers.BooleanField(
        help_text="The evidence for this hit is weak on both sides (low similarity, few of the query's words)."
    )


class SearchResponseSerializer(serializers.Serializer):
    query = serializers.CharField()
    mode = serializers.ChoiceField(choices=MODES)
    count = serializers.IntegerField(help_text="Results available within the candidate depth (after grouping).")
    results = SearchResultSerializer(many=True)
    took_ms = serializers.FloatField()
    warnings = serializers.ListField(child=serializers.CharField(), required=False)
    reranked = serializers.BooleanField(required=False, help_text="Present when a rerank was asked for.")
    rerank_error = serializers.CharField(required=False, help_text="Why the results were not reranked.")


def search_response_body(response) -> dict:
    body = {
        "query": response.query,
        "mode": response.mode,
        "count": response.count,
        "results": [
            {
                "chunk_id": r.chunk_id,
                "document_id": r.document_id,
                "title": r.title,
                "url": r.url,
                "source": r.source,
                "snippet": r.snippet,
                "score": r.score,
                "rank": r.rank,
                "heading_path": r.heading_path,
                "page": chunk_page(r.metadata),
                "metadata": r.metadata,
                "low_confidence": r.low_confidence,
            }
            for r in response.results
        ],
        "took_ms": response.took_ms,
    }
    for hit, result in zip(body["results"], response.results, strict=True):
        if result.rerank_score is not None:
            hit["rerank_score"] = result.rerank_score
    if response.warnings:
        body["warnings"] = response.warnings
    if response.reranked is not None:
        body["reranked"] = response.reranked
        if response.rerank_error:
            body["rerank_error"] = response.rerank_error
    return body


class SearchView(APIView):
    error_statuses = (503,)  # semantic/hybrid with the vector store or the embedder down

    @extend_schema(
        summary="Search chunks",
        description=(
            "Ranked passages (at most one per document by default) with snippets. `mode`: keyword (PostgreSQL "
            "full text), semantic (vectors) or hybrid (both, fused by reciprocal rank; the default is "
            "SEARCH_DEFAULT_MODE). Filter by source, document and document metadata."
        ),
        parameters=[SearchParams],
        responses={200: SearchResponseSerializer},
        examples=[
            OpenApiExample(
                "Hybrid",
                value={
                    "query": "how is green tea made",
                    "mode": "hybrid",
                    "count": 1,
                    "results": [
                        {
                            "chunk_id": "6f1c9f0e-3b7a-4c1e-9d0e-2a1b3c4d5e6f",
                            "document_id": 7,
                            "title": "Tea",
                            "url": "https://example.com/tea",
                            "source": "notes",
                            "snippet": "<mark>Green</mark> <mark>tea</mark> is steamed",
                            "score": 0.0325,
                            "rank": 1,
                            "heading_path": [],
                            "page": None,
                            "metadata": {},
                            "low_confidence": False,
                        }
                    ],
                    "took_ms": 21.4,
                },
                response_only=True,
            )
        ],
    )
    def get(self, request):
        params = search_params(request.query_params)
        try:
            response = chunk_search(
                params["q"],
                mode=params.get("mode"),
                limit=params["limit"],
                offset=params["offset"],
                filters=search_filters(params),
                rerank=search_rerank(params),
            )
        except SearchUnavailable as exc:
            raise ApiError(str(exc), code="semantic_unavailable", status_code=503) from exc
        from rest_framework.response import Response

        return Response(search_response_body(response))


# --- POST /api/ask/ ---------------------------------------------------------------------------


class AskParams(serializers.Serializer):
    question = serializers.CharField(
        allow_blank=True, trim_whitespace=True, validators=[NOT_BLANK], help_text="A question in plain words."
    )
    mode = serializers.ChoiceField(
        choices=MODES, required=False, help_text="Retrieval mode; default SEARCH_DEFAULT_MODE."
    )
    source = serializers.CharField(required=False, help_text="Source id or name; several separated by commas.")
    limit = serializers.IntegerField(
        required=False, min_value=1, help_text="How many passages to retrieve before the token budget (default 8)."
    )
    stream = serializers.BooleanField(
        required=False, default=False, help_text="Answer as server-sent events: citations, delta..., done (or error)."
    )
    rerank = serializers.BooleanField(
        required=False, help_text="Rerank the retrieved passages (RERANK_URL); default SEARCH_RERANK."
    )
    conversation = serializers.UUIDField(
        required=False,
        help_text="Continue this conversation (its earlier turns shape the search); absent: a new one.",
    )

    validate_source = SearchParams.validate_source
    validate_rerank = SearchParams.validate_rerank

    def validate_question(self, value):
        if not value.strip():
            raise serializers.ValidationError("The question is empty.")
        if len(value) > settings.SEARCH_MAX_QUERY_CHARS:
            raise serializers.ValidationError(
                f"The question is longer than {settings.SEARCH_MAX_QUERY_CHARS} characters."
            )
        return value

    def validate_limit(self, value):
        maximum = settings.ASK_MAX_LIMIT
        if value > maximum:
            raise serializers.ValidationError(f"limit is at most {maximum}.")
        return value


class CitationSerializer(serializers.Serializer):
    n = serializers.IntegerField(help_text="The number that [n] in the answer refers to.")
    chunk_id = serializers.UUIDField()
    document_id = serializers.IntegerField()
    title = serializers.CharField()
    url = serializers.CharField()
    source = serializers.CharField()
    snippet = serializers.CharField(help_text="HTML-escaped text; the question's words wrapped in <mark>.")
    heading_path = serializers.ListField(child=serializers.CharField())
    cited = serializers.BooleanField(help_text="Whether the answer cites this passage (all were given to it).")


class ClosestSerializer(serializers.Serializer):
    document_id = serializers.IntegerField()
    title = serializers.CharField()
    url = serializers.CharField()


class AskResponseSerializer(serializers.Serializer):
    question = serializers.CharField()
    answer = serializers.CharField(help_text="Plain text; every [n] marker is the n of a citation below.")
    citations = CitationSerializer(many=True, help_text="The passages the answer was given, in order.")
    provider = serializers.ChoiceField(choices=["openai", "extractive"])
    model = serializers.CharField()
    mode = serializers.ChoiceField(choices=MODES)
    found = serializers.BooleanField(help_text="False when nothing relevant was found (or the model did not know).")
    took_ms = serializers.FloatField()
    warnings = serializers.ListField(child=serializers.CharField(), required=False)
    reranked = serializers.BooleanField(required=False, help_text="Present when a rerank was asked for.")
    rerank_error = serializers.CharField(required=False, help_text="Why the passages were not reranked.")
    status = serializers.ChoiceField(
        choices=["answered", "not_found"], help_text="not_found: the documents do not cover the question."
    )
    conversation = serializers.UUIDField(help_text="The conversation this turn belongs to (send it with a follow-up).")
    searched_for = serializers.CharField(help_text="The standalone query that was searched (a follow-up, rewritten).")
    rewritten_by = serializers.ChoiceField(choices=["none", "rule", "llm"])
    closest = ClosestSerializer(many=True, help_text="When not found: the closest documents' titles.")


def ask_status(answer) -> str:
    return "answered" if answer.found else "not_found"


def ask_response_body(answer) -> dict:
    from search.answers.generate import citation_body

    cited = set(answer.cited)
    body = {
        "question": answer.question,
        "answer": answer.text,
        "citations": [citation_body(p, cited=p.n in cited) for p in answer.passages],
        "provider": answer.provider,
        "model": answer.model,
        "mode": answer.mode,
        "found": answer.found,
        "took_ms": answer.took_ms,
    }
    if answer.warnings:
        body["warnings"] = answer.warnings
    if answer.reranked is not None:
        body["reranked"] = answer.reranked
        if answer.rerank_error:
            body["rerank_error"] = answer.rerank_error
    body["status"] = ask_status(answer)
    body["closest"] = [] if answer.found else list(answer.closest)
    return body


def sse_event(event: str, data: dict) -> bytes:
    import json

    # One JSON line per event: JSON never holds a raw newline, so it cannot end the event early.
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def ask_begin(data: dict, *, owner: str) -> AskTurn:
    """Retrieval for a validated ask (AskParams): the conversation's history shapes the query.

    Shared by POST /api/ask/ and the MCP ``ask`` tool. Raises ApiError (404 naming
    ``conversation`` for someone else's or an unknown one; 503 when vectors cannot be searched).
    """
    from search.answers.retrieval import answer_retrieve
    from search.conversations import (
        ConversationNotFound,
        conversation_get,
        conversation_history,
        conversation_start,
        standalone_query,
    )

    conversation = None
    if data.get("conversation"):
        try:
            conversation = conversation_get(conversation_id=data["conversation"], owner=owner)
        except ConversationNotFound as exc:
            raise ApiError(str(exc), field="conversation", code="not_found", status_code=404) from exc
    history = conversation_history(conversation)
    rewrite = standalone_query(data["question"], history)
    try:
        context = answer_retrieve(
            question=data["question"],
            mode=data.get("mode"),
            limit=data.get("limit"),
            filters=SearchFilters(source_ids=data.get("source")),
            rerank=search_rerank(data),
            searched_for=rewrite.query,
        )
    except SearchUnavailable as exc:
        raise ApiError(str(exc), code="semantic_unavailable", status_code=503) from exc
    context.history = [(turn.question, turn.answer) for turn in history]
    if rewrite.warning:
        context.warnings.append(rewrite.warning)
    new = conversation is None
    if conversation is None:
        conversation = conversation_start(owner=owner, question=data["question"])
    return AskTurn(conversation=conversation, new=new, rewrite=rewrite, context=context)


def ask_finish(turn: AskTurn) -> dict:
    """Answer a begun ask (not streamed), record the turn, and return the response body."""
    from search.answers.errors import AnswerError
    from search.answers.generate import answer_generate, answer_provider

    try:
        answer = answer_generate(context=turn.context, provider=answer_provider())
    except AnswerError as exc:
        turn.abandon()
        raise ApiError(exc.message, code=exc.code, status_code=exc.status) from exc
    body = ask_response_body(answer)
    turn.record(
        answer=answer.text,
        status=body["status"],
        provider=answer.provider,
        model=answer.model,
        citations=body["citations"],
        took_ms=answer.took_ms,
    )
    return {**body, **turn.fields()}


class AskTurn:
    """One question of a conversation, recorded once its answer is complete (streamed or not)."""

    def __init__(self, *, conversation, new: bool, rewrite, context) -> None:
        self.conversation = conversation
        self.new = new
        self.rewrite = rewrite
        self.context = context

    def fields(self) -> dict:
        return {
            "conversation": str(self.conversation.pk),
            "searched_for": self.rewrite.query,
            "rewritten_by": self.rewrite.rewritten_by,
        }

    def record(self, *, answer: str, status: str, provider: str, model: str, citations: list, took_ms: float) -> None:
        from search.conversations import ConversationNotFound, turn_record

        try:
            turn_record(
                conversation=self.conversation,
                question=self.context.question,
                rewrite=self.rewrite,
                answer=answer,
                status=status,
                mode=self.context.mode,
                provider=provider,
                model=model,
                citations=citations,
                timings={
                    "rewrite_ms": self.rewrite.took_ms,
                    "retrieve_ms": self.context.took_ms,
                    "total_ms": round(took_ms + self.rewrite.took_ms, 2),
                },
            )
        except ConversationNotFound:
            logger.info("conversation %s was deleted before its answer was recorded", self.conversation.pk)

    def abandon(self) -> None:
        from search.conversations import conversation_abandon

        if self.new:
            conversation_abandon(conversation=self.conversation)


def ask_stream(context, provider, turn: AskTurn):
    """Server-sent events: ``citations`` first, ``delta`` pieces, then ``done`` or ``error``."""
    from ragsite.api import error_body
    from search.answers.generate import answer_events, citation_body

    yield sse_event(
        "citations",
        {
            **turn.fields(),
            "question": context.question,
            "mode": context.mode,
            "provider": provider.name,
            "model": provider.model,
            "citations": [citation_body(p) for p in context.passages],
            **({"reranked": context.reranked} if context.reranked is not None else {}),
            **({"rerank_error": context.rerank_error} if context.rerank_error else {}),
        },
    )
    try:
        for event, data in answer_events(context=context, provider=provider, raise_errors=False):
            if event == "error":
                turn.abandon()
                yield sse_event("error", {**error_body(data["code"], data["message"]), "status": data["status"]})
            elif event == "done":
                status = "answered" if data["found"] else "not_found"
                cited = set(data["cited"])
                turn.record(
                    answer=data["answer"],
                    status=status,
                    provider=provider.name,
                    model=provider.model,
                    citations=[citation_body(p, cited=p.n in cited) for p in context.passages],
                    took_ms=data["took_ms"],
                )
                closest = [] if data["found"] else context.closest
                yield sse_event(event, {**data, "status": status, "closest": closest, **turn.fields()})
            else:
                yield sse_event(event, data)
    except Exception:
        # The status line has gone out; the only way left to say it failed is an event.
        logger.exception("answer stream failed")
        turn.abandon()
        yield sse_event("error", error_body("server_error", "The answer failed; the error has been logged."))


# One server-sent event, as a client's EventSource sees it (the schema of a text/event-stream
# response describes each event).
SSE_EVENT_SCHEMA = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": ["citations", "delta", "done", "error"]},
        "data": {
            "type": "string",
            "description": "JSON: citations {citations: [...]}; delta {text}; done {answer, cited, found, warnings, "
            "took_ms, ...}; error {error: {code, message, fields}, status}.",
        },
    },
    "required": ["event", "data"],
}


class AskView(APIView):
    # Asking reads the knowledge base: read-scoped keys, sessions and (with SEARCH_PUBLIC) anyone may POST.
    read_only_post = True
    # 404: a conversation id that is unknown or not the caller's; 502/503/504: the language model failed,
    # is rate-limited or timed out (503 also: vectors cannot be searched in semantic mode).
    error_statuses = (404, 502, 503, 504)

    def perform_content_negotiation(self, request, force=False):
        # A client that accepts only text/event-stream still gets its 4xx/5xx errors, as JSON.
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        summary="Answer a question with citations",
        description=(
            "Retrieves passages with the search of /api/search/, keeps the relevant ones within "
            "ASK_CONTEXT_TOKENS, and answers from them only: with the configured OpenAI-compatible model "
            "(LLM_MODEL) or, offline, with the best sentences. Every [n] in the answer is the n of a "
            "citation. Nothing relevant: found=false and a plain not-found answer. With stream=true the "
            "response is text/event-stream: `citations` (the passages), `delta` ({text}) pieces, then "
            "`done` ({answer, cited, found, warnings, took_ms}), or `error` ({error: {code, message}}). "
            "Language-model failures: 504 llm_timeout, 503 llm_rate_limited, 502 llm_auth_failed / llm_unavailable."
        ),
        request=AskParams,
        responses={
            200: AskResponseSerializer,
            (200, "text/event-stream"): OpenApiResponse(
                SSE_EVENT_SCHEMA,
                description="With stream=true: server-sent events `citations`, `delta`..., then `done` or `error`.",
            ),
        },
        examples=[
            OpenApiExample(
                "Question", value={"question": "How is green tea made?", "mode": "hybrid"}, request_only=True
            ),
            OpenApiExample(
                "Answer",
                value={
                    "question": "How is green tea made?",
                    "answer": "Green tea is steamed or pan-fired soon after picking [1].",
                    "citations": [
                        {
                            "n": 1,
                            "chunk_id": "6f1c9f0e-3b7a-4c1e-9d0e-2a1b3c4d5e6f",
                            "document_id": 7,
                            "title": "Tea",
                            "url": "https://example.com/tea",
                            "source": "notes",
                            "snippet": "<mark>Green</mark> <mark>tea</mark> is steamed",
                            "heading_path": ["Processing"],
                            "cited": True,
                        }
                    ],
                    "provider": "extractive",
                    "model": "all-MiniLM-L6-v2",
                    "mode": "hybrid",
                    "found": True,
                    "took_ms": 84.2,
                    "status": "answered",
                    "conversation": "0b6f3e0e-8f5c-4c55-9d5e-3c1f2f7a9b10",
                    "searched_for": "How is green tea made?",
                    "rewritten_by": "none",
                    "closest": [],
                },
                response_only=True,
            ),
        ],
    )
    def post(self, request):
        from django.http import StreamingHttpResponse
        from rest_framework.response import Response

        from search.answers.generate import answer_provider
        from search.conversations import conversation_owner

        params = AskParams(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        turn = ask_begin(data, owner=conversation_owner(request))
        if data["stream"]:
            response = StreamingHttpResponse(
                ask_stream(turn.context, answer_provider(), turn), content_type="text/event-stream"
            )
            response["Cache-Control"] = "no-cache"
            response["X-Accel-Buffering"] = "no"  # nginx would otherwise hold the events back
            return response
        return Response(ask_finish(turn))
