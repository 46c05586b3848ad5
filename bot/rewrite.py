"""The query rewrite: a fast, cheap model call that turns a thread's history and its new message into one
standalone search query, in the documents' language.

"and if that doesn't help?" after "vpn not working" becomes "VPN still not working after troubleshooting"; a
question in Portuguese over English documents becomes an English query. The pipeline
(:func:`bot.pipeline.search_query`) decides when to ask (the release's ``query_rewrite``) and uses the offline
query of :mod:`knowledge.query` whenever this call is skipped or fails.

The call goes through the real ``anthropic`` SDK like the answer (:mod:`bot.llm`) and through the same circuit
breaker (:mod:`bot.breaker`, name ``anthropic``): a transient failure counts against it, and an open circuit
skips the call. It has its own short timeout (``DESKMATE_QUERY_REWRITE_TIMEOUT_S``, 5 s) and at most one retry:
the user waits for it before anything is searched. Its tokens are priced like the answer's
(:mod:`bot.core.pricing`); the pipeline adds them to the interaction's totals and traces the call as a
``rewrite`` generation.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import anthropic
from anthropic import AsyncAnthropic

from bot.breaker import CircuitBreaker
from bot.core.log import get_logger
from bot.core.pricing import cost_usd
from bot.core.settings import Settings
from bot.core.types import Usage
from bot.llm import LLMError, Turn, classify_error

log = get_logger(__name__)

REWRITE_PROMPT_VERSION = "rewrite-v1"
#: A search query is a line; this leaves room for a long one and stops a model that starts answering.
REWRITE_MAX_TOKENS = 100
#: Each earlier message is cut to this many characters: the rewrite needs the topic, not the whole answer.
TURN_CHARS = 600
#: The earlier messages sent, at most (the newest).
MAX_TURNS = 6
#: A longer reply is not a query.
MAX_QUERY_CHARS = 400

REASON_NO_KEY = "no API key configured"
REASON_CIRCUIT_OPEN = "circuit open"

LANGUAGES = {"en": "English", "de": "German", "fr": "French", "es": "Spanish", "pt": "Portuguese", "it": "Italian",
             "nl": "Dutch", "sv": "Swedish", "da": "Danish", "no": "Norwegian", "fi": "Finnish", "pl": "Polish",
             "cs": "Czech", "ja": "Japanese", "zh": "Chinese", "ko": "Korean", "ru": "Russian", "uk": "Ukrainian",
             "tr": "Turkish"}

SYSTEM_PROMPT = """\
You turn the latest message of a workplace help-desk chat into one standalone search query for the company's \
internal documents.

