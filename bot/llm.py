"""Claude with citations: passages in, a Markdown answer with ``[n]`` markers and numbered sources out.

Passages travel as ``search_result`` content blocks with citations enabled, so the API itself ties each span
of the answer to the passage it came from (a ``search_result_location`` citation whose
``search_result_index`` is the passage's position in the request). We put a ``[n]`` marker after each cited
span, numbering sources in order of first citation.

The model says "the sources don't answer this" by starting its reply with the exact token ``NOT_FOUND``
(see :data:`DEFAULT_PROMPT_TEMPLATE`); :attr:`LLMResult.not_found` reports it and the token is removed.

Streaming (``generate(..., stream=True)`` or ``sink=...``): the SDK sends the request (auth, retries, timeouts,
HTTP errors) with ``stream: true``, and the server-sent events are read here (:class:`SSEDecoder`, orjson) into a
:class:`StreamedMessage` — the text blocks with their citations, the usage and the stop reason, nothing else —
instead of the SDK's pydantic object per event and its message snapshot (issue 16: that was most of the client's
CPU per answer; see docs/benchmarks.md). With a ``sink``, the answer's text is handed to a :class:`TextSink` as it
comes, already as the final answer will read — leading whitespace dropped, a
``[n]`` marker after each cited block (numbers in order of first citation, as :func:`result_from_message` gives
them), and nothing at all while the text could still be the ``NOT_FOUND`` token (a "not found" answer is never
streamed). The concatenated deltas equal :attr:`LLMResult.text` of the same message. A sink may raise
:class:`StreamStopped` to end the call at once (the kill-switch was set mid-stream).

Every failure leaves as an :class:`LLMError` saying whether it is transient (worth counting against the
circuit breaker: timeouts, connection errors, 429, 5xx, 529 overloaded, a malformed body, a stream that ends before
its ``message_stop``) or permanent (400/401/403/404…: retrying will not help).

Deskmate's client (:func:`make_client`) runs the SDK over aiohttp; a client passed in may use the SDK's default
httpx transport: both read the stream the same way.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import anthropic
import httpx2
import orjson
from anthropic import AsyncAnthropic, DefaultAioHttpClient
from pydantic import BaseModel, Field, ValidationError

from bot.core.log import get_logger
from bot.core.types import Source, Usage
from feedback.prompts import DEFAULT_PROMPT_TEMPLATE, DEFAULT_PROMPT_VERSION, NOT_FOUND_TOKEN
from knowledge.passage import Passage

log = get_logger(__name__)

_MARKER = re.compile(r"\s?\[\d+\]")
_NOT_FOUND = re.compile(rf"^[*_`\s]*{NOT_FOUND_TOKEN}[*_`]*[\s:.\-—]*")


class GenerationConfig(BaseModel):
    """How one answer is generated; a release pins these so a change is deliberate and can be rolled back."""

    model: str = "claude-sonnet-5-5"
    max_tokens: int = 1024
    #: Not sent: the Messages API version this SDK speaks (anthropic 2.12, API 2026-10-21) has no sampling
    #: parameters. Kept so that releases and settings that name it stay valid and it is recorded with them.
    temperature: float = 0.0
    prompt_template: str = Field(DEFAULT_PROMPT_TEMPLATE, description="The system prompt.")
    prompt_version: str = DEFAULT_PROMPT_VERSION
    timeout_s: float = Field(30.0, description="Per attempt; the SDK retries on top of it.")


class Turn(BaseModel):
    """One earlier message of the thread."""

    role: Literal["user", "assistant"]
    text: str


class LLMResult(BaseModel):
    text: str
    sources: list[Source] = Field(default_factory=list)
    not_found: bool = False
    usage: Usage = Field(default_factory=Usage)
    model: str
    stop_reason: str | None = None


class LLMError(Exception):
    """The model could not produce an answer. ``transient`` errors count against the circuit breaker."""

    def __init__(self, reason: str, transient: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient

    def __repr__(self) -> str:
        return f"LLMError({self.reason!r}, transient={self.transient})"


class StreamStopped(Exception):
    """Raised by a :class:`TextSink` to stop the model's answer midway (not an error of the model)."""


