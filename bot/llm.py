"""Claude with citations: passages in, a Markdown answer with ``[n]`` markers and numbered sources out.

Passages travel as ``search_result`` content blocks with citations enabled, so the API itself ties each span
of the answer to the passage it came from (a ``search_result_location`` citation whose
``search_result_index`` is the passage's position in the request). We put a ``[n]`` marker after each cited
span, numbering sources in order of first citation.

The model says "the sources don't answer this" by starting its reply with the exact token ``NOT_FOUND``
(see :data:`DEFAULT_PROMPT_TEMPLATE`); :attr:`LLMResult.not_found` reports it and the token is removed.

Streaming (``generate(..., sink=...)``): the answer is read with the SDK's streaming Messages API and its text is
handed to a :class:`TextSink` as it comes, already as the final answer will read — leading whitespace dropped, a
``[n]`` marker after each cited block (numbers in order of first citation, as :func:`result_from_message` gives
them), and nothing at all while the text could still be the ``NOT_FOUND`` token (a "not found" answer is never
streamed). The concatenated deltas equal :attr:`LLMResult.text` of the same message. A sink may raise
:class:`StreamStopped` to end the call at once (the kill-switch was set mid-stream).

Every failure leaves as an :class:`LLMError` saying whether it is transient (worth counting against the
circuit breaker: timeouts, connection errors, 429, 5xx, 529 overloaded, a malformed body) or permanent
(400/401/403/404…: retrying will not help).
"""

from __future__ import annotations

import re
from typing import Any, Literal, Protocol

import anthropic
import httpx2
from anthropic import AsyncAnthropic
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
    """Keyword arguments for ``messages.create`` / ``messages.stream``."""
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
    if sink is not None:
        call = _live_message(client.messages.stream(**request), LiveText(sink, passages))
    elif stream:
        call = _final_message(client.messages.stream(**request))
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


async def _final_message(manager: Any) -> Any:
    """The stream assembled into the same ``Message`` that ``messages.create`` returns."""
    async with manager as events:
        return await events.get_final_message()


async def _live_message(manager: Any, live: LiveText) -> Any:
    """The stream, its text handed to ``live`` as it comes, then assembled like :func:`_final_message`."""
    async with manager as events:
        await live.sink.writing()
        async for event in events:
            kind = getattr(event, "type", None)
            if kind == "text":
                await live.on_text(event.text)
            elif kind == "content_block_stop":
                await live.on_block_stop(getattr(event, "content_block", None))
        return await events.get_final_message()


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
        if self.not_found or getattr(block, "type", None) != "text":
            return
        cited: list[int] = []
        for citation in getattr(block, "citations", None) or []:
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
        text = getattr(block, "text", "") or ""
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
    if isinstance(exc, (ValidationError, ValueError, KeyError, AttributeError, TypeError, RuntimeError)):
        # a body or stream event that isn't valid JSON (JSONDecodeError is a ValueError) or isn't shaped like
        # a message (the stream accumulator raises RuntimeError on events out of order)
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


def result_from_message(message: Any, passages: list[Passage]) -> LLMResult:
    """Text with ``[n]`` markers, sources in order of first citation, and usage, from an API ``Message``."""
    if not isinstance(message, anthropic.types.Message) or not isinstance(message.content, list):
        raise LLMError("malformed response", transient=True)

    numbers: dict[int, int] = {}  # passage index → source number
    sources: list[Source] = []
    parts: list[str] = []
    for block in message.content:
        if not isinstance(block, anthropic.types.TextBlock):
            continue
        text = block.text
        if not isinstance(text, str):
            raise LLMError("malformed response", transient=True)
        cited: list[int] = []
        for citation in block.citations or []:
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
                        quote=(getattr(citation, "cited_text", "") or "").strip(),
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
            input_tokens=getattr(usage, "input_tokens", 0) or 0,
            output_tokens=getattr(usage, "output_tokens", 0) or 0,
            cache_read_tokens=getattr(usage, "cache_read_input_tokens", 0) or 0,
            cache_write_tokens=getattr(usage, "cache_creation_input_tokens", 0) or 0,
        ),
        model=str(message.model),
        stop_reason=message.stop_reason,
    )


def _passage_index(citation: Any, passages: list[Passage]) -> int | None:
    if getattr(citation, "type", None) != "search_result_location":
        return None
    index = getattr(citation, "search_result_index", None)
    if not isinstance(index, int) or not 0 <= index < len(passages):
        log.warning("llm_citation_out_of_range", index=index, passages=len(passages))
        return None
    return index
