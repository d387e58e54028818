"""The search page at ``/``: server-rendered search (works without JavaScript), Ask on top;
and the web app's own sign-in and sign-out (the admin keeps its own login page).

The page is a thin shell over the same selectors as the API: ``chunk_search`` for results and
``search.answers`` for an answer when the form is sent with "Ask" and JavaScript is off (with
JavaScript, app.js posts to /api/ask/ and shows the answer as it arrives).
"""

from __future__ import annotations

import logging
import re
import uuid

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import LoginView, LogoutView, redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.html import escape
from django.utils.http import urlencode
from django.utils.safestring import SafeString, mark_safe
from rest_framework.exceptions import ValidationError

from documents.chunking import chunk_page
from documents.models import Chunk, Source
from ragsite.security import lockout_message, lockout_seconds
from ragsite.worker import worker_missing
from search.answers.errors import AnswerError
from search.answers.generate import answer_generate, answer_provider
from search.answers.retrieval import answer_retrieve
from search.api import search_filters, search_params
from search.filters import SearchFilters
from search.links import document_view_url
from search.selectors import MODES, SearchUnavailable, chunk_search
from search.snippets import snippet_safe_html

logger = logging.getLogger(__name__)

PAGE_SIZE = 10
MAX_SOURCES_LISTED = 500
FIELD_LABELS = {"q": "Search", "mode": "Mode", "source": "Source", "offset": "Page", "limit": "Page size"}
EMPTY_SEARCH = "Type something to search for."  # app.js says the same before sending the form
MODE_LABELS = {"keyword": "Keyword", "semantic": "Semantic", "hybrid": "Hybrid"}
_MARKER = re.compile(r"\[(\d{1,4})\]")
# The longest URL (path and query string) the page's form may navigate to. gunicorn reads at most
# 8190 bytes of request line (ragsite/gunicorn.conf.py: limit_request_line), "GET " and " HTTP/1.1"
# included; the rest is room for what the page adds to its own links later (a conversation id, a
# page offset). app.js checks the encoded URL against this before sending the form.
MAX_FORM_URL_CHARS = 8000
# The indexing banner counts pending chunks up to this many ("more than ..." beyond): a bounded read.
PENDING_COUNTED_MAX = 100_000


def page_allowed(request: HttpRequest) -> bool:
    return bool(settings.SEARCH_PUBLIC or request.user.is_authenticated)


def login_redirect(request: HttpRequest) -> HttpResponse:
    """Send an anonymous visitor to the sign-in page (settings.LOGIN_URL), back here afterwards."""
    return redirect_to_login(request.get_full_path())


class SignInView(LoginView):
    """The web app's sign-in page: Django's LoginView (CSRF, a safe ``next``) in the app's look.

    Every sign-in goes through django-axes' backend, as the admin's does: after
    LOGIN_FAILURE_LIMIT failures for one username from one address the pair is locked out, and
    this page then says so itself (429 with Retry-After) rather than showing the bare lockout page.
    """

    template_name = "search/login.html"
    redirect_authenticated_user = True

    def get_context_data(self, **kwargs):
        return super().get_context_data(search_public=settings.SEARCH_PUBLIC, **kwargs)

    def form_invalid(self, form):
        if not getattr(self.request, "axes_locked_out", False):
            return super().form_invalid(form)
        response = self.render_to_response(self.get_context_data(form=form, locked_out=lockout_message()), status=429)
        response["Retry-After"] = str(lockout_seconds())
        response.is_lockout_page = True  # ragsite.security.login_lockout_response keeps it
        return response


class SignOutView(LogoutView):
    """Sign out (POST only, with the CSRF token) and land on the sign-in page with a note."""

    def post(self, request, *args, **kwargs):
        response = super().post(request, *args, **kwargs)
        messages.info(request, "You are signed out.")
        return response


def indexing_stalled(request: HttpRequest) -> dict | None:
    """The banner's facts when chunks wait to be indexed and no task worker runs; else None.

    Shown to signed-in users only. Costs one read of pg_locks per page; the chunks are counted
    only when no worker is alive.
    """
    if not request.user.is_authenticated or not worker_missing():
        return None
    pending = Chunk.objects.filter(index_status=Chunk.IndexStatus.PENDING)[: PENDING_COUNTED_MAX + 1].count()
    if not pending:
        return None
    return {"pending": min(pending, PENDING_COUNTED_MAX), "more": pending > PENDING_COUNTED_MAX}