class TextSink(Protocol):
    """Where a streamed answer's text goes as the model writes it (the pipeline's live answer)."""

    async def writing(self) -> None:
        """The model call is starting (a live "Writing…" status)."""
        ...

    async def text(self, delta: str) -> None:
        """More answer text, exactly as the final answer will read. May raise :class:`StreamStopped`."""
        ...


# --------------------------------------------------------------------------------------------------------
# request


def search_result_block(passage: Passage) -> dict[str, Any]:
    title = (
        f"{passage.title} › {passage.heading}"
        if passage.heading and passage.heading != passage.title
        else passage.title
    )
    return {
        "type": "search_result",
        "source": passage.location,
        "title": title,
        "content": [{"type": "text", "text": part} for part in passage_blocks(passage.text)],
        "citations": {"enabled": True},
    }


def passage_blocks(text: str) -> list[str]:
    """A passage as paragraph blocks: a citation covers whole blocks, so smaller blocks give tighter quotes."""
    parts = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    return parts or [text]


def build_messages(question: str, history: list[Turn], passages: list[Passage]) -> list[dict[str, Any]]:
    """Earlier turns as plain messages, then one user message: the search results followed by the question.

    The API wants the conversation to start with the user and alternate, so leading assistant turns are
    dropped and consecutive turns of one role are merged. Earlier answers lose their ``[n]`` markers: their
    sources are not in this request, and the model should not imitate hand-written markers.
    """
    messages: list[dict[str, Any]] = []
    for turn in history:
        text = _MARKER.sub("", turn.text).strip() if turn.role == "assistant" else turn.text.strip()
        if not text or (not messages and turn.role == "assistant"):
            continue
        block = {"type": "text", "text": text}
        if messages and messages[-1]["role"] == turn.role:
            messages[-1]["content"].append(block)
        else:
            messages.append({"role": turn.role, "content": [block]})
    content: list[dict[str, Any]] = [search_result_block(p) for p in passages]
    content.append({"type": "text", "text": question})
    if messages and messages[-1]["role"] == "user":
        messages[-1]["content"].extend(content)
    else:
        messages.append({"role": "user", "content": content})
    return messages


def build_request(
    question: str, history: list[Turn], passages: list[Passage], config: GenerationConfig
) -> dict[str, Any]:
    """Keyword arguments for ``messages.create`` (with ``stream=True`` for a streamed answer)."""
    return {
        "model": config.model,
        "max_tokens": config.max_tokens,
        # the system prompt is the stable prefix of every request: cache it
        "system": [{"type": "text", "text": config.prompt_template, "cache_control": {"type": "ephemeral"}}],
        "messages": build_messages(question, history, passages),
        "timeout": config.timeout_s,
    }


# --------------------------------------------------------------------------------------------------------
# call


def make_client(*, api_key: str, base_url: str | None, max_retries: int, timeout_s: float) -> AsyncAnthropic:
    """The SDK's client as Deskmate uses it: over aiohttp (the SDK's ``DefaultAioHttpClient``, its vendored
    httpx-aiohttp transport), whose C HTTP parser costs a fraction of the default httpx transport's CPU per streamed
    answer (issue 16). The SDK's retries, timeouts (connect, read, pool), auth and errors are the same; transport
    errors reach it mapped to httpx2's (a read timeout stays a timeout, a dropped connection a connection error).
    The aiohttp session is opened on the first request, on the running loop; :meth:`AsyncAnthropic.close` closes it."""
    return AsyncAnthropic(api_key=api_key, base_url=base_url, max_retries=max_retries, timeout=timeout_s,
                          http_client=DefaultAioHttpClient())


