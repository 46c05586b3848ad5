"""A local fake of the Bot Framework connector (v3 REST API) and of Microsoft's OpenID metadata, for tests.

``FakeConnector`` is an aiohttp server on 127.0.0.1 that a test puts in an activity's ``serviceUrl``. It answers
the conversation endpoints the bot uses and records every call:

- ``POST /v3/conversations/{id}/activities`` — send to a conversation
- ``POST /v3/conversations/{id}/activities/{replyToId}`` — reply to an activity
- ``PUT /v3/conversations/{id}/activities/{activityId}`` — update an activity in place
- ``DELETE /v3/conversations/{id}/activities/{activityId}``
- ``POST /v3/conversations`` — create a conversation (a new thread in a channel)
- ``GET /v3/conversations/{id}/members/{memberId}``

Any path prefix before ``/v3`` is accepted, as Teams' service URLs carry one (``…/amer/``).

**Streaming** ("Stream bot messages", personal chats only) is played as Teams' connector does: an activity with a
``streaminfo`` entity and no ``streamId`` starts a stream (``typing``, ``streamSequence`` 1, text required) and
is answered 201 with the stream id; later ``typing`` updates carry the ``streamId`` and a rising
``streamSequence`` (202 ``{}``; an out-of-order one is dropped, as Teams drops it), each ``streaming`` update's
text must begin with the text streamed before, attachments are refused until the ``final`` ``message`` (which
has no ``streamSequence``); after it, or after :attr:`FakeConnector.stream_max_s` (Teams: two minutes), the stream
is closed — 403 ``ContentStreamNotAllowed``. Updates closer together than :attr:`FakeConnector.stream_min_interval_s`
are throttled (429), a stream in a channel or group chat, or with :attr:`FakeConnector.streaming_allowed` off, is
refused (403). :attr:`FakeConnector.streams` holds every stream's updates; ``fail_next(…, kind="stream")`` (or
``"stream_final"``) fails stream calls only.
:meth:`FakeConnector.fail_next` makes the next matching call(s) fail with 429 (``Retry-After``), 412 or 5xx — as
JSON or as an HTML error page (``html=True``, what a gateway in front of the service answers);
:meth:`FakeConnector.outage` fails every call for a while, then the service recovers.

``OpenIdServer`` serves an OpenID metadata document and a JWKS for a generated RSA key (with optional
``Cache-Control`` headers, and a switch to fail them), and signs tokens the way the Bot Framework service does,
so the valid-JWT path can be tested end to end. ``HangingServer`` accepts connections, reads the request and
never answers: a key endpoint that hangs. Both run in a thread, not in the test's event loop, so that code which
blocks the loop on them (the Bot Framework SDK's own ``requests.get``) makes a test fail instead of deadlocking it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiohttp import web

_PATH = re.compile(r"^(?P<prefix>.*?)/v3/conversations(?:/(?P<conversation>[^/]+)"
                   r"(?:/(?P<kind>activities|members)(?:/(?P<item>[^/]+))?)?)?/?$")


@dataclass
class Call:
    """One REST call the bot made."""

    method: str
    path: str
    conversation_id: str | None
    activity_id: str | None  # the activity updated / replied to, or the member asked for
    body: Any
    headers: dict[str, str]
    status: int = 200
    response: Any = None
    at: float = field(default_factory=time.monotonic)  # when the call arrived (time.monotonic)

    @property
    def kind(self) -> str:
        """send | reply | update | delete | create_conversation | get_member | other"""
        if self.method == "POST" and self.conversation_id is None:
            return "create_conversation"
        if "/members" in self.path:
            return "get_member"
        if self.method == "POST":
            return "reply" if self.activity_id else "send"
        if self.method == "PUT":
            return "update"
        if self.method == "DELETE":
            return "delete"
        return "other"

    @property
    def activity_type(self) -> str | None:
        return self.body.get("type") if isinstance(self.body, dict) else None

    @property
    def stream_info(self) -> dict[str, Any] | None:
        """The ``streaminfo`` entity of a streaming activity, if any."""
        if not isinstance(self.body, dict):
            return None
        for entity in self.body.get("entities") or []:
            if isinstance(entity, dict) and str(entity.get("type", "")).lower() == "streaminfo":
                return entity
        return None

    @property
    def card(self) -> dict[str, Any] | None:
        """The Adaptive Card attached to the activity, if any."""
        if not isinstance(self.body, dict):
            return None
        for attachment in self.body.get("attachments") or []:
            if attachment.get("contentType") == "application/vnd.microsoft.card.adaptive":
                return attachment.get("content")
        return None


@dataclass
class _Failure:
    status: int
    times: int
    method: str | None
    kind: str | None
    retry_after: float | None
    html: bool = False


@dataclass
class Stream:
    """One streamed message as the connector saw it."""

    stream_id: str
    conversation_id: str
    started: float
    sequence: int = 1
    text: str = ""  # the last streamed (cumulative) text
    informative: list[str] = field(default_factory=list)  # the informative updates' texts, in order
    updates: list[str] = field(default_factory=list)  # the streaming updates' texts, in order
    dropped: int = 0  # out-of-order updates dropped
    final: Call | None = None
    last_at: float = 0.0

    @property
    def done(self) -> bool:
        return self.final is not None


def _stream_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


HTML_ERROR = ("<!DOCTYPE html><html><head><title>{status} - Service unavailable</title></head><body><h1>{status}"
              "</h1><p>The service is temporarily unavailable.</p></body></html>")


@dataclass
class FakeConnector:
    url: str = ""
    calls: list[Call] = field(default_factory=list)
    _failures: list[_Failure] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _outage_until: float = 0.0
    _outage_status: int = 503
    streams: dict[str, Stream] = field(default_factory=dict)
    streaming_allowed: bool = True  # False: Teams refuses streaming for this bot or user (403)
    stream_max_s: float = 120.0  # Teams ends a stream that is not finished within two minutes
    stream_min_interval_s: float = 0.5  # updates of one stream closer together than this are throttled (429)

    @property
    def service_url(self) -> str:
        """A service URL like Teams' (with a regional path prefix)."""
        return f"{self.url}/amer/"

    def reset(self) -> None:
        self.calls.clear()
        self._failures.clear()
        self._outage_until = 0.0
        self.streams.clear()
        self.streaming_allowed = True
        self.stream_max_s = 120.0
        self.stream_min_interval_s = 0.5

    def expire_streams(self) -> None:
        """Every open stream has run out of time (as after Teams' two minutes): further calls get 403."""
        for stream in self.streams.values():
            stream.started -= self.stream_max_s + 1

    def stream_calls(self) -> list[Call]:
        """Every call that carried a ``streaminfo`` entity, failed ones included."""
        return [c for c in self.calls if c.stream_info is not None]

    def fail_next(self, status: int, *, times: int = 1, method: str | None = None, kind: str | None = None,
                  retry_after: float | None = None, html: bool = False) -> None:
        """Make the next ``times`` calls (optionally only of one method or kind) fail with ``status`` (with a
        ``Retry-After`` header when given; an HTML error page instead of JSON with ``html``)."""
        self._failures.append(_Failure(status, times, method, kind, retry_after, html))

    def outage(self, seconds: float, *, status: int = 503) -> None:
        """Every call fails with ``status`` and an HTML error page for ``seconds`` from now, then all is well."""
        self._outage_until = time.monotonic() + seconds
        self._outage_status = status

    def end_outage(self) -> None:
        self._outage_until = 0.0

    def of_kind(self, *kinds: str) -> list[Call]:
        return [c for c in self.calls if c.kind in kinds and c.status < 400]

    def messages(self) -> list[Call]:
        """Successful sends, replies and updates of message activities (not typing)."""
        return [c for c in self.of_kind("send", "reply", "update") if c.activity_type == "message"]

    async def wait_for(self, predicate: Callable[[list[Call]], Any], timeout_s: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            result = predicate(self.calls)
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met; calls: {[(c.method, c.path, c.status) for c in self.calls]}")
            await asyncio.sleep(0.02)

    def _take_failure(self, method: str, kind: str, call: Call | None = None) -> _Failure | None:
        kinds = {kind}
        info = call.stream_info if call is not None else None
        if info is not None:
            kinds.add("stream_final" if info.get("streamType") == "final" else "stream")
        for failure in self._failures:
            if (failure.method is None or failure.method == method) and (failure.kind is None or failure.kind in kinds):
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
                return failure
        return None

    async def handle(self, request: web.Request) -> web.Response:
        match = _PATH.match(request.path)
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        if match is None:
            self.calls.append(Call(request.method, request.path, None, None, body, dict(request.headers), 404))
            return web.json_response({"error": {"code": "NotFound", "message": request.path}}, status=404)
        conversation, item = match["conversation"], match["item"]
        call = Call(request.method, request.path, conversation, item, body, dict(request.headers))
        self.calls.append(call)
        if time.monotonic() < self._outage_until:
            call.status = self._outage_status
            return web.Response(text=HTML_ERROR.format(status=call.status), status=call.status,
                                content_type="text/html")
        failure = self._take_failure(request.method, call.kind, call)
        if failure is not None:
            call.status = failure.status
            headers = {"Retry-After": f"{failure.retry_after:g}"} if failure.retry_after is not None else {}
            if failure.html:
                return web.Response(text=HTML_ERROR.format(status=failure.status), status=failure.status,
                                    content_type="text/html", headers=headers)
            code = "ContentStreamNotAllowed" if failure.status == 403 and call.stream_info else "Injected"
            return web.json_response({"error": {"code": code, "message": f"fake failure {failure.status}"}},
                                     status=failure.status, headers=headers)
        if call.kind in ("send", "reply") and call.stream_info is not None:
            response = self._stream(call)
            call.status = response.status
            return response
        if call.kind == "create_conversation":
            # a channel post starts a thread: its conversation id is the channel's with ";messageid=<post id>"
            activity_id = f"{next(self._ids)}"
            channel = ((body or {}).get("channelData") or {}).get("channel", {}).get("id") if isinstance(body, dict) \
                else None
            thread = f"{channel};messageid={activity_id}" if channel else f"19:created-{activity_id}@thread.tacv2"
            call.response = {"id": thread, "activityId": activity_id}
            return web.json_response(call.response, status=201)
        if call.kind == "get_member":
            call.response = {"id": item, "name": "Member", "aadObjectId": "00000000-0000-0000-0000-000000000000"}
            return web.json_response(call.response)
        if call.kind == "update":
            call.response = {"id": item}
            return web.json_response(call.response)
        if call.kind == "delete":
            return web.Response(status=200)
        if call.kind in ("send", "reply"):
            call.response = {"id": f"fake-activity-{next(self._ids)}"}
            return web.json_response(call.response, status=201)
        return web.json_response({}, status=200)


    def _stream(self, call: Call) -> web.Response:
        """A streaming activity, answered as Teams answers it (see the module docstring)."""
        body: dict[str, Any] = call.body
        info = call.stream_info or {}
        stream_type = info.get("streamType") or "streaming"
        sequence = info.get("streamSequence")
        stream_id = info.get("streamId")
        text = body.get("text") or ""
        now = time.monotonic()
        conversation_type = (body.get("conversation") or {}).get("conversationType") or "personal"
        if not self.streaming_allowed or conversation_type != "personal":
            return _stream_error(403, "ContentStreamNotAllowed", "Content stream is not allowed")
        if stream_type == "final":
            if body.get("type") != "message" or sequence is not None or not stream_id:
                return _stream_error(400, "BadRequest", "Final streaming activity must be a message with a "
                                                        "streamId and no streamSequence")
        elif body.get("type") != "typing":
            return _stream_error(400, "BadRequest", "Streaming activities must be typing activities")
        elif body.get("attachments"):
            return _stream_error(400, "BadRequest", "Attachments are allowed only in the final streaming message")
        elif not isinstance(sequence, int):
            return _stream_error(400, "BadRequest", "streamSequence is required")
        if not stream_id:  # start streaming
            if sequence != 1 or not text:
                return _stream_error(400, "BadRequest", "Start streaming activities should include text and "
                                                        "streamSequence 1")
            stream = Stream(f"stream-{next(self._ids)}", call.conversation_id or "", started=now, last_at=now)
            (stream.informative if stream_type == "informative" else stream.updates).append(text)
            stream.text = text if stream_type == "streaming" else ""
            self.streams[stream.stream_id] = stream
            call.response = {"id": stream.stream_id}
            return web.json_response(call.response, status=201)
        stream = self.streams.get(str(stream_id))
        if stream is None or stream.conversation_id != call.conversation_id:
            return _stream_error(404, "NotFound", "Unknown stream")
        if stream.done:
            return _stream_error(403, "ContentStreamNotAllowed",
                                 "Content stream is not allowed on an already completed streamed message")
        if now - stream.started > self.stream_max_s:
            return _stream_error(403, "ContentStreamNotAllowed",
                                 "Content stream finished due to exceeded streaming time.")
        if stream_type == "final":
            stream.final = call
            stream.text = text
            call.response = {}
            return web.json_response({}, status=202)
        if now - stream.last_at < self.stream_min_interval_s:
            return web.json_response({"error": {"code": "Throttled", "message": "API calls quota exceeded"}},
                                     status=429, headers={"Retry-After": "1"})
        assert isinstance(sequence, int)
        if sequence <= stream.sequence:
            stream.dropped += 1
            call.response = {"error": {"code": "ContentStreamSequenceOrderPreConditionFailed"}}
            return web.json_response(call.response, status=202)
        if stream_type == "streaming":
            if not text.startswith(stream.text):
                return _stream_error(400, "BadRequest", "Streamed content must contain the content streamed "
                                                        "before")
            stream.text = text
            stream.updates.append(text)
        else:
            stream.informative.append(text)
        stream.sequence = sequence
        stream.last_at = now
        call.response = {}
        return web.json_response({}, status=202)


@contextlib.asynccontextmanager
async def start_fake_connector() -> AsyncIterator[FakeConnector]:
    fake = FakeConnector()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        await runner.cleanup()


# --------------------------------------------------------------------------------------------------------------
# OpenID metadata + JWKS (threaded: the SDK fetches them with blocking requests)


class OpenIdServer:
    """Serves ``/openid`` (metadata) and ``/keys`` (JWKS) for one RSA key, and signs channel tokens with it."""

    ISSUER = "https://api.botframework.com"

    def __init__(self, *, endorsements: tuple[str, ...] = ("msteams",), cache_control: str | None = None) -> None:
        from cryptography.hazmat.primitives.asymmetric import rsa
        from jwt.algorithms import RSAAlgorithm

        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "deskmate-test-key"
        jwk = json.loads(RSAAlgorithm.to_jwk(self._key.public_key()))
        jwk.update({"kid": self.kid, "use": "sig", "alg": "RS256", "endorsements": list(endorsements)})
        self._jwks = {"keys": [jwk]}
        self.requests: list[str] = []
        self.cache_control = cache_control  # sent with both documents when set
        self.fail_status: int | None = None  # answer every request with this status while set
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                server.requests.append(self.path)
                if server.fail_status is not None:
                    self.send_response(server.fail_status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path == "/openid":
                    payload = {"issuer": server.ISSUER, "jwks_uri": f"{server.url}/keys",
                               "id_token_signing_alg_values_supported": ["RS256"]}
                elif self.path == "/keys":
                    payload = server._jwks
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if server.cache_control is not None:
                    self.send_header("Cache-Control", server.cache_control)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def metadata_url(self) -> str:
        return f"{self.url}/openid"

    def start(self) -> OpenIdServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def token(self, *, app_id: str, service_url: str, issuer: str | None = None, expires_in: int = 3600,
              **claims: Any) -> str:
        """A token like the one Bot Framework puts in ``Authorization: Bearer …`` for a request to the bot."""
        import jwt

        now = int(time.time())
        payload = {"iss": issuer or self.ISSUER, "aud": app_id, "serviceurl": service_url,
                   "nbf": now - 60, "iat": now - 60, "exp": now + expires_in} | claims
        return jwt.encode(payload, self._key, algorithm="RS256", headers={"kid": self.kid})

    def foreign_token(self, *, app_id: str, service_url: str) -> str:
        """Same claims and key id, signed by a different key: must be refused."""
        import jwt
        from cryptography.hazmat.primitives.asymmetric import rsa

        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = int(time.time())
        payload = {"iss": self.ISSUER, "aud": app_id, "serviceurl": service_url, "nbf": now - 60, "exp": now + 3600}
        return jwt.encode(payload, other, algorithm="RS256", headers={"kid": self.kid})


@contextlib.contextmanager
def start_openid_server(**kwargs: Any) -> Iterator[OpenIdServer]:
    server = OpenIdServer(**kwargs).start()
    try:
        yield server
    finally:
        server.stop()


class HangingServer:
    """A key endpoint that accepts the connection, reads the request and never answers.

    "Never" ends at :meth:`stop`, or after ``cap_s`` as a safety net (then a 504): code that waits for it on the
    test's event loop — a blocking ``requests.get`` without a timeout — then fails the test instead of hanging the
    whole run. ``requests`` lists the paths asked for, in order.
    """

    def __init__(self, *, cap_s: float = 8.0) -> None:
        self.requests: list[str] = []
        self._release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                server.requests.append(self.path)
                server._release.wait(cap_s)
                self.send_response(504)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def metadata_url(self) -> str:
        return f"{self.url}/openid"

    def start(self) -> HangingServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    async def wait_for_requests(self, count: int, timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.requests) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.requests)} request(s) of {count} after {timeout_s}s")
            await asyncio.sleep(0.01)


@contextlib.contextmanager
def start_hanging_server(**kwargs: Any) -> Iterator[HangingServer]:
    server = HangingServer(**kwargs).start()
    try:
        yield server
    finally:
        server.stop()
