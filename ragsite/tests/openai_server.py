"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests, with scriptable failures.

Usage (a fixture; import it into a test module or a conftest.py):

    from ragsite.tests.openai_server import openai_server_fixture, openai_server_session_fixture  # noqa: F401

    def test_something(openai_server, settings):
        settings.OPENAI_BASE_URL = openai_server.base_url
        openai_server.fail_next("/v1/embeddings", status=429, times=2)
        ...
        assert len(openai_server.requests_to("/v1/embeddings")) == 3

One server runs per test session; the function-scoped fixture resets its state before each test.
Routes are a registry: `server.route("/v1/chat/completions", handler)` where
`handler(server, request) -> Reply`. `/v1/embeddings` is built in: deterministic vectors from a
hashed bag of words, so texts sharing words are close and identical texts are identical.
`/v1/chat/completions` is built in too: it answers `server.chat_answer` (streamed as SSE chunks
of `server.chat_chunk_chars` characters when the request asks for `stream`), so a test scripts
the model's words, citations included. `server.delay_next(path, seconds)` makes a reply late
(a client timeout), and `server.chat_stream_error` breaks a stream halfway with an error chunk.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

DEFAULT_DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    json: Any


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    # A streamed reply (server-sent events): written chunk by chunk, then the connection closes.
    stream: Iterable[bytes] | None = None
    delay: float = 0.0  # seconds to wait before answering


Handler = Callable[["OpenAICompatibleServer", Request], Reply]

# Error bodies shaped like OpenAI's, so the client maps them to its exception classes.
_ERRORS = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Permission denied."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached, please try again shortly."),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The engine is currently overloaded."),
}


def error_reply(
    status: int, *, code: str | None = None, message: str | None = None, headers: dict | None = None
) -> Reply:
    kind, default_code, default_message = _ERRORS.get(status, ("server_error", None, "Error."))
    if code == "insufficient_quota":
        kind = "insufficient_quota"
        message = message or "You exceeded your current quota, please check your plan and billing details."
    body = {"error": {"message": message or default_message, "type": kind, "param": None, "code": code or default_code}}
    return Reply(status=status, body=body, headers=headers or {})


def hashed_embedding(text: str, dimension: int) -> list[float]:
    """Deterministic unit vector: a signed hashed bag of lowercase words (plus a bias term)."""
    vector = np.zeros(dimension, dtype=np.float64)
    for word in re.findall(r"\w+", text.lower()) or [""]:
        digest = hashlib.sha256(word.encode()).digest()
        index = int.from_bytes(digest[:4], "little") % dimension
        vector[index] += 1.0 if digest[4] & 1 else -1.0
    vector[0] += 0.01  # an empty or all-cancelling text still gets a non-zero vector
    return (vector / np.linalg.norm(vector)).tolist()