def link_url(url: str) -> str:
    """The URL if it is safe to put in an href (http or https), else "": a document's URL is user input."""
    return url if re.match(r"https?://", url or "", re.IGNORECASE) else ""


def answer_html(text: str) -> SafeString:
    """The answer as HTML: escaped text, each [n] a link to passage n."""
    escaped = escape(text)  # markers are digits and brackets, which escaping leaves alone
    return mark_safe(  # noqa: S308 - built from escaped text and digits only
        _MARKER.sub(
            lambda m: (
                f'<a class="cite" href="#passage-{m.group(1)}" data-n="{m.group(1)}" '
                f'aria-label="Source {m.group(1)}">[{m.group(1)}]</a>'
            ),
            escaped,
        )
    )


def answer_label(*, provider: str, model: str, found: bool) -> str:
    """What the answer's meta line says about where the answer came from (app.js says the same).

    The offline provider quotes sentences; it is named by what it does and how to get written
    answers instead, since "extractive" means nothing to a reader.
    """
    if not found:
        return "Nothing found in the sources"
    if provider == "extractive":
        return "Quoted from the sources (no language model configured: set LLM_MODEL for written answers)"
    return f"Answered by {model or 'the language model'}"


def _errors(exc: ValidationError) -> list[str]:
    detail = exc.detail if isinstance(exc.detail, dict) else {"": exc.detail}
    messages = []
    for field, problems in detail.items():
        label = FIELD_LABELS.get(str(field), "")
        for problem in problems if isinstance(problems, list) else [problems]:
            messages.append(f"{label}: {problem}" if label else str(problem))
    return messages


def _result_view(result) -> dict:
    return {
        "rank": result.rank,
        "title": result.title or "Untitled",
        "url": link_url(result.url),
        "view_url": document_view_url(result.document_id, str(result.chunk_id)),
        "source": result.source,
        "heading_path": [h for h in result.heading_path if h and h != result.title],
        "page": chunk_page(result.metadata),
        # chunk_search snippets are escaped HTML with <mark>; snippet_safe_html re-escapes anything
        # else, so marking it safe cannot let document text inject markup.
        "snippet": mark_safe(snippet_safe_html(result.snippet)),  # noqa: S308
        "score": result.score,
        "low_confidence": result.low_confidence,
    }


def _passage_view(passage, cited: set[int]) -> dict:
    return {
        "n": passage.n,
        "title": passage.title or "Untitled",
        "url": link_url(passage.url),
        "view_url": document_view_url(passage.document_id, str(passage.chunk_id)),
        "source": passage.source,
        "heading_path": [h for h in passage.heading_path if h and h != passage.title],
        "page": passage.page,
        "snippet": mark_safe(passage.snippet),  # noqa: S308 - built by snippet_safe_html
        "cited": passage.n in cited,
    }


def home(request: HttpRequest) -> HttpResponse:
    if not page_allowed(request):
        return login_redirect(request)
    query = request.GET.get("q", "")
    mode = request.GET.get("mode") or settings.SEARCH_DEFAULT_MODE
    source = request.GET.get("source", "")
    context: dict = {
        "q": query,
        "mode": mode if mode in MODES else settings.SEARCH_DEFAULT_MODE,
        "modes": [(m, MODE_LABELS[m]) for m in MODES],
        "source": source,
        "sources": list(Source.objects.order_by("name").values_list("pk", "name")[:MAX_SOURCES_LISTED]),
        "errors": [],
        "warnings": [],
        "searched": False,
        "llm_streams": bool(settings.LLM_MODEL),
        # The box's maxlength counts UTF-16 units, the API characters (code points): what the box takes, the API does.
        "max_query_chars": settings.SEARCH_MAX_QUERY_CHARS,
        "max_url_chars": MAX_FORM_URL_CHARS,
        "max_upload_bytes": settings.INGEST_MAX_BYTES,
        "user": request.user,
        "indexing_stalled": indexing_stalled(request),
    }
    status = 200
    conversation = request.GET.get("conversation")
    if conversation is not None:
        status = _conversation_into(conversation, context)
    if query.strip() or "offset" in request.GET:
        status = max(status, _search_into(request, context))
    elif "q" in request.GET:
        # The form was sent with nothing in the box: say so, as Ask does, instead of a silent empty page.
        context["errors"] = [EMPTY_SEARCH]
    return render(request, "search/home.html", context, status=status)