async def generate(
    client: AsyncAnthropic,
    question: str,
    history: list[Turn],
    passages: list[Passage],
    config: GenerationConfig,
    *,
    stream: bool = False,
    sink: TextSink | None = None,
) -> LLMResult:
    """Ask Claude; the streaming and non-streaming paths give the same result. With a ``sink``, the answer's
    text goes to it as it is written (streamed). Raises :class:`LLMError` (or the sink's :class:`StreamStopped`)."""
    request = build_request(question, history, passages, config)
    # Built outside the try: a TypeError here is a bug in the request, not a failure of the API.
    if sink is not None or stream:
        call = _streamed_message(client, request, LiveText(sink, passages) if sink is not None else None)
    else:
        call = client.messages.create(**request)
    try:
        message = await call
    except StreamStopped:
        raise
    except Exception as exc:  # every failure becomes an LLMError, classified below
        error = classify_error(exc)
        if error.reason.startswith("unexpected error"):
            log.exception("llm_unexpected_error")
        else:
            log.warning("llm_error", reason=error.reason, transient=error.transient, error=repr(exc)[:500])
        raise error from exc
    try:
        return result_from_message(message, passages)
    except LLMError as error:
        log.warning("llm_error", reason=error.reason, transient=error.transient)
        raise
    except (AttributeError, TypeError, ValueError, KeyError) as exc:  # a body that isn't a Message
        log.warning("llm_error", reason="malformed response", transient=True, error=repr(exc)[:500])
        raise LLMError("malformed response", transient=True) from exc


# --------------------------------------------------------------------------------------------------------
# the stream


@dataclass
class StreamedMessage:
    """A streamed answer, assembled from its events: what :func:`result_from_message` reads of a ``Message``.

    ``content`` holds the blocks as the API sends them in ``content_block_start`` (plain dicts), a text block's
    ``text`` completed from its ``text_delta`` events and its ``citations`` from its ``citations_delta`` events.
    ``usage`` is the ``message_start`` usage, overwritten by what the ``message_delta`` reports (cumulative counts,
    as the SDK's accumulator does). ``complete``: the ``message_stop`` event arrived.
    """

    model: str
    content: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, Any] = field(default_factory=dict)
    stop_reason: str | None = None
    complete: bool = False


