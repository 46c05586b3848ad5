"""A local fake of the Slack Web API (and of Socket Mode's websocket), spoken over real HTTP.

Point ``AsyncWebClient(base_url=fake.api_url)`` (Deskmate: ``DESKMATE_SLACK_API_URL``) at it. Every call is
recorded (``fake.calls``) with its arguments, whether the SDK sent them as JSON, a form or a query string.
Responses have Slack's real shapes (``{"ok": true, ...}``; errors are HTTP 200 ``{"ok": false, "error": ...}``;
rate limits are HTTP 429 with ``Retry-After``). ``response_url`` posts go to ``fake.response_url(name)``.

    async with start_fake_slack() as slack:
        slack.channels["C_PUBLIC"] = "public"          # conversations.info answers for it
        slack.rate_limit_once("chat.update", retry_after=1)
        slack.fail("chat.postMessage", "not_in_channel")
        slack.fail_http("chat.update", 500, times=2, html=True)   # an HTML error page, twice, then fine
        slack.rate_limit("chat.update", retry_after=0.5, times=5)
        slack.outage(2.0)                                          # every call: HTML 503 for 2 s
        await slack.go_down(); ...; await slack.come_back()        # connection refused, then back on the same port
        ...
        update = await slack.wait_for("chat.update")
        assert update.args["ts"] == placeholder.response["ts"]

Streaming (the AI-app methods, recorded like every call): ``chat.startStream`` creates a message in a thread
(``thread_ts`` required; outside DMs ``recipient_team_id`` and ``recipient_user_id`` too), ``chat.appendStream``
adds ``markdown_text`` to it while it streams, ``chat.stopStream`` ends it (optionally with more text and
``blocks``); ``markdown_text`` over 12,000 characters is ``msg_too_long``, an append after the stop is
``message_not_in_streaming_state``. ``fake.message_text(channel, ts)`` is what a user sees of a message.
``assistant.threads.setStatus`` needs ``channel_id`` and ``thread_ts``. A ``chat.postMessage``/``chat.update``
whose blocks hold more than :data:`BLOCKS_TEXT_LIMIT` characters of text is refused with
``msg_blocks_too_long``, as Slack does in practice; a ``markdown`` block (``type``, ``text``, optional
``block_id`` and nothing else; ``text`` a non-empty string, all of a message's markdown blocks together at most
:data:`MARKDOWN_BLOCKS_LIMIT` characters) is checked like the others, a malformed one is ``invalid_blocks``.

Socket Mode: ``apps.connections.open`` returns this server's ``ws://`` URL; on connect the fake sends Slack's
``hello`` message; ``await slack.send_envelope("events_api", payload)`` delivers an envelope and
``await slack.wait_for_ack(envelope_id)`` returns the client's acknowledgement.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web

BOT_USER_ID = "W111"  # the bot user of bolt-python's test payloads (their mentions say <@W111>)
BOT_ID = "B111"
TEAM_ID = "T111"

ChannelKind = str  # "public" | "private" | "im" | "mpim"
MARKDOWN_TEXT_LIMIT = 12_000  # chat.*Stream markdown_text, per call
BLOCKS_TEXT_LIMIT = 12_000  # the text in one message's blocks, beyond which Slack answers msg_blocks_too_long
MARKDOWN_BLOCKS_LIMIT = 12_000  # the text of all markdown blocks of one message (Block Kit's markdown block)


@dataclass
class Call:
    method: str  # "chat.postMessage", or "response_url" for posts to a response URL
    args: dict[str, Any]
    headers: dict[str, str]
    response: dict[str, Any] = field(default_factory=dict)
    status: int = 200
    at: float = field(default_factory=time.monotonic)
    path: str = ""

    @property
    def text_of_blocks(self) -> str:
        """All text in the call's blocks (and its ``text``), for assertions."""
        return self.args.get("text", "") + "\n" + json.dumps(self.args.get("blocks") or [], ensure_ascii=False)


@dataclass
class _Injected:
    status: int
    body: dict[str, Any] | str  # a str is sent as an HTML page
    headers: dict[str, str]
    times: int


HTML_ERROR = ("<!DOCTYPE html><html><head><title>Slack | {status}</title></head><body><h1>Something went wrong"
              "</h1><p>{status}: we are having trouble, please try again.</p></body></html>")


