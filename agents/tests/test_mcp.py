"""The MCP server through the official SDK's client: Streamable HTTP against a real gunicorn server,
stdio against `manage.py mcp` processes, with real PostgreSQL and the real embedded vector store."""

from __future__ import annotations

import html
import json
import re

import httpx
import pytest

from agents.tests.conftest import DOCUMENTS, LONG_DOCUMENT, payload, run

pytestmark = pytest.mark.slow

READ_TOOLS = {"list_sources", "search", "ask", "list_documents", "get_document"}
WRITE_TOOLS = {"add_document", "delete_document", "start_crawl", "crawl_status", "cancel_crawl"}


def test_tools_are_listed_with_schemas_and_read_keys_see_only_read_tools(transport, live):
    async def go():
        async with transport(live.write_key) as client:
            write = (await client.list_tools()).tools
        async with transport(live.read_key) as client:
            read = (await client.list_tools()).tools
        return write, read

    write, read = run(go())
    assert {t.name for t in write} == READ_TOOLS | WRITE_TOOLS
    assert {t.name for t in read} == READ_TOOLS
    search = next(t for t in write if t.name == "search")
    props = search.input_schema["properties"]
    assert search.input_schema["required"] == ["query"]
    assert set(props) == {"query", "mode", "limit", "source", "document", "metadata", "rerank"}
    assert props["mode"]["enum"] == ["keyword", "semantic", "hybrid"] and props["limit"]["maximum"] == 100
    assert all(props[name]["description"] for name in props)
    assert all(t.description for t in write)


@pytest.mark.parametrize("mode", ["keyword", "semantic", "hybrid"])
def test_search_finds_an_ingested_document_in_each_mode(transport, live, mode):
    async def go():
        async with transport(live.read_key) as client:
            return payload(
                await client.call_tool("search", {"query": "how is green tea processed after picking", "mode": mode})
            )

    body = run(go())
    assert body["mode"] == mode
    top = body["results"][0]
    assert top["document_id"] == live.ids["Green tea"] and top["title"] == "Green tea"
    assert top["document_uri"] == f"ragsite://documents/{live.ids['Green tea']}"


def test_search_hits_carry_readable_snippets(live):
    # The field guide is Markdown ("## Chapter n"): a hit's snippet shows its words, not its syntax,
    # cut between words with "…" where text was left out, the query's words marked.
    async def go():
        async with live.http_client(live.read_key) as client:
            return {
                mode: payload(await client.call_tool("search", {"query": "leaf grade 157", "mode": mode}))
                for mode in ("keyword", "semantic", "hybrid")
            }

    for mode, body in run(go()).items():
        hit = next(h for h in body["results"] if h["title"] == "Field guide to teas")
        snippet = hit["snippet"]
        assert "<mark>leaf</mark>" in snippet and "<mark>grade</mark>" in snippet, (mode, snippet)
        if mode != "semantic":
            assert "<mark>157</mark>" in snippet, snippet
        text = html.unescape(re.sub("</?mark>", "", snippet))
        assert "#" not in text and "\u2026" in text and len(text) < 400, (mode, text)
        words = re.findall(r"\w+", text)
        for word in (words[0], words[-1]):
            assert re.search(rf"(?<!\w){word}(?!\w)", LONG_DOCUMENT), (mode, word, text)


def test_ask_returns_an_answer_with_citations_that_resolve_to_documents(transport, live):
    async def go():
        async with transport(live.read_key) as client:
            body = payload(await client.call_tool("ask", {"question": "What stops oxidation in green tea?"}))
            cited = body["citations"][0]
            resource = await client.read_resource(cited["document_uri"])
            return body, resource

    body, resource = run(go())
    assert body["found"] and "[1]" in body["answer"]
    assert body["citations"][0]["document_id"] == live.ids["Green tea"]
    assert resource.contents[0].text == DOCUMENTS[0]["text"]