class SSEDecoder:
    """Server-sent events out of a byte stream, framed as the SSE spec says: lines ended by LF, CRLF or CR, an
    event ended by a blank line, ``event:`` and ``data:`` fields (several ``data:`` lines joined by LF), comment
    lines (``:``) and other fields ignored. An event left unterminated when the stream ends is dropped."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes, *, final: bool = False) -> list[tuple[bytes | None, bytes]]:
        """The events (name, data) that ``chunk`` completes; ``final``: the stream ends with it."""
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" in buffer:
            # CRLF and lone CR line ends → LF; a CR at the very end may be the first half of a CRLF: kept back
            held = not final and buffer.endswith(b"\r")
            buffer = buffer[:-1] if held else buffer
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + (b"\r" if held else b"")
        events: list[tuple[bytes | None, bytes]] = []
        start = 0
        while (end := buffer.find(b"\n\n", start)) >= 0:
            event = _parse_event(buffer[start:end])
            if event is not None:
                events.append(event)
            start = end + 2
        self._buffer = buffer[start:]
        return events


def _parse_event(block: bytes) -> tuple[bytes | None, bytes] | None:
    name: bytes | None = None
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if not line or line[0] == 58:  # a blank line (more than one between events) or a ":" comment
            continue
        key, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if key == b"event":
            name = value
        elif key == b"data":
            data.append(value)
    if name is None and not data:
        return None
    return name, b"\n".join(data)


async def _streamed_message(client: AsyncAnthropic, request: dict[str, Any], live: LiveText | None) -> StreamedMessage:
    """Send ``request`` with ``stream: true`` through the SDK (retries, timeouts, status errors), read its events
    here; the text goes to ``live`` (if any) as it comes."""
    raw = await client.messages.create(**request, stream=True)
    try:
        if live is not None:
            await live.sink.writing()
        return await _read_events(raw.response, live)
    finally:
        await raw.close()


async def _read_events(response: httpx2.Response, live: LiveText | None) -> StreamedMessage:
    """The Messages API's events, as the SDK's stream reads them: ``ping`` and events without a name skipped, an
    ``error`` event raised, others dispatched on their data's ``type``; unknown types (the API may add some)
    ignored, and events before ``message_start`` too. A stream that ends before ``message_stop`` is an error (the
    SDK would return the message so far, as if it were whole)."""
    decoder = SSEDecoder()
    message: StreamedMessage | None = None
    texts: list[list[str]] = []  # each block's text: its start text, then its deltas
    async with aclosing(_chunks(response)) as chunks:
        async for chunk, final in chunks:
            for name, data in decoder.feed(chunk, final=final):
                if not name or name == b"ping" or not data:  # no (or an empty) event name: skipped, as by the SDK
                    continue
                if name == b"error":
                    raise _stream_error(data)
                event = orjson.loads(data)
                kind = event["type"]
                if kind == "content_block_delta":
                    if message is None:
                        continue
                    index = event["index"]
                    block = message.content[index]
                    delta = event["delta"]
                    delta_type = delta["type"]
                    if delta_type == "text_delta":
                        if block["type"] == "text":
                            text = delta["text"]
                            texts[index].append(text)
                            if live is not None:
                                await live.on_text(text)
                    elif delta_type == "citations_delta" and block["type"] == "text":
                        citations = block.get("citations")
                        if citations:
                            citations.append(delta["citation"])
                        else:
                            block["citations"] = [delta["citation"]]
                elif message is None:
                    if kind == "message_start":
                        start = event["message"]
                        message = StreamedMessage(model=start["model"], content=list(start.get("content") or []),
                                                  usage=dict(start.get("usage") or {}))
                        texts = [[b.get("text") or ""] if isinstance(b, dict) else [] for b in message.content]
                elif kind == "content_block_start":
                    block = dict(event["content_block"])
                    message.content.append(block)
                    texts.append([block.get("text") or ""])
                elif kind == "content_block_stop":
                    index = event["index"]
                    block = message.content[index]
                    if block["type"] == "text":
                        block["text"] = "".join(texts[index])
                    if live is not None:
                        await live.on_block_stop(block)
                elif kind == "message_delta":
                    delta = event["delta"]
                    message.stop_reason = delta.get("stop_reason")
                    usage = event.get("usage") or {}
                    message.usage["output_tokens"] = usage.get("output_tokens")
                    for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
                        if usage.get(key) is not None:  # cumulative; when left out, message_start's count stands
                            message.usage[key] = usage[key]
                elif kind == "message_stop":
                    message.complete = True
    if message is None or not message.complete:
        raise LLMError("incomplete stream", transient=True)
    for block, parts in zip(message.content, texts, strict=True):
        if block.get("type") == "text":
            block["text"] = "".join(parts)
    return message


async def _chunks(response: httpx2.Response) -> AsyncGenerator[tuple[bytes, bool], None]:
    """The body's chunks as they arrive, then ``(b"", True)`` when it ends."""
    async for chunk in response.aiter_bytes():
        yield chunk, False
    yield b"", True


def _stream_error(data: bytes) -> LLMError:
    """An ``error`` event on a 200 stream, classified as the SDK's status error for it would be."""
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        return LLMError("malformed response", transient=True)
    error = body.get("error") if isinstance(body, dict) else None
    kind = error.get("type") if isinstance(error, dict) else None
    if isinstance(kind, str) and kind in _ERROR_TYPES:
        reason, transient = _ERROR_TYPES[kind]
        return LLMError(reason, transient=transient)
    return LLMError("malformed response", transient=True)