class FakeSlack:
    """The fake server. Use :func:`start_fake_slack` to run one."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.channels: dict[str, ChannelKind] = {}
        self.default_channel_kind: ChannelKind | None = None  # conversations.info for channels not listed
        self.users: dict[str, dict[str, Any]] = {}
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}  # (channel, ts) -> message
        self._injected: dict[str, list[_Injected]] = {}
        self._ts = itertools.count(1)
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._outage_until = 0.0
        self._outage_status = 503
        # Socket Mode
        self.sockets: list[web.WebSocketResponse] = []
        self.socket_acks: dict[str, dict[str, Any]] = {}
        self.socket_messages: list[dict[str, Any]] = []

    # --- addresses --------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """``base_url`` for the Web API client (with the trailing slash slack_sdk expects)."""
        return f"{self.url}/api/"

    def response_url(self, name: str = "r1") -> str:
        return f"{self.url}/response/{name}"

    # --- scripting -------------------------------------------------------------------------------------
    def fail(self, method: str, error: str, *, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` answer ``{"ok": false, "error": error}``."""
        self._injected.setdefault(method, []).append(_Injected(200, {"ok": False, "error": error}, {}, times))

    def rate_limit_once(self, method: str, retry_after: int = 1) -> None:
        """The next call of ``method`` gets HTTP 429 with ``Retry-After``, as Slack's rate limiter answers."""
        self._injected.setdefault(method, []).append(
            _Injected(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(retry_after)}, 1))

    def rate_limit(self, method: str, retry_after: float = 1.0, *, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` get HTTP 429 with ``Retry-After: retry_after``."""
        self._injected.setdefault(method, []).append(
            _Injected(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": f"{retry_after:g}"}, times))

    def fail_http(self, method: str, status: int = 500, *, times: int = 1, html: bool = False,
                  retry_after: float | None = None) -> None:
        """The next ``times`` calls of ``method`` get HTTP ``status``: Slack's JSON error, or (``html``) the HTML
        error page a load balancer answers with."""
        body: dict[str, Any] | str = (HTML_ERROR.format(status=status) if html
                                      else {"ok": False, "error": "internal_error"})
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
        self._injected.setdefault(method, []).append(_Injected(status, body, headers, times))

    def outage(self, seconds: float, *, status: int = 503) -> None:
        """Every Web API call gets an HTML ``status`` page for ``seconds`` from now; then Slack is back."""
        self._outage_until = time.monotonic() + seconds
        self._outage_status = status

    def end_outage(self) -> None:
        self._outage_until = 0.0

    async def go_down(self) -> None:
        """Slack unreachable: the server stops (connections are refused) until :meth:`come_back`."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def come_back(self) -> None:
        """Serve again on the same port."""
        if self._runner is None:
            await self.start(self.port)

    def reset(self) -> None:
        self.calls.clear()
        self._injected.clear()
        self._outage_until = 0.0
        self.socket_acks.clear()
        self.socket_messages.clear()

    def seed(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        """Answer a Web API call as if someone (an earlier worker) had made it: the state changes, nothing is
        recorded in :attr:`calls`."""
        handler = getattr(self, "_m_" + method.replace(".", "_"))
        result: dict[str, Any] = handler(args)
        return result

    # --- reading what happened ------------------------------------------------------------------------
    def calls_to(self, method: str, **match: Any) -> list[Call]:
        return [c for c in self.calls if c.method == method and all(c.args.get(k) == v for k, v in match.items())]

    async def wait_for(self, method: str, predicate: Callable[[Call], bool] | None = None, *, count: int = 1,
                       timeout: float = 20.0, **match: Any) -> Call:
        """The ``count``-th call of ``method`` that matches; waits for it."""

        def found() -> Call | None:
            hits = [c for c in self.calls_to(method, **match) if predicate is None or predicate(c)]
            return hits[count - 1] if len(hits) >= count else None

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: found() is not None), timeout)
            except TimeoutError:
                seen = [(c.method, {k: c.args.get(k) for k in ("channel", "ts", "thread_ts", "text")})
                        for c in self.calls]
                raise TimeoutError(f"no {count}x {method} {match or ''} within {timeout}s; calls: {seen}") from None
        result = found()
        assert result is not None
        return result

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # --- lifecycle ------------------------------------------------------------------------------------
    async def start(self, port: int = 0) -> None:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)
        app.router.add_post("/response/{name}", self._response_url)
        app.router.add_get("/socket-mode/link/", self._socket)
        app.router.add_get("/_counts", self._counts)
        app.router.add_get("/_calls", self._calls_json)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        for ws in list(self.sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- Web API ----------------------------------------------------------------------------------------
    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = await _request_args(request)
        headers = {k.lower(): v for k, v in request.headers.items()}
        call = Call(method, args, headers, path=request.path)
        outage = time.monotonic() < self._outage_until
        injected = None if outage else self._take_injected(method)
        if outage:
            call.status = self._outage_status
            response = web.Response(text=HTML_ERROR.format(status=call.status), status=call.status,
                                    content_type="text/html")
        elif injected is not None:
            call.status = injected.status
            if isinstance(injected.body, str):
                response = web.Response(text=injected.body, status=injected.status, content_type="text/html",
                                        headers=injected.headers)
            else:
                call.response = injected.body
                response = web.json_response(injected.body, status=injected.status, headers=injected.headers)
        else:
            call.response = self._answer(method, args, headers)
            response = web.json_response(call.response)
        self.calls.append(call)
        await self._notify()
        return response

    def _take_injected(self, method: str) -> _Injected | None:
        queue = self._injected.get(method)
        if not queue:
            return None
        injected = queue[0]
        injected.times -= 1
        if injected.times <= 0:
            queue.pop(0)
        return injected

    def _next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    def _answer(self, method: str, args: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        token = headers.get("authorization", "").removeprefix("Bearer ").strip() or str(args.get("token", ""))
        if method == "apps.connections.open":
            if not token.startswith("xapp-"):
                return {"ok": False, "error": "not_allowed_token_type"}
            return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/socket-mode/link/?ticket={uuid.uuid4()}&app_id=A111"}
        if not token.startswith("xoxb-"):
            return {"ok": False, "error": "not_authed"}
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            return {"ok": False, "error": "unknown_method"}
        return handler(args)

    def _m_auth_test(self, _args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": "https://northwind.slack.com/", "team": "Northwind Labs", "user": "deskmate",
                "team_id": TEAM_ID, "user_id": BOT_USER_ID, "bot_id": BOT_ID, "is_enterprise_install": False}

    def _bot_message(self, args: dict[str, Any], ts: str) -> dict[str, Any]:
        message: dict[str, Any] = {"type": "message", "subtype": "bot_message", "text": args.get("text", ""),
                                   "user": BOT_USER_ID, "bot_id": BOT_ID, "ts": ts, "app_id": "A111", "team": TEAM_ID}
        if args.get("blocks"):
            message["blocks"] = _json_arg(args["blocks"])
        if args.get("thread_ts"):
            message["thread_ts"] = args["thread_ts"]
        return message

    def message_text(self, channel: str, ts: str) -> str:
        """What a user reads of a message: a streamed message's Markdown, else the text of its blocks (or text)."""
        message = self.messages.get((channel, ts))
        if message is None:
            return ""
        if "streamed_text" in message:
            return str(message["streamed_text"])
        texts = [t for block in message.get("blocks") or [] for t in _block_texts(block)]
        return "\n".join(texts) if texts else str(message.get("text", ""))

    def _m_chat_startStream(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, thread_ts = str(args.get("channel", "")), str(args.get("thread_ts", ""))
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if not thread_ts:
            return {"ok": False, "error": "invalid_arguments"}
        if not channel.startswith("D"):
            if not args.get("recipient_team_id"):
                return {"ok": False, "error": "missing_recipient_team_id"}
            if not args.get("recipient_user_id"):
                return {"ok": False, "error": "missing_recipient_user_id"}
        text = str(args.get("markdown_text") or "")
        if len(text) > MARKDOWN_TEXT_LIMIT:
            return {"ok": False, "error": "msg_too_long"}
        ts = self._next_ts()
        message = self._bot_message({"thread_ts": thread_ts}, ts)
        message.update(streamed_text=text, streaming=True)
        self.messages[(channel, ts)] = message
        return {"ok": True, "channel": channel, "ts": ts}

    def _streaming(self, args: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        channel, ts = str(args.get("channel", "")), str(args.get("ts", ""))
        message = self.messages.get((channel, ts))
        if message is None:
            return None, {"ok": False, "error": "message_not_found"}
        if not message.get("streaming"):
            return None, {"ok": False, "error": "message_not_in_streaming_state"}
        if len(str(args.get("markdown_text") or "")) > MARKDOWN_TEXT_LIMIT:
            return None, {"ok": False, "error": "msg_too_long"}
        return message, {"ok": True, "channel": channel, "ts": ts}

    def _m_chat_appendStream(self, args: dict[str, Any]) -> dict[str, Any]:
        message, response = self._streaming(args)
        if message is not None:
            message["streamed_text"] += str(args.get("markdown_text") or "")
        return response

    def _m_chat_stopStream(self, args: dict[str, Any]) -> dict[str, Any]:
        message, response = self._streaming(args)
        if message is not None:
            message["streamed_text"] += str(args.get("markdown_text") or "")
            message["streaming"] = False
            if args.get("blocks"):
                message["final_blocks"] = _json_arg(args["blocks"])
            response["message"] = {k: v for k, v in message.items() if k != "streaming"}
        return response

    def _m_assistant_threads_setStatus(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("channel_id") or not args.get("thread_ts"):
            return {"ok": False, "error": "invalid_arguments"}
        return {"ok": True}

    def _m_chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = str(args.get("channel", ""))
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if not (args.get("text") or args.get("blocks")):
            return {"ok": False, "error": "no_text"}
        if _invalid_blocks(args):
            return {"ok": False, "error": "invalid_blocks"}
        if _blocks_too_long(args):
            return {"ok": False, "error": "msg_blocks_too_long"}
        ts = self._next_ts()
        message = self._bot_message(args, ts)
        self.messages[(channel, ts)] = message
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _m_chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(args.get("channel", "")), str(args.get("ts", ""))
        if (channel, ts) not in self.messages:
            return {"ok": False, "error": "message_not_found"}
        if _invalid_blocks(args):
            return {"ok": False, "error": "invalid_blocks"}
        if _blocks_too_long(args):
            return {"ok": False, "error": "msg_blocks_too_long"}
        message = self._bot_message(args, ts)
        self.messages[(channel, ts)] = message
        return {"ok": True, "channel": channel, "ts": ts, "text": args.get("text", ""), "message": message}

    def _m_chat_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(args.get("channel", "")), str(args.get("ts", ""))
        if self.messages.pop((channel, ts), None) is None:
            return {"ok": False, "error": "message_not_found"}
        return {"ok": True, "channel": channel, "ts": ts}

    def _m_chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("user"):
            return {"ok": False, "error": "user_not_in_channel"}
        if _invalid_blocks(args):
            return {"ok": False, "error": "invalid_blocks"}
        return {"ok": True, "message_ts": self._next_ts()}

    def _m_chat_getPermalink(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(args.get("channel", "")), str(args.get("message_ts", ""))
        return {"ok": True, "channel": channel,
                "permalink": f"https://northwind.slack.com/archives/{channel}/p{ts.replace('.', '')}"}

    def _m_reactions_add(self, _args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True}

    _m_reactions_remove = _m_reactions_add
    _m_assistant_threads_setSuggestedPrompts = _m_reactions_add
    _m_assistant_threads_setTitle = _m_reactions_add

    def user_message(self, channel: str, text: str, *, user: str, thread_ts: str | None = None) -> str:
        """A person's message in ``channel`` (what Slack holds; the matching ``message`` event is the test's to
        send): returns its ts."""
        ts = self._next_ts()
        message: dict[str, Any] = {"type": "message", "user": user, "text": text, "ts": ts, "team": TEAM_ID}
        if thread_ts:
            message["thread_ts"] = thread_ts
        self.messages[(channel, ts)] = message
        return ts

    def _m_conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        """The thread of ``ts`` (a parent's ts or a reply's), parent first, paged by ``limit`` and ``cursor``
        (``has_more`` and ``response_metadata.next_cursor`` as Slack pages)."""
        channel, ts = str(args.get("channel", "")), str(args.get("ts", ""))
        message = self.messages.get((channel, ts))
        if message is None:
            return {"ok": False, "error": "thread_not_found"}
        root = str(message.get("thread_ts") or ts)
        thread = sorted((m for (c, _), m in self.messages.items()
                         if c == channel and (m.get("ts") == root or m.get("thread_ts") == root)),
                        key=lambda m: float(m["ts"]))
        limit = int(args.get("limit") or 1000)
        start = int(args.get("cursor") or 0)
        page = thread[start:start + limit]
        more = start + limit < len(thread)
        return {"ok": True, "messages": page, "has_more": more,
                "response_metadata": {"next_cursor": str(start + limit) if more else ""}}

    def _m_views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("trigger_id"):
            return {"ok": False, "error": "invalid_arguments"}
        view = _json_arg(args.get("view")) or {}
        view_id = f"V{next(self._ts):08d}"
        return {"ok": True, "view": {
            "id": view_id, "team_id": TEAM_ID, "type": view.get("type", "modal"), "title": view.get("title"),
            "close": view.get("close"), "submit": view.get("submit"), "blocks": view.get("blocks", []),
            "private_metadata": view.get("private_metadata", ""), "callback_id": view.get("callback_id", ""),
            "state": {"values": {}}, "hash": f"{int(time.time())}.abc", "clear_on_close": False,
            "notify_on_close": False, "root_view_id": view_id, "previous_view_id": None, "app_id": "A111",
            "external_id": "", "bot_id": BOT_ID}}

    def _m_conversations_info(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = str(args.get("channel", ""))
        kind = self.channels.get(channel, self.default_channel_kind)
        if kind is None:
            return {"ok": False, "error": "channel_not_found"}
        if kind == "im":
            return {"ok": True, "channel": {"id": channel, "created": 1700000000, "is_im": True, "is_org_shared": False,
                                            "user": "W222", "is_user_deleted": False, "priority": 0}}
        return {"ok": True, "channel": {
            "id": channel, "name": channel.lower(), "is_channel": kind in ("public", "private"),
            "is_group": kind == "private", "is_im": False, "is_mpim": kind == "mpim",
            "is_private": kind in ("private", "mpim"), "created": 1700000000, "is_archived": False,
            "is_general": False, "unlinked": 0, "name_normalized": channel.lower(), "is_shared": False,
            "is_org_shared": False, "is_pending_ext_shared": False, "pending_shared": [],
            "context_team_id": TEAM_ID, "parent_conversation": None, "creator": "W222", "is_ext_shared": False,
            "shared_team_ids": [TEAM_ID], "pending_connected_team_ids": [], "is_member": True,
            "topic": {"value": "", "creator": "", "last_set": 0}, "purpose": {"value": "", "creator": "", "last_set": 0},
            "previous_names": []}}

    def _m_users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = str(args.get("user", ""))
        profile = self.users.get(user, {})
        name = profile.get("name", user.lower())
        return {"ok": True, "user": {
            "id": user, "team_id": TEAM_ID, "name": name, "deleted": False, "real_name": profile.get("real_name", name),
            "tz": "Europe/London", "tz_label": "Greenwich Mean Time", "tz_offset": 0,
            "profile": {"real_name": profile.get("real_name", name), "display_name": name, "team": TEAM_ID},
            "is_admin": False, "is_owner": False, "is_bot": False, "is_app_user": False, "updated": 1700000000}}

    async def _counts(self, _request: web.Request) -> web.Response:
        """Calls per method (for a benchmark driving the fake from another process)."""
        counts: dict[str, int] = {}
        for call in self.calls:
            counts[call.method] = counts.get(call.method, 0) + 1
        return web.json_response(counts)

    async def _calls_json(self, _request: web.Request) -> web.Response:
        """Every call's method, channel, HTTP status, ``ok`` and arrival (``time.monotonic()``: comparable across
        processes on one machine), for a benchmark driving the fake from another process."""
        return web.json_response([{"method": c.method, "channel": c.args.get("channel"), "status": c.status,
                                   "ok": bool(c.response.get("ok")), "at": c.at} for c in self.calls])

    # --- response_url -----------------------------------------------------------------------------------
    async def _response_url(self, request: web.Request) -> web.Response:
        args = await _request_args(request)
        call = Call("response_url", args, {k.lower(): v for k, v in request.headers.items()}, path=request.path)
        injected = self._take_injected("response_url")
        self.calls.append(call)
        await self._notify()
        if injected is not None and isinstance(injected.body, str):
            call.status = injected.status
            return web.Response(text=injected.body, status=injected.status, content_type="text/html",
                                headers=injected.headers)
        if injected is not None:
            call.status = injected.status
            return web.json_response(injected.body, status=injected.status, headers=injected.headers)
        return web.Response(text="ok")  # what Slack answers to a successful response_url post

    # --- Socket Mode ------------------------------------------------------------------------------------
    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.sockets.append(ws)
        await ws.send_json({"type": "hello", "num_connections": len(self.sockets),
                            "debug_info": {"host": "applink-fake", "build_number": 1,
                                           "approximate_connection_time": 18060},
                            "connection_info": {"app_id": "A111"}})
        await self._notify()
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                data = json.loads(message.data)
                self.socket_messages.append(data)
                if "envelope_id" in data:
                    self.socket_acks[data["envelope_id"]] = data
                await self._notify()
        finally:
            if ws in self.sockets:
                self.sockets.remove(ws)
        return ws

    async def wait_socket_connected(self, timeout: float = 10.0) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: bool(self.sockets)), timeout)

    async def send_envelope(self, type_: str, payload: dict[str, Any], *, retry_attempt: int = 0,
                            accepts_response_payload: bool | None = None) -> str:
        """Deliver one Socket Mode envelope (``events_api``, ``interactive``, ``slash_commands``)."""
        if not self.sockets:
            raise RuntimeError("no Socket Mode client is connected")
        envelope_id = str(uuid.uuid4())
        envelope: dict[str, Any] = {"envelope_id": envelope_id, "payload": payload, "type": type_,
                                    "accepts_response_payload": (type_ != "events_api") if accepts_response_payload is None
                                    else accepts_response_payload}
        if type_ == "events_api":
            envelope["retry_attempt"] = retry_attempt
            envelope["retry_reason"] = "" if retry_attempt == 0 else "timeout"
        await self.sockets[-1].send_json(envelope)
        return envelope_id

    async def wait_for_ack(self, envelope_id: str, timeout: float = 10.0) -> dict[str, Any]:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: envelope_id in self.socket_acks), timeout)
        return self.socket_acks[envelope_id]


def _block_texts(block: Any) -> list[str]:
    """The visible text of one block (section text and fields, markdown, context elements)."""
    if not isinstance(block, dict):
        return []
    texts: list[str] = []
    text = block.get("text")
    if isinstance(text, dict):
        texts.append(str(text.get("text", "")))
    elif isinstance(text, str):
        texts.append(text)  # the markdown block
    for item in (block.get("fields") or []) + (block.get("elements") or []):
        if isinstance(item, dict) and isinstance(item.get("text"), str) and item.get("type") != "button":
            texts.append(item["text"])
    return texts


def _invalid_blocks(args: dict[str, Any]) -> bool:
    """A ``markdown`` block Slack refuses: other keys than type/text/block_id, no text, or too much text in all."""
    blocks = _json_arg(args.get("blocks")) or []
    if not isinstance(blocks, list):
        return True
    markdown = [b for b in blocks if isinstance(b, dict) and b.get("type") == "markdown"]
    for block in markdown:
        if set(block) - {"type", "text", "block_id"} or not isinstance(block.get("text"), str) or not block["text"]:
            return True
    return sum(len(b["text"]) for b in markdown) > MARKDOWN_BLOCKS_LIMIT


def _blocks_too_long(args: dict[str, Any]) -> bool:
    blocks = _json_arg(args.get("blocks")) or []
    return isinstance(blocks, list) and sum(len(t) for b in blocks for t in _block_texts(b)) > BLOCKS_TEXT_LIMIT


def _json_arg(value: Any) -> Any:
    """slack_sdk sends blocks/views as JSON values in JSON bodies and as JSON strings in forms."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


async def _request_args(request: web.Request) -> dict[str, Any]:
    args: dict[str, Any] = dict(request.query)
    body = await request.read()
    if body:
        content_type = request.content_type
        if content_type == "application/json":
            parsed = json.loads(body)
            if isinstance(parsed, dict):
                args.update(parsed)
        else:
            args.update(dict(parse_qsl(body.decode(), keep_blank_values=True)))
    for key in ("blocks", "view", "attachments"):
        if key in args:
            args[key] = _json_arg(args[key])
    return args


@asynccontextmanager
async def start_fake_slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()