def test_ask_takes_a_conversation_and_a_follow_up_is_searched_with_it(transport, live):
    async def go():
        async with transport(live.read_key) as client:
            first = payload(await client.call_tool("ask", {"question": "What stops oxidation in green tea?"}))
            follow = payload(
                await client.call_tool(
                    "ask", {"question": "and what about its brewing?", "conversation": first["conversation"]}
                )
            )
        async with transport(live.write_key) as client:
            # Another key cannot continue it: the error names the argument.
            stranger = await client.call_tool("ask", {"question": "and why?", "conversation": first["conversation"]})
        return first, follow, stranger

    first, follow, stranger = run(go())
    assert first["status"] == "answered" and first["rewritten_by"] == "none"
    assert follow["conversation"] == first["conversation"] and follow["rewritten_by"] == "rule"
    assert "tea" in follow["searched_for"].lower()
    assert stranger.is_error and "conversation" in stranger.content[0].text


def test_get_document_pages_through_a_long_document(transport, live):
    async def go():
        parts = []
        async with transport(live.read_key) as client:
            start = 0
            while start is not None:
                part = payload(
                    await client.call_tool(
                        "get_document", {"id": live.ids["Field guide to teas"], "start": start, "length": 5000}
                    )
                )
                parts.append(part)
                start = part["next_start"]
        return parts

    parts = run(go())
    stored = live.rest("GET", f"/api/documents/{live.ids['Field guide to teas']}/").json()
    assert len(parts) > 3
    assert "".join(p["text"] for p in parts) == stored["text"]
    assert parts[0]["total_chars"] == len(stored["text"]) and parts[-1]["next_start"] is None
    assert parts[0]["metadata"]["kind"] == "guide"
    # each part lays out the chunks it overlaps: every chunk of the document, in order, is shown
    assert parts[0]["chunks"][0]["char_start"] == 0
    for part in parts:
        assert part["chunks"] and all(
            c["char_start"] < part["end"] and c["char_end"] > part["start"] for c in part["chunks"]
        )
    ordinals = sorted({c["ordinal"] for part in parts for c in part["chunks"]})
    assert ordinals == list(range(stored["chunk_count"]))


def test_add_document_then_search_finds_it_semantically(transport, live, request):
    title = f"Pu-erh {request.node.callspec.id}"

    async def go():
        async with transport(live.write_key) as client:
            added = payload(
                await client.call_tool(
                    "add_document",
                    {
                        "text": "Pu-erh is a fermented tea from Yunnan, aged for years in compressed cakes.",
                        "title": title,
                        "source": "added",
                    },
                )
            )
            again = payload(
                await client.call_tool(
                    "add_document",
                    {
                        "text": "Pu-erh is a fermented tea from Yunnan, aged for years in compressed cakes.",
                        "title": title,
                        "source": "added",
                    },
                )
            )
            found = payload(
                await client.call_tool(
                    "search", {"query": "aged fermented tea cakes", "mode": "semantic", "source": "added"}
                )
            )
            return added, again, found

    added, again, found = run(go())
    assert added["status"] == "new" and again["status"] == "unchanged" and again["id"] == added["id"]
    assert added["id"] in [hit["document_id"] for hit in found["results"]]


def test_a_read_key_cannot_call_write_tools(transport, live):
    async def go():
        async with transport(live.read_key) as client:
            return await client.call_tool("add_document", {"text": "should not be stored", "title": "Refused"})

    result = run(go())
    assert result.is_error
    assert "needs a write-scoped API key" in result.content[0].text
    listed = live.rest("GET", "/api/documents/", params={"q": "Refused"}).json()
    assert listed["count"] == 0


@pytest.mark.parametrize(
    ("tool", "arguments", "argument"),
    [
        ("search", {"query": "tea", "limit": 1000}, "limit"),
        ("search", {"query": "tea", "mode": "fuzzy"}, "mode"),
        ("search", {"query": "tea", "source": "no-such-source"}, "source"),
        ("search", {"query": "   "}, "query"),
        ("get_document", {"id": 99999999}, "id"),
        ("get_document", {"id": 1, "length": 0}, "length"),
        ("list_documents", {"limit": 5000}, "limit"),
        ("add_document", {"title": "Nothing"}, "text"),
        ("add_document", {"text": "x", "metadata": {"bad\u0000key": 1}}, "metadata"),
        ("start_crawl", {"url": "ftp://example.com/"}, "url"),
        ("crawl_status", {"job_id": 99999999}, "job_id"),
    ],
)
def test_bad_arguments_give_a_tool_error_naming_the_argument_and_the_session_goes_on(live, tool, arguments, argument):
    async def go():
        async with live.http_client(live.write_key) as client:
            bad = await client.call_tool(tool, arguments)
            after = await client.call_tool("list_sources", {})
        return bad, after

    bad, after = run(go())
    assert bad.is_error
    assert argument in bad.content[0].text
    assert not after.is_error


