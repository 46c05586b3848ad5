"""A local fake of the Anthropic Messages API, spoken over real HTTP so the real SDK can be pointed at it.

``POST /v1/messages`` answers with JSON, or with server-sent events when the body says ``"stream": true``.
By default the "model" answers by quoting the first sentence of the first ``search_result`` block it received,
with a ``search_result_location`` citation, exactly as the API shapes it (``cited_text`` is the cited
content block, whole). Tests script other behaviour per request::

    async with start_fake_anthropic() as fake:
        client = AsyncAnthropic(api_key="test", base_url=fake.url, max_retries=0)
        fake.script(Reply.overloaded(), Reply.answer(cite=[1, 0]))   # next two requests, in order
        fake.always(Reply.server_error())                          # every request once the script is used up
        ...
        assert fake.requests[0].search_results[0]["title"] == "Leave policy › Annual leave"

Every request is recorded (``fake.requests``) before the scripted reply is chosen, so retries can be counted.

Streaming is token by token (a token ≈ a word with its leading space, about what the real API sends per
``text_delta``), each cited block's ``citations_delta`` before its ``content_block_stop``, as the API sends them.
A realistic pace and failures midway are scripted per reply::

    fake.script(Reply.answer(first_token_s=1.0, tokens_per_s=40))        # 1 s to the first token, then 40/s
    fake.script(Reply.answer(fail_after_tokens=12))                      # an ``error`` event after 12 tokens
    fake.script(Reply.answer(drop_after_tokens=12))                      # the connection cut after 12 tokens
    fake.script(Reply.answer(end_after_tokens=12))                       # a clean end, but no message_stop
    fake.script(Reply.answer(fail_after_tokens=3, fail_error_type="api_error"))  # another error event

The stream's framing can be varied within what the SSE format allows (the client must cope with all of it)::

    fake.script(Reply.answer(unknown_events=True))   # pings and events of a type the client does not know
    fake.script(Reply.answer(crlf=True))             # lines ended with CRLF instead of LF
    fake.script(Reply.answer(split_events=True))     # each event sent in two writes, split inside a line
    fake.script(Reply.answer(segments=[("x " * 3000, 0)]))                # a very long cited answer
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import socket
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

Kind = Literal["answer", "error", "malformed", "stream_error"]

DEFAULT_INTRO = "Here is what the documents say: "
DEFAULT_NOT_FOUND = "NOT_FOUND The documents I was given do not cover this question."


@dataclass
class Reply:
    """One scripted response. Build it with the class methods."""

    kind: Kind = "answer"
    status: int = 200
    error_type: str = ""
    message: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # before the response starts (a JSON body, or the stream's headers)
    stall_s: float = 0.0  # streaming only: after message_start, before any content
    cite: tuple[int, ...] = (0,)  # search results to quote (their first sentence) and cite, in order
    intro: str = DEFAULT_INTRO
    segments: list[tuple[str, int | None]] | None = None  # explicit (text, cited search result index or None)
    text: str | None = None  # an uncited answer (e.g. "NOT_FOUND …"), overrides cite/segments
    usage: dict[str, int] = field(default_factory=dict)  # overrides of the computed usage
    model: str | None = None  # the model id to report; default: the requested one
    stop_reason: str = "end_turn"
    first_token_s: float = 0.0  # streaming: from message_start to the first text token
    tokens_per_s: float = 0.0  # streaming: the pace of text tokens after the first (0: as fast as possible)
    fail_after_tokens: int | None = None  # streaming: an ``error`` event (overloaded) after this many tokens
    drop_after_tokens: int | None = None  # streaming: the connection closed after this many tokens
    end_after_tokens: int | None = None  # streaming: the response ended (cleanly) after this many tokens
    fail_error_type: str = "overloaded_error"  # the ``error`` event's type for ``fail_after_tokens``
    unknown_events: bool = False  # streaming: pings, an unknown event and an unknown delta type among the rest
    crlf: bool = False  # streaming: CRLF line endings
    split_events: bool = False  # streaming: every event in two writes, cut inside its data line

    @classmethod
    def answer(
        cls,
        *,
        cite: list[int] | tuple[int, ...] = (0,),
        intro: str = DEFAULT_INTRO,
        segments: list[tuple[str, int | None]] | None = None,
        usage: dict[str, int] | None = None,
        model: str | None = None,
        delay_s: float = 0.0,
        stall_s: float = 0.0,
        stop_reason: str = "end_turn",
        first_token_s: float = 0.0,
        tokens_per_s: float = 0.0,
        fail_after_tokens: int | None = None,
        drop_after_tokens: int | None = None,
        end_after_tokens: int | None = None,
        fail_error_type: str = "overloaded_error",
        unknown_events: bool = False,
        crlf: bool = False,
        split_events: bool = False,
    ) -> Reply:
        return cls(
            end_after_tokens=end_after_tokens,
            fail_error_type=fail_error_type,
            unknown_events=unknown_events,
            crlf=crlf,
            split_events=split_events,
            first_token_s=first_token_s,
            tokens_per_s=tokens_per_s,
            fail_after_tokens=fail_after_tokens,
            drop_after_tokens=drop_after_tokens,
            cite=tuple(cite),
            intro=intro,
            segments=segments,
            usage=usage or {},
            model=model,
            delay_s=delay_s,
            stall_s=stall_s,
            stop_reason=stop_reason,
        )

    @classmethod
    def plain(cls, text: str, **kwargs: Any) -> Reply:
        """An answer without citations."""
        return cls(text=text, **kwargs)

    @classmethod
    def not_found(cls, text: str = DEFAULT_NOT_FOUND) -> Reply:
        return cls(text=text)

    @classmethod
    def slow(cls, delay_s: float) -> Reply:
        """A normal answer that starts only after ``delay_s`` (to trip the client's timeout)."""
        return cls(delay_s=delay_s)

    @classmethod
    def error(
        cls, status: int, error_type: str, message: str = "", headers: dict[str, str] | None = None
    ) -> Reply:
        return cls(
            kind="error",
            status=status,
            error_type=error_type,
            message=message or error_type,
            headers=headers or {},
        )

    @classmethod
    def overloaded(cls, retry_after_s: float | None = None) -> Reply:
        """529. ``retry_after_s`` sets ``retry-after`` (a short SDK backoff; the real API may not send it)."""
        return cls.error(529, "overloaded_error", "Overloaded", headers=_retry_after(retry_after_s))

    @classmethod
    def server_error(cls, status: int = 500, retry_after_s: float | None = None) -> Reply:
        return cls.error(status, "api_error", "Internal server error", headers=_retry_after(retry_after_s))

    @classmethod
    def rate_limited(cls, retry_after_s: float = 0.05) -> Reply:
        return cls.error(429, "rate_limit_error", "Rate limited", headers={"retry-after": str(retry_after_s)})

    @classmethod
    def bad_request(cls, message: str = "messages: invalid request") -> Reply:
        return cls.error(400, "invalid_request_error", message)

    @classmethod
    def unauthorized(cls) -> Reply:
        return cls.error(401, "authentication_error", "invalid x-api-key")

    @classmethod
    def malformed(cls) -> Reply:
        """A 200 whose body is cut-off JSON (or, streaming, an event whose data is not JSON)."""
        return cls(kind="malformed")

    @classmethod
    def stream_error(cls, error_type: str = "overloaded_error") -> Reply:
        """Streaming: a 200 stream that fails with an ``error`` event after ``message_start``.
        Non-streaming requests get the matching HTTP error instead (529 for overloaded, else 500)."""
        return cls(kind="stream_error", error_type=error_type, message=error_type)


_ERROR_MESSAGES = {"overloaded_error": "Overloaded", "api_error": "Internal server error"}


def _retry_after(seconds: float | None) -> dict[str, str]:
    return {} if seconds is None else {"retry-after": str(seconds)}


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: dict[str, Any]
    at: float = field(default_factory=time.monotonic)  # when it arrived

    @property
    def search_results(self) -> list[dict[str, Any]]:
        return find_search_results(self.body)

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))