def embeddings_handler(server: OpenAICompatibleServer, request: Request) -> Reply:
    body = request.json if isinstance(request.json, dict) else {}
    model = body.get("model") or "text-embedding-3-small"
    inputs = body.get("input")
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs or not all(isinstance(t, str) for t in inputs):
        return error_reply(400, message="'input' must be a non-empty string or list of strings.")
    dimension = int(body.get("dimensions") or server.model_dimensions.get(model, 1536))
    vectors = [hashed_embedding(text, dimension) for text in inputs]

    malformed = server.take_malformation(request.path)
    if malformed == "count":
        vectors = vectors[:-1] if len(vectors) > 1 else [*vectors, vectors[0]]
    elif malformed == "dimension":
        vectors = [v[:-1] for v in vectors]

    base64_format = body.get("encoding_format") == "base64"  # what the openai client asks for by default
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode() if base64_format else v,
        }
        for i, v in enumerate(vectors)
    ]
    tokens = sum(len(t.split()) for t in inputs)
    return Reply(
        body={
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


DEFAULT_CHAT_ANSWER = "The passages answer this [1]."


def _chat_completion_id(request: Request) -> str:
    return "chatcmpl-" + hashlib.sha256(json.dumps(request.json, sort_keys=True).encode()).hexdigest()[:16]


def sse_event(data: Any) -> bytes:
    return b"data: " + (data if isinstance(data, str) else json.dumps(data)).encode() + b"\n\n"


def chat_completions_handler(server: OpenAICompatibleServer, request: Request) -> Reply:
    body = request.json if isinstance(request.json, dict) else {}
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return error_reply(400, message="'messages' must be a non-empty list.")
    model = body.get("model") or "gpt-4o-mini"
    answer = server.chat_answer
    ident, created = _chat_completion_id(request), int(time.time())
    usage = {"prompt_tokens": 10, "completion_tokens": len(answer.split()), "total_tokens": 10 + len(answer.split())}
    if not body.get("stream"):
        return Reply(
            body={
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
                "usage": usage,
            }
        )
    size = max(1, server.chat_chunk_chars)
    pieces = [answer[i : i + size] for i in range(0, len(answer), size)]
    broken_at = len(pieces) // 2 if server.chat_stream_error else None

    def chunk(delta: dict, finish: str | None = None) -> bytes:
        return sse_event(
            {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
        )

    def events() -> Iterator[bytes]:
        yield chunk({"role": "assistant", "content": ""})
        for number, piece in enumerate(pieces):
            if number == broken_at:
                yield sse_event({"error": {"message": server.chat_stream_error, "type": "server_error"}})
                return
            yield chunk({"content": piece})
        yield chunk({}, finish="stop")
        yield sse_event("[DONE]")

    return Reply(stream=events(), headers={"Content-Type": "text/event-stream"})


BUILT_IN_ROUTES: dict[tuple[str, str], Handler] = {
    ("POST", "/v1/embeddings"): embeddings_handler,
    ("POST", "/v1/chat/completions"): chat_completions_handler,
}


class OpenAICompatibleServer:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.routes: dict[tuple[str, str], Handler] = {}
        self.model_dimensions: dict[str, int] = dict(DEFAULT_DIMENSIONS)
        self.requests: list[Request] = []
        self._failures: dict[str, list[Reply]] = {}
        self._malformations: dict[str, list[str]] = {}
        self._delays: dict[str, list[float]] = {}
        self.chat_answer = DEFAULT_CHAT_ANSWER
        self.chat_chunk_chars = 3  # small, so citation markers arrive split across chunks
        self.chat_stream_error: str | None = None
        self._lock = threading.Lock()
        self.routes.update(BUILT_IN_ROUTES)
        self._httpd = ThreadingHTTPServer((host, 0), _make_request_handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="openai-test-server", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> OpenAICompatibleServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def route(self, path: str, handler: Handler, *, method: str = "POST") -> None:
        self.routes[(method, path)] = handler

    def reset(self) -> None:
        """Forget recorded requests and pending failures; custom routes added by a test are dropped too."""
        with self._lock:
            self.requests.clear()
            self._failures.clear()
            self._malformations.clear()
            self._delays.clear()
            self.model_dimensions = dict(DEFAULT_DIMENSIONS)
            self.chat_answer = DEFAULT_CHAT_ANSWER
            self.chat_chunk_chars = 3
            self.chat_stream_error = None
            self.routes = dict(BUILT_IN_ROUTES)

    def fail_next(
        self,
        path: str,
        *,
        status: int,
        times: int = 1,
        code: str | None = None,
        message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """The next `times` requests to `path` get this error instead of being handled."""
        with self._lock:
            self._failures.setdefault(path, []).extend(
                error_reply(status, code=code, message=message, headers=headers) for _ in range(times)
            )

    def malform_next(self, path: str, kind: str, *, times: int = 1) -> None:
        """The next `times` embedding responses are wrong: kind "count" (one vector too few) or "dimension"."""
        with self._lock:
            self._malformations.setdefault(path, []).extend([kind] * times)

    def delay_next(self, path: str, seconds: float, *, times: int = 1) -> None:
        """The next `times` requests to `path` are answered only after `seconds` (to trip client timeouts)."""
        with self._lock:
            self._delays.setdefault(path, []).extend([seconds] * times)

    def take_malformation(self, path: str) -> str | None:
        with self._lock:
            pending = self._malformations.get(path)
            return pending.pop(0) if pending else None

    def requests_to(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def _dispatch(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
            pending = self._failures.get(request.path)
            failure = pending.pop(0) if pending else None
            handler = self.routes.get((request.method, request.path))
            delays = self._delays.get(request.path)
            delay = delays.pop(0) if delays else 0.0
        if failure is not None:
            reply = failure
        elif handler is None:
            reply = error_reply(404, message=f"No route for {request.method} {request.path}.")
        else:
            reply = handler(self, request)
        if delay:
            reply.delay = delay
        return reply


def _make_request_handler(server: OpenAICompatibleServer) -> type[BaseHTTPRequestHandler]:
    class RequestHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like the real API; the client pools connections

        def do_POST(self) -> None:
            self._handle()

        def do_GET(self) -> None:
            self._handle()

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                payload = json.loads(raw) if raw else None
            except ValueError:
                payload = None
            path = self.path.split("?", 1)[0]
            request = Request(
                method=self.command, path=path, headers={k.lower(): v for k, v in self.headers.items()}, json=payload
            )
            reply = server._dispatch(request)
            if reply.delay:
                time.sleep(reply.delay)
            if reply.stream is not None:
                self._send_stream(reply)
                return
            data = json.dumps(reply.body).encode() if reply.body is not None else b""
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _send_stream(self, reply: Reply) -> None:
            # No Content-Length: the body ends when the connection closes, as HTTP/1.1 allows.
            self.close_connection = True
            self.send_response(reply.status)
            for name, value in {"Content-Type": "text/event-stream", **reply.headers}.items():
                self.send_header(name, value)
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                for piece in reply.stream or ():
                    self.wfile.write(piece)
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped reading (it timed out or gave up)

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

    return RequestHandler


# Registered under short names but defined under distinct ones, so a test module can import them
# (`from ragsite.tests.openai_server import openai_server_fixture`) without its test arguments
# shadowing the import. A conftest.py can instead list this module in `pytest_plugins`.
@pytest.fixture(scope="session", name="openai_server_session")
def openai_server_session_fixture() -> Iterator[OpenAICompatibleServer]:
    server = OpenAICompatibleServer().start()
    yield server
    server.stop()


@pytest.fixture(name="openai_server")
def openai_server_fixture(openai_server_session: OpenAICompatibleServer) -> OpenAICompatibleServer:
    openai_server_session.reset()
    return openai_server_session