def test_no_key_and_a_wrong_key_are_refused(live):
    message = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    headers = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2026-07-28"}
    missing = httpx.post(live.url, json=message, headers=headers, timeout=30)
    wrong = httpx.post(live.url, json=message, headers={**headers, "Authorization": "Bearer rs_wrong"}, timeout=30)
    for response in (missing, wrong):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert response.json()["error"]["code"] == "not_authenticated"
    assert "Invalid or revoked" in wrong.json()["error"]["message"]

    async def go():
        async with live.http_client("rs_wrong") as client:
            await client.list_tools()

    # the SDK's client does not get as far as a session
    with pytest.raises(Exception):  # noqa: B017 - the SDK wraps the 401 in its own exception group
        run(go())


def test_stdio_refuses_a_missing_or_wrong_key_with_a_clear_message(live):
    no_key = live.manage("mcp", check=False)
    wrong = live.manage("mcp", "--key", "rs_wrong", check=False)
    assert no_key.returncode != 0 and "--key KEY or RAGSITE_API_KEY" in no_key.stderr
    assert wrong.returncode != 0 and "Invalid or revoked API key" in wrong.stderr


@pytest.mark.parametrize("mode", ["keyword", "semantic", "hybrid"])
def test_mcp_search_and_rest_search_return_the_same_hits(live, mode):
    queries = ["green tea oxidation", "coffee under pressure", "leaf grade brewing time", "rolled leaves"]

    async def go():
        async with live.http_client(live.read_key) as client:
            return [payload(await client.call_tool("search", {"query": q, "mode": mode, "limit": 5})) for q in queries]

    through_mcp = run(go())
    for query, body in zip(queries, through_mcp, strict=True):
        rest = live.rest("GET", "/api/search/", params={"q": query, "mode": mode, "limit": 5}).json()
        fields = ["chunk_id", "document_id", "title", "url", "source", "snippet", "score", "rank", "heading_path"]
        assert [{f: h[f] for f in fields} for h in body["results"]] == [
            {f: h[f] for f in fields} for h in rest["results"]
        ]
        assert body["count"] == rest["count"] and body["results"]


def test_both_protocol_eras_reach_the_tools_with_the_callers_scope(live):
    async def go(mode):
        async with live.http_client(live.read_key, mode=mode) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            refused = await client.call_tool("delete_document", {"id": live.ids["Espresso"]})
            return client.protocol_version, tools, refused

    for mode in ("auto", "legacy"):
        version, tools, refused = run(go(mode))
        assert tools == READ_TOOLS, version
        assert refused.is_error and "write-scoped" in refused.content[0].text
    assert live.rest("GET", f"/api/documents/{live.ids['Espresso']}/").status_code == 200


def test_stdio_forwards_to_the_running_server_that_owns_the_store(live):
    record = json.loads((live.data_dir / "mcp-server.json").read_text())
    assert record["url"] == live.url

    async def go():
        async with live.stdio_client(live.read_key) as client:
            return payload(await client.call_tool("search", {"query": "espresso pressure", "mode": "semantic"}))

    # The server holds the embedded store's lock, so a semantic search answered through stdio was
    # answered by the server: opened here, the store would report that another process owns it.
    body = run(go())
    assert body["results"][0]["document_id"] == live.ids["Espresso"]


def test_stdio_without_a_server_opens_the_store_itself_and_lets_it_go(offline):
    async def go():
        async with offline.stdio_client(offline.write_key) as client:
            added = payload(
                await client.call_tool(
                    "add_document", {"text": "Matcha is stone-ground shade-grown green tea.", "title": "Matcha"}
                )
            )
            found = payload(
                await client.call_tool("search", {"query": "powdered shaded tea leaves", "mode": "semantic"})
            )
            # between calls the store is closed again, so a server starting now could open it
            from vectors.stores.base import OwnerLock

            lock = OwnerLock(offline.data_dir / "qdrant", engine="test")
            lock.release()
            return added, found

    added, found = run(go())
    assert not (offline.data_dir / "mcp-server.json").exists()
    assert found["results"][0]["document_id"] == added["id"]