def find_search_results(body: dict[str, Any]) -> list[dict[str, Any]]:
    """All ``search_result`` blocks of a request, in the order that ``search_result_index`` counts them."""
    found: list[dict[str, Any]] = []

    def walk(blocks: Any) -> None:
        if not isinstance(blocks, list):
            return
        for block in blocks:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "search_result":
                found.append(block)
            elif block.get("type") == "tool_result":
                walk(block.get("content"))

    for message in body.get("messages", []):
        if isinstance(message, dict):
            walk(message.get("content"))
    return found


def first_sentence(text: str) -> str:
    match = re.match(r"\s*(.+?[.!?])(?=\s|$)", text, re.DOTALL)
    return (match.group(1) if match else text).strip()


def stream_tokens(text: str) -> list[str]:
    """``text`` as the text deltas the fake streams: one word with its leading whitespace each."""
    return re.findall(r"\s*\S+|\s+", text) or [""]


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


class FakeAnthropic:
    """The fake server. Use :func:`start_fake_anthropic` to run one."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.default: Reply = Reply.answer()
        self._queue: deque[Reply] = deque()
        self._seen_prefixes: set[str] = set()
        self._wake = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """Base URL for ``AsyncAnthropic(base_url=...)``."""
        return f"http://127.0.0.1:{self.port}"

    # --- scripting --------------------------------------------------------------------------------------
    def script(self, *replies: Reply) -> None:
        """Queue replies for the next requests, in order; after them :attr:`default` applies."""
        self._queue.extend(replies)

    def always(self, reply: Reply) -> None:
        """The reply for every request once the script is used up."""
        self.default = reply

    def reset(self) -> None:
        """Forget requests, script, default and the prompt cache; wake any request still sleeping."""
        self.requests.clear()
        self._queue.clear()
        self.default = Reply.answer()
        self._seen_prefixes.clear()
        self._wake.set()
        self._wake = asyncio.Event()

    @property
    def message_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == "/v1/messages"]

    # --- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_get("/_requests", self._requests_json)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        self._wake.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but end early when the fake is reset or stopped (so teardown never waits on it)."""
        if seconds <= 0:
            return
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        except TimeoutError:
            pass

    async def _requests_json(self, _request: web.Request) -> web.Response:
        """Each Messages request's arrival (``time.monotonic()``) and its last text block (the question), for a
        benchmark driving the fake from another process."""
        rows = []
        for r in self.message_requests:
            texts = [b.get("text", "") for m in r.body.get("messages", []) if isinstance(m, dict)
                     for b in m.get("content", []) if isinstance(b, dict) and b.get("type") == "text"]
            rows.append({"at": r.at, "question": texts[-1] if texts else "", "stream": r.stream})
        return web.json_response(rows)

    # --- handlers -------------------------------------------------------------------------------------
    async def _not_found(self, request: web.Request) -> web.Response:
        self.requests.append(RecordedRequest(request.method, request.path, _headers(request), {}))
        return _error_response(404, "not_found_error", f"Not found: {request.method} {request.path}")

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _error_response(400, "invalid_request_error", "body is not JSON")
        self.requests.append(RecordedRequest(request.method, request.path, _headers(request), body))
        reply = self._queue.popleft() if self._queue else self.default
        stream = bool(body.get("stream"))

        await self._sleep(reply.delay_s)
        if reply.kind == "error":
            return _error_response(reply.status, reply.error_type, reply.message, reply.headers)
        if reply.kind == "stream_error" and not stream:
            status = 529 if reply.error_type == "overloaded_error" else 500
            return _error_response(status, reply.error_type, reply.message)
        if reply.kind == "malformed" and not stream:
            return web.Response(
                status=200,
                body=b'{"id": "msg_fake", "type": "message", "role": "assistant", "content": [{"type": "te',
                content_type="application/json",
            )

        message = self._build_message(body, reply)
        if not stream:
            # a paced model answers a non-streaming request once it has written everything
            tokens = sum(len(stream_tokens(b["text"])) for b in message["content"])
            await self._sleep(reply.first_token_s + (max(0, tokens - 1) / reply.tokens_per_s
                                                     if reply.tokens_per_s > 0 else 0.0))
            return web.json_response(message, headers={"request-id": "req_fake"})
        return await self._stream(request, message, reply)

    def _build_message(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        results = find_search_results(body)
        blocks: list[dict[str, Any]] = []
        if reply.text is not None:
            blocks.append({"type": "text", "text": reply.text})
        else:
            segments = reply.segments
            if segments is None:
                segments = [(reply.intro, None)] if reply.intro else []
                for n, index in enumerate(i for i in reply.cite if i < len(results)):
                    if n:
                        segments.append((" ", None))
                    segments.append((first_sentence(_result_text(results[index])), index))
                if not results:
                    segments = [(DEFAULT_NOT_FOUND, None)]
            for text, index in segments:
                block: dict[str, Any] = {"type": "text", "text": text}
                if index is not None:
                    block["citations"] = [_citation(results, index)]
                blocks.append(block)

        output_text = "".join(b["text"] for b in blocks)
        usage = {
            "input_tokens": _tokens(json.dumps(body.get("messages", []))),
            "output_tokens": _tokens(output_text),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
        prefix = _cached_prefix(body)
        if prefix:
            key = hashlib.sha256(prefix.encode()).hexdigest()
            field_name = (
                "cache_read_input_tokens" if key in self._seen_prefixes else "cache_creation_input_tokens"
            )
            usage[field_name] = _tokens(prefix)
            self._seen_prefixes.add(key)
        usage.update(reply.usage)
        return {
            "id": f"msg_fake_{len(self.requests)}",
            "type": "message",
            "role": "assistant",
            "model": reply.model or body.get("model", "claude-fake"),
            "content": blocks,
            "stop_reason": reply.stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }

    async def _stream(
        self, request: web.Request, message: dict[str, Any], reply: Reply
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "request-id": "req_fake",
            },
        )

        newline = "\r\n" if reply.crlf else "\n"

        async def send(event: str, data: dict[str, Any] | str) -> None:
            payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
            raw = f"event: {event}{newline}data: {payload}{newline}{newline}".encode()
            if reply.split_events:
                cut = len(f"event: {event}{newline}data: ".encode()) + len(payload.encode()) // 2
                await response.write(raw[:cut])
                await asyncio.sleep(0.001)  # so that the halves arrive apart
                raw = raw[cut:]
            await response.write(raw)

        try:
            await response.prepare(request)
            if reply.kind == "malformed":
                await send("message_start", '{"type": "message_start", "message": {"id": ')
                await response.write_eof()
                return response
            usage = message["usage"]
            start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
            await send("message_start", {"type": "message_start", "message": start})
            await send("ping", {"type": "ping"})
            if reply.kind == "stream_error":
                await send(
                    "error", {"type": "error", "error": {"type": reply.error_type, "message": reply.message}}
                )
                await response.write_eof()
                return response
            await self._sleep(reply.stall_s + reply.first_token_s)
            sent = 0
            interval = 1.0 / reply.tokens_per_s if reply.tokens_per_s > 0 else 0.0
            loop = asyncio.get_running_loop()
            started = loop.time()
            if reply.unknown_events:
                # the API may add event types (its versioning policy): clients must skip what they don't know
                await send("future_event", {"type": "future_event", "detail": {"x": 1}})
            for index, block in enumerate(message["content"]):
                await send(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
                for chunk in stream_tokens(block["text"]):
                    if sent and interval:  # the pace: token n at first_token + n / tokens_per_s
                        await asyncio.sleep(max(0.0, started + sent * interval - loop.time()))
                    if reply.fail_after_tokens is not None and sent >= reply.fail_after_tokens:
                        await send("error", {"type": "error",
                                             "error": {"type": reply.fail_error_type,
                                                       "message": _ERROR_MESSAGES.get(reply.fail_error_type, "")}})
                        await response.write_eof()
                        return response
                    if reply.end_after_tokens is not None and sent >= reply.end_after_tokens:
                        await response.write_eof()  # a complete HTTP response, but an unfinished message
                        return response
                    if reply.drop_after_tokens is not None and sent >= reply.drop_after_tokens:
                        if request.transport is not None:
                            request.transport.close()
                        return response
                    sent += 1
                    await send(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "text_delta", "text": chunk},
                        },
                    )
                    if reply.unknown_events and sent % 5 == 1:
                        await send("ping", {"type": "ping"})
                        await send("content_block_delta", {"type": "content_block_delta", "index": index,
                                                           "delta": {"type": "future_delta", "value": "?"}})
                for citation in block.get("citations", []):
                    await send(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "citations_delta", "citation": citation},
                        },
                    )
                await send("content_block_stop", {"type": "content_block_stop", "index": index})
            await send(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                    "usage": {"output_tokens": usage["output_tokens"]},
                },
            )
            await send("message_stop", {"type": "message_stop"})
            await response.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass  # the client gave up (e.g. its read timeout) — nothing left to do
        return response