def _conversation_into(value: str, context: dict) -> int:
    """``?conversation=<id>``: app.js opens that conversation from /api/conversations/<id>/.

    app.js puts it in the address once an answer is shown, so that reloading the page or coming
    back to it re-opens the conversation instead of asking the question again. Whose it is, the
    API decides (someone else's is a 404 there, "not there" in the page); here only its form.
    """
    try:
        context["open_conversation"] = str(uuid.UUID(value))
    except ValueError:
        context["errors"].append("That conversation link is broken: its id is not valid.")
        return 400
    return 200


def _search_into(request: HttpRequest, context: dict) -> int:
    raw = {k: request.GET.get(k, "") for k in ("q", "mode", "source", "offset")}
    try:
        params = search_params({k: v for k, v in raw.items() if v != ""} | {"limit": PAGE_SIZE})
    except ValidationError as exc:
        context["errors"] = _errors(exc)
        return 400
    try:
        response = chunk_search(
            params["q"],
            mode=params.get("mode"),
            limit=PAGE_SIZE,
            offset=params["offset"],
            filters=search_filters(params),
        )
    except SearchUnavailable as exc:
        logger.warning("search page: %s", exc)
        context["errors"] = [f"{exc}. Try keyword mode."]
        return 503
    context.update(
        searched=True,
        mode=response.mode,
        results=[_result_view(r) for r in response.results],
        count=response.count,
        took_ms=response.took_ms,
        warnings=list(response.warnings),
    )
    offset = params["offset"]
    base = {"q": params["q"], "mode": response.mode} | ({"source": raw["source"]} if raw["source"] else {})
    if offset > 0:
        context["previous_url"] = "?" + urlencode(
            base | ({"offset": max(offset - PAGE_SIZE, 0)} if offset > PAGE_SIZE else {})
        )
    if offset + PAGE_SIZE < response.count and offset + PAGE_SIZE <= settings.SEARCH_MAX_OFFSET:
        context["next_url"] = "?" + urlencode(base | {"offset": offset + PAGE_SIZE})
    context["first_rank"] = offset + 1 if response.results else 0
    context["last_rank"] = offset + len(response.results)
    # A conversation in the address is opened by app.js, never asked again.
    ask = "" if "conversation" in request.GET else request.GET.get("ask", "")
    if ask == "live":
        # app.js rewrote the Ask submit to this: it streams the answer from /api/ask/ itself.
        context["autoask"] = {"question": params["q"], "mode": response.mode, "source": raw["source"]}
        context["answer_fallback_url"] = "?" + urlencode(base | {"ask": "1"})
    elif ask:
        _answer_into(params, context)
    return 200


def _answer_into(params: dict, context: dict) -> None:
    """The answer without JavaScript: the same service as /api/ask/, rendered in the page."""
    try:
        retrieved = answer_retrieve(
            question=params["q"], mode=params.get("mode"), filters=SearchFilters(source_ids=params.get("source"))
        )
        answer = answer_generate(context=retrieved, provider=answer_provider())
    except (AnswerError, SearchUnavailable) as exc:
        logger.warning("search page answer failed: %s", exc)
        context["answer_error"] = exc.message if isinstance(exc, AnswerError) else str(exc)
        return
    cited = set(answer.cited)
    context["answer"] = {
        "html": answer_html(answer.text),
        "label": answer_label(provider=answer.provider, model=answer.model, found=answer.found),
        "found": answer.found,
        "warnings": answer.warnings,
        "took_ms": answer.took_ms,
        "passages": [_passage_view(p, cited) for p in answer.passages],
    }