- Resolve what the latest message refers to ("it", "that", "and if…", "what about…") from the conversation, so \
the query makes sense on its own.
- Keep the user's specific terms: product and system names, error messages, places, numbers.
- If the latest message starts a new topic, use it alone: do not carry the earlier topic over.
- Write the query in {language}, translating it if the message is in another language.
- Reply with the query only: one line, no quotes, no explanation. Never answer the question."""

_MARKER = re.compile(r"\s?\[\d+\]")
_PREFIX = re.compile(r"^(?:search\s+)?query\s*:\s*", re.IGNORECASE)


@dataclass
class Rewrite:
    """What the rewrite came to: ``query`` None = no usable query (skipped: ``called`` False; or failed)."""

    query: str | None
    called: bool = False
    model: str = ""
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    error: str | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)  # what was sent (for the trace)


def language_name(code: str) -> str:
    return LANGUAGES.get(code.lower().split("-")[0], code)


def build_rewrite_request(message: str, history: list[Turn], *, model: str, language: str) -> dict[str, Any]:
    """Keyword arguments for ``messages.create``: the conversation as a transcript in one user message (so the
    model writes a query rather than continuing the chat), then the latest message."""
    lines = []
    for turn in history[-MAX_TURNS:]:
        text = _MARKER.sub("", turn.text) if turn.role == "assistant" else turn.text
        text = " ".join(text.split())
        if text:
            cut = text if len(text) <= TURN_CHARS else text[:TURN_CHARS].rstrip() + "…"
            lines.append(f"{turn.role}: {cut}")
    conversation = "\n".join(lines) or "(no earlier messages)"
    content = (f"<conversation>\n{conversation}\n</conversation>\n\n"
               f"<latest_message>\n{' '.join(message.split())}\n</latest_message>\n\n"
               "The standalone search query:")
    return {
        "model": model,
        "max_tokens": REWRITE_MAX_TOKENS,
        "system": SYSTEM_PROMPT.format(language=language_name(language)),
        "messages": [{"role": "user", "content": content}],
    }


def query_from_message(message: Any) -> str:
    """The query in a ``Message``: its first non-empty line, without quotes or a "Query:" label."""
    if not isinstance(message, anthropic.types.Message):
        raise LLMError("malformed response", transient=True)
    text = "".join(b.text for b in message.content if isinstance(b, anthropic.types.TextBlock))
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = _PREFIX.sub("", line).strip().strip("\"'`“”‘’").strip()
    if not line:
        raise LLMError("empty response", transient=False)
    if len(line) > MAX_QUERY_CHARS:
        raise LLMError("not a search query (too long)", transient=False)
    return line


class QueryRewriter:
    """Asks the rewrite model for a standalone query; shares the answer's client (its connection pool) and its
    circuit breaker, with its own timeout and retries."""

    def __init__(self, settings: Settings, client: AsyncAnthropic | None, breaker: CircuitBreaker | None) -> None:
        self.settings = settings
        self.client = (client.with_options(timeout=settings.query_rewrite_timeout_s,
                                           max_retries=min(1, settings.query_rewrite_max_retries))
                       if client is not None else None)
        #: None: every call is allowed (no Redis, e.g. an evaluation).
        self.breaker = breaker

    @property
    def available(self) -> bool:
        """A key is configured (the circuit may still be open: :meth:`rewrite` says so)."""
        return self.client is not None

    async def rewrite(self, message: str, history: list[Turn], *, model: str, language: str) -> Rewrite:
        """The standalone query for ``message``; never raises (a failure is a :class:`Rewrite` without query)."""
        if self.client is None:
            return Rewrite(query=None, error=REASON_NO_KEY)
        if self.breaker is not None and not await self.breaker.allow():
            return Rewrite(query=None, error=REASON_CIRCUIT_OPEN)
        request = build_rewrite_request(message, history, model=model, language=language)
        started = time.perf_counter()
        try:
            reply = await self.client.messages.create(**request)
            query = query_from_message(reply)
        except Exception as exc:  # every failure: the offline query takes over
            error = exc if isinstance(exc, LLMError) else classify_error(exc)
            if error.reason.startswith("unexpected error"):
                log.exception("rewrite.unexpected_error")
            else:
                log.warning("rewrite.failed", reason=error.reason, transient=error.transient, error=repr(exc)[:300])
            # like the answer: a transient failure counts against the breaker; a rejected request shows the API up
            await self._record(success=not error.transient)
            return Rewrite(query=None, called=True, model=model, latency_ms=_ms_since(started), error=error.reason,
                           messages=request["messages"])
        latency = _ms_since(started)
        await self._record(success=True)
        usage = Usage(
            input_tokens=getattr(reply.usage, "input_tokens", 0) or 0,
            output_tokens=getattr(reply.usage, "output_tokens", 0) or 0,
            cache_read_tokens=getattr(reply.usage, "cache_read_input_tokens", 0) or 0,
            cache_write_tokens=getattr(reply.usage, "cache_creation_input_tokens", 0) or 0,
        )
        ran = str(reply.model or model)
        return Rewrite(query=query, called=True, model=ran, usage=usage,
                       cost_usd=cost_usd(ran, usage, self.settings.model_prices), latency_ms=latency,
                       messages=request["messages"])

    async def _record(self, *, success: bool) -> None:
        if self.breaker is not None:
            await self.breaker.record(success=success)


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
