"""The MCP server: ragsite's knowledge base as tools and resources, on the official SDK's MCPServer.

One server definition serves both transports (``agents.http`` for Streamable HTTP at /mcp,
``manage.py mcp`` for stdio). Tools are typed Python functions: the SDK derives each JSON schema
from the signature and rejects malformed arguments before the function runs; the function then
applies the REST API's own validation (``agents.tools``). Read-scoped keys are not shown the write
tools, and calling one anyway answers a tool error that says why.
"""

# No `from __future__ import annotations`: the SDK reads the tool signatures' types at runtime.
import functools
import json
from typing import Annotated, Any, Literal

from django.conf import settings
from django.db import close_old_connections
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError
from mcp_types import ToolAnnotations
from pydantic import Field

from agents import tools
from agents.principal import current_principal

WRITE_TOOLS = frozenset({"add_document", "delete_document", "start_crawl", "crawl_status", "cancel_crawl"})

INSTRUCTIONS = (
    "ragsite is a searchable knowledge base of documents and crawled websites. Use `search` to find "
    "passages (each hit has a document id), `get_document` to read a document in pages of text, and "
    "`ask` for an answer with numbered citations. `list_sources` and `list_documents` show what is in "
    "it. With a write-scoped key, `add_document` stores text or a fetched URL and `start_crawl` crawls "
    "a website in the background (`crawl_status` follows it)."
)