def _headers(request: web.Request) -> dict[str, str]:
    return {k.lower(): v for k, v in request.headers.items()}


def _result_text(result: dict[str, Any]) -> str:
    content = result.get("content") or []
    return content[0].get("text", "") if content and isinstance(content[0], dict) else ""


def _citation(results: list[dict[str, Any]], index: int) -> dict[str, Any]:
    """A citation of the search result's first content block, shaped as the API shapes it."""
    result = results[index]
    return {
        "type": "search_result_location",
        "cited_text": _result_text(result),
        "search_result_index": index,
        "source": result.get("source", ""),
        "title": result.get("title"),
        "start_block_index": 0,
        "end_block_index": 1,
    }


def _cached_prefix(body: dict[str, Any]) -> str:
    """The system prompt up to its last ``cache_control`` breakpoint (the only caching the fake models)."""
    system = body.get("system")
    if not isinstance(system, list):
        return ""
    marked = [i for i, b in enumerate(system) if isinstance(b, dict) and b.get("cache_control")]
    if not marked:
        return ""
    return "".join(b.get("text", "") for b in system[: marked[-1] + 1] if isinstance(b, dict))


def _error_response(
    status: int, error_type: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"type": "error", "error": {"type": error_type, "message": message}, "request_id": "req_fake"},
        status=status,
        headers={"request-id": "req_fake", **(headers or {})},
    )


@asynccontextmanager
async def start_fake_anthropic() -> AsyncIterator[FakeAnthropic]:
    """Run a :class:`FakeAnthropic` on 127.0.0.1 (a free port) for the duration of the block."""
    fake = FakeAnthropic()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()