class LiveText:
    """The model's text deltas → the final answer's text, as it comes (see the module docstring)."""

    def __init__(self, sink: TextSink, passages: list[Passage]) -> None:
        self.sink = sink
        self.passages = passages
        self.numbers: dict[int, int] = {}  # passage index → source number, as result_from_message numbers them
        self.held = ""  # the start of the answer, while it could still be NOT_FOUND
        self.decided = False
        self.not_found = False
        self.started = False  # some text was handed on
        self.pending_ws = ""  # trailing whitespace, handed on only if more text follows
        self.sent: list[str] = []

    async def on_text(self, delta: str) -> None:
        if self.not_found or not delta:
            return
        if not self.decided:
            self.held += delta
            head = self.held.lstrip(" \t\r\n*_`")
            if head.startswith(NOT_FOUND_TOKEN):
                self.not_found = True
                return
            if NOT_FOUND_TOKEN.startswith(head):
                return  # could still be the token
            self.decided = True
            delta, self.held = self.held, ""
        await self._emit(delta)

    async def on_block_stop(self, block: Any) -> None:
        """A content block is complete (a :class:`StreamedMessage` block, or the SDK's block object)."""
        if self.not_found or _get(block, "type") != "text":
            return
        cited: list[int] = []
        for citation in _get(block, "citations") or []:
            index = _passage_index(citation, self.passages)
            if index is None:
                continue
            if index not in self.numbers:
                self.numbers[index] = len(self.numbers) + 1
            if self.numbers[index] not in cited:
                cited.append(self.numbers[index])
        if not cited:
            return
        marker = " " + "".join(f"[{n}]" for n in cited)
        if not self.decided:
            await self.on_text(marker)
            return
        # result_from_message puts the marker between the block's text and its trailing whitespace
        text = _get(block, "text") or ""
        trailing = text[len(text.rstrip()):]
        before = self.pending_ws[: len(self.pending_ws) - len(trailing)] if trailing else self.pending_ws
        self.pending_ws = before
        await self._emit(marker + trailing)

    async def _emit(self, text: str) -> None:
        if not self.started:
            text = text.lstrip()
            self.pending_ws = ""
            if not text:
                return
        full = self.pending_ws + text
        body = full.rstrip()
        self.pending_ws = full[len(body):]
        if body:
            self.started = True
            self.sent.append(body)
            await self.sink.text(body)

    @property
    def text(self) -> str:
        """What was handed on so far."""
        return "".join(self.sent)


def classify_error(exc: BaseException) -> LLMError:
    """Map an SDK / transport / parsing exception to an :class:`LLMError`."""
    if isinstance(exc, LLMError):  # already classified (an error event inside a stream, a stream cut short)
        return exc
    if isinstance(exc, anthropic.APITimeoutError):
        return LLMError("timeout", transient=True)
    if isinstance(exc, anthropic.APIConnectionError):
        return LLMError("connection error", transient=True)
    if isinstance(exc, anthropic.APIResponseValidationError):
        return LLMError("malformed response", transient=True)
    if isinstance(exc, anthropic.APIStatusError):
        return _classify_status(exc)
    if isinstance(exc, httpx2.TimeoutException):  # mid-stream, outside the SDK's request wrapper
        return LLMError("timeout", transient=True)
    if isinstance(exc, httpx2.TransportError):
        return LLMError("connection error", transient=True)
    if isinstance(exc, (ValidationError, ValueError, LookupError, AttributeError, TypeError, RuntimeError)):
        # a body or stream event that isn't valid JSON (JSONDecodeError is a ValueError) or isn't shaped like
        # a message (a missing key, a block index out of range, a field of the wrong type)
        return LLMError("malformed response", transient=True)
    return LLMError(f"unexpected error ({type(exc).__name__})", transient=False)


# error.type in the body → (reason, transient); covers errors sent as an SSE ``error`` event on a 200 stream
_ERROR_TYPES: dict[str, tuple[str, bool]] = {
    "overloaded_error": ("overloaded", True),
    "api_error": ("server error", True),
    "rate_limit_error": ("rate limited", True),
    "timeout_error": ("timeout", True),
    "invalid_request_error": ("invalid request", False),
    "authentication_error": ("authentication failed", False),
    "permission_error": ("permission denied", False),
    "not_found_error": ("model or endpoint not found", False),
    "request_too_large": ("request too large", False),
    "billing_error": ("billing error", False),
}