def _db_call(fn):
    """Run a tool's Django work with the database connection handed back afterwards.

    The SDK runs synchronous tools on a pool of worker threads, outside Django's request cycle,
    so nothing else would return a thread's connection to the pool (DB_POOL_MAX_SIZE): after a
    few dozen calls every connection would be held by an idle thread.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        close_old_connections()
        try:
            return fn(*args, **kwargs)
        finally:
            close_old_connections()

    return wrapper


class RagsiteMCP(MCPServer):
    async def list_tools(self):
        listed = await super().list_tools()
        principal = current_principal.get()
        if principal is not None and principal.can_write:
            return listed
        return [tool for tool in listed if tool.name not in WRITE_TOOLS]


Source = Annotated[
    int | str | None,
    Field(description="Only this source: its id or name (list_sources shows them); several separated by commas."),
]
Mode = Literal["keyword", "semantic", "hybrid"]
READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)


def build_server(server_class: type[RagsiteMCP] = RagsiteMCP) -> RagsiteMCP:
    mcp = server_class("ragsite", title="ragsite knowledge base", instructions=INSTRUCTIONS, log_level="WARNING")

    @mcp.tool(annotations=READ)
    @_db_call
    def list_sources() -> dict[str, Any]:
        """List the knowledge base's sources (collections of documents): id, name, kind, document and chunk counts, last update."""
        return tools.list_sources()

    @mcp.tool(annotations=READ)
    @_db_call
    def search(
        query: Annotated[
            str,
            Field(
                description='What to look for: words, "quoted phrases", -excluded words, or a question.',
                max_length=settings.SEARCH_MAX_QUERY_CHARS,
            ),
        ],
        mode: Annotated[
            Mode,
            Field(description="keyword (exact words), semantic (meaning) or hybrid (both fused; usually best)."),
        ] = settings.SEARCH_DEFAULT_MODE,
        limit: Annotated[int, Field(description="How many hits to return.", ge=1, le=settings.SEARCH_MAX_LIMIT)] = 10,
        source: Source = None,
        document: Annotated[
            int | list[int] | None, Field(description="Only within this document id (or these ids).")
        ] = None,
        metadata: Annotated[
            dict[str, str] | None,
            Field(description='Only documents whose metadata has these key/value pairs, e.g. {"lang": "en"}.'),
        ] = None,
        rerank: Annotated[
            bool | None,
            Field(description="Reorder the best hits with the rerank endpoint, when the server has one (RERANK_URL)."),
        ] = None,
    ) -> dict[str, Any]:
        """Search the knowledge base, as GET /api/search/ does: ranked passages (at most one per document) with
        document id, title, url, heading path, page (PDFs), an HTML snippet (<mark> around matches) and score.
        Read a whole document with get_document(id)."""
        return tools.search(
            query=query, mode=mode, limit=limit, source=source, document=document, metadata=metadata, rerank=rerank
        )

    @mcp.tool(annotations=READ)
    @_db_call
    def ask(
        question: Annotated[
            str, Field(description="A question in plain words.", max_length=settings.SEARCH_MAX_QUERY_CHARS)
        ],
        source: Source = None,
        conversation: Annotated[
            str | None,
            Field(
                description="The `conversation` id an earlier answer returned, to ask a follow-up: the earlier "
                "turns shape what is searched (`searched_for` says what was)."
            ),
        ] = None,
        rerank: Annotated[
            bool | None,
            Field(description="Rerank the retrieved passages, when the server has a rerank endpoint (RERANK_URL)."),
        ] = None,
    ) -> dict[str, Any]:
        """Answer a question from the knowledge base, as POST /api/ask/ does: every [n] in `answer` is the n of a
        citation, and each citation names the document (document_id, title, url) it comes from. `found` is false
        when nothing relevant was found (`status` "not_found", with the `closest` documents); the answer then says so
        instead of guessing. Every answer belongs to a `conversation`: pass its id back to ask a follow-up."""
        return tools.ask(question=question, source=source, conversation=conversation, rerank=rerank)

    @mcp.tool(annotations=READ)
    @_db_call
    def list_documents(
        source: Source = None,
        query: Annotated[
            str | None,
            Field(description="Full-text query over titles and text (ranked by relevance).", max_length=1000),
        ] = None,
        limit: Annotated[int, Field(description="Documents per page.", ge=1, le=tools.LIST_DOCUMENTS_MAX)] = 50,
        offset: Annotated[int, Field(description="Documents to skip (next_offset of the previous page).", ge=0)] = 0,
    ) -> dict[str, Any]:
        """List documents, newest first (or by relevance to `query`): id, title, url, source, metadata, chunk count.
        Pages with limit/offset; `next_offset` is null on the last page."""
        return tools.list_documents(source=source, query=query, limit=limit, offset=offset)

    @mcp.tool(annotations=READ)
    @_db_call
    def get_document(
        id: Annotated[int, Field(description="The document's id (from search, ask or list_documents).", ge=1)],
        start: Annotated[
            int, Field(description="First character to return (next_start of the previous part).", ge=0)
        ] = 0,
        length: Annotated[
            int, Field(description="How many characters to return.", ge=1, le=tools.DOCUMENT_PAGE_MAX)
        ] = 20000,
    ) -> dict[str, Any]:
        """Read a document's text in parts, with its metadata and the layout of the chunks in that part (character
        ranges, heading paths, PDF pages). Call again with start=next_start until next_start is null."""
        return tools.get_document(id=id, start=start, length=length)

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True))
    @_db_call
    def add_document(
        text: Annotated[
            str | None, Field(description="The document's text (plain text or Markdown). Give this or url.")
        ] = None,
        url: Annotated[
            str | None,
            Field(
                description="Where the document lives. Without text, the server fetches it (HTML, PDF, text); "
                "with text, it only records where the text came from.",
                max_length=2000,
            ),
        ] = None,
        title: Annotated[
            str | None, Field(description="Title; default: taken from the content.", max_length=1000)
        ] = None,
        source: Annotated[
            str | None,
            Field(description="Source name to add it to (created if missing); default 'api'.", max_length=200),
        ] = None,
        metadata: Annotated[
            dict[str, Any] | None, Field(description="JSON object stored with the document, usable as a search filter.")
        ] = None,
    ) -> dict[str, Any]:
        """Add or update a document through the same ingestion as the REST API. The same url (or identical text) in
        the same source updates that document. Returns its id and status: new, changed or unchanged."""
        return tools.add_document(text=text, url=url, title=title, source=source, metadata=metadata)

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True))
    @_db_call
    def delete_document(id: Annotated[int, Field(description="The document's id.", ge=1)]) -> dict[str, Any]:
        """Delete a document with its chunks and vectors."""
        return tools.delete_document(id=id)

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=True))
    @_db_call
    def start_crawl(
        url: Annotated[str, Field(description="The page to start from (http or https).", max_length=2000)],
        max_pages: Annotated[int, Field(description="Stop after fetching this many pages.", ge=1)] = 100,
        max_depth: Annotated[int, Field(description="How many links deep to follow from the start page.", ge=0)] = 3,
        include: Annotated[
            list[str] | None,
            Field(description="Only URLs matching one of these: globs (`*/docs/*`) or regexes (`re:^https://...`)."),
        ] = None,
        exclude: Annotated[list[str] | None, Field(description="Skip URLs matching any of these patterns.")] = None,
        source: Annotated[
            str | None, Field(description="Source name for the pages; default: the start URL's host.", max_length=200)
        ] = None,
    ) -> dict[str, Any]:
        """Queue a polite crawl of a website (robots.txt, per-host delay, its sitemap); pages become documents.
        Runs in the background: follow it with crawl_status(job_id) and stop it with cancel_crawl(job_id)."""
        return tools.start_crawl(
            url=url, max_pages=max_pages, max_depth=max_depth, include=include, exclude=exclude, source=source
        )

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=True))
    @_db_call
    def crawl_status(job_id: Annotated[int, Field(description="The id start_crawl returned.", ge=1)]) -> dict[str, Any]:
        """A crawl job's state (queued, running, finished, failed, cancelled) and counters of pages found, fetched,
        ingested, unchanged, failed and skipped."""
        return tools.crawl_status(job_id=job_id)

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=False, idempotent_hint=True))
    @_db_call
    def cancel_crawl(job_id: Annotated[int, Field(description="The crawl job's id.", ge=1)]) -> dict[str, Any]:
        """Cancel a crawl: a queued job at once, a running one between pages. What was fetched is kept."""
        return tools.cancel_crawl(job_id=job_id)

    @mcp.resource(
        "ragsite://sources/{id}", mime_type="application/json", description="A source and its recent documents."
    )
    @_db_call
    def source_resource(id: int) -> str:
        detail = tools.source_detail(int(id))
        if detail is None:
            raise ResourceNotFoundError(f"No source with id {id}.")
        return json.dumps(detail, default=str)

    @mcp.resource("ragsite://documents/{id}", mime_type="text/plain", description="A document's full text.")
    @_db_call
    def document_resource(id: int) -> str:
        text = tools.document_text(int(id))
        if text is None:
            raise ResourceNotFoundError(f"No document with id {id}.")
        return text

    return mcp