def _classify_status(exc: anthropic.APIStatusError) -> LLMError:
    status = exc.status_code
    if status == 529:
        return LLMError("overloaded (529)", transient=True)
    if status == 429:
        return LLMError("rate limited (429)", transient=True)
    if status >= 500:
        return LLMError(f"server error ({status})", transient=True)
    if status in (408, 409):
        return LLMError(f"request timeout ({status})" if status == 408 else "conflict (409)", transient=True)
    if status < 400 and exc.type in _ERROR_TYPES:  # an error event inside a stream
        reason, transient = _ERROR_TYPES[exc.type]
        return LLMError(reason, transient=transient)
    if status < 400:
        return LLMError("malformed response", transient=True)
    reason = _ERROR_TYPES.get(exc.type or "", ("request rejected", False))[0]
    return LLMError(f"{reason} ({status})", transient=False)


# --------------------------------------------------------------------------------------------------------
# response


def result_from_message(message: anthropic.types.Message | StreamedMessage, passages: list[Passage]) -> LLMResult:
    """Text with ``[n]`` markers, sources in order of first citation, and usage, from an API ``Message`` (a
    non-streamed answer) or a :class:`StreamedMessage` (a streamed one): the same answer gives the same result."""
    blocks: list[tuple[Any, Any]]  # (text, citations) of each text block
    if isinstance(message, StreamedMessage):
        if not all(isinstance(b, dict) for b in message.content):
            raise LLMError("malformed response", transient=True)
        blocks = [(b.get("text"), b.get("citations")) for b in message.content if b.get("type") == "text"]
    elif isinstance(message, anthropic.types.Message) and isinstance(message.content, list):
        blocks = [(b.text, b.citations) for b in message.content if isinstance(b, anthropic.types.TextBlock)]
    else:
        raise LLMError("malformed response", transient=True)

    numbers: dict[int, int] = {}  # passage index → source number
    sources: list[Source] = []
    parts: list[str] = []
    for text, citations in blocks:
        if not isinstance(text, str) or not isinstance(citations, (list, type(None))):
            raise LLMError("malformed response", transient=True)
        cited: list[int] = []
        for citation in citations or []:
            index = _passage_index(citation, passages)
            if index is None:
                continue
            if index not in numbers:
                numbers[index] = len(numbers) + 1
                passage = passages[index]
                sources.append(
                    Source(
                        number=numbers[index],
                        doc_id=passage.doc_id,
                        title=passage.title,
                        location=passage.location,
                        heading=passage.heading,
                        quote=(_get(citation, "cited_text") or "").strip(),
                    )
                )
            if numbers[index] not in cited:
                cited.append(numbers[index])
        if cited:
            body = text.rstrip()
            trailing = text[len(body) :]
            text = body + " " + "".join(f"[{n}]" for n in cited) + trailing
        parts.append(text)

    text = "".join(parts).strip()
    token = _NOT_FOUND.match(text)
    not_found = token is not None
    if token:
        text = text[token.end() :].strip()
    elif not text:
        raise LLMError("empty response", transient=False)

    usage = message.usage
    return LLMResult(
        text=text,
        sources=sources,
        not_found=not_found,
        usage=Usage(
            input_tokens=_get(usage, "input_tokens") or 0,
            output_tokens=_get(usage, "output_tokens") or 0,
            cache_read_tokens=_get(usage, "cache_read_input_tokens") or 0,
            cache_write_tokens=_get(usage, "cache_creation_input_tokens") or 0,
        ),
        model=str(message.model),
        stop_reason=message.stop_reason,
    )


def _get(obj: Any, name: str) -> Any:
    """A field of an API object: a key of a streamed message's dict, an attribute of the SDK's model."""
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _passage_index(citation: Any, passages: list[Passage]) -> int | None:
    if _get(citation, "type") != "search_result_location":
        return None
    index = _get(citation, "search_result_index")
    if not isinstance(index, int) or not 0 <= index < len(passages):
        log.warning("llm_citation_out_of_range", index=index, passages=len(passages))
        return None
    return index
