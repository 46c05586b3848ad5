"""``POST /api/messages``: where Teams (through the Bot Framework service) sends every activity.

The handler authenticates the request (:meth:`TeamsAdapter.authenticate` — 401 for a missing, malformed or
invalid token when an app id is configured; 503 with ``Retry-After``, at once, when Microsoft's signing keys
cannot be fetched — never a stalled event loop), runs the turn and returns: a question's turn only sends a typing
indicator and a placeholder and enqueues, well inside Teams' 15-second limit. Invoke activities get their
invoke response as the HTTP body. In production the endpoint is only mounted with an app id, so a deployment
can never accept unauthenticated activities by mistake.
"""

from __future__ import annotations

import math

from aiohttp import web
from botbuilder.core import serializer_helper
from botbuilder.schema import Activity

from bot.core.log import get_logger
from bot.runtime import Runtime
from bot.teams.adapter import AuthenticationUnavailable, TeamsAdapter, Unauthorized
from bot.teams.bot import DeskmateTeamsBot

log = get_logger(__name__)

ENDPOINT = "/api/messages"


class MessagesEndpoint:
    def __init__(self, adapter: TeamsAdapter, bot: DeskmateTeamsBot) -> None:
        self.adapter = adapter
        self.bot = bot

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if "application/json" not in request.headers.get("Content-Type", ""):
            return web.json_response({"error": "expected application/json"}, status=415)
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "the body is not JSON"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": "the body must be an activity object"}, status=400)
        try:
            activity = Activity().deserialize(body)
        except Exception:  # noqa: BLE001 - msrest raises DeserializationError and friends
            return web.json_response({"error": "not an activity"}, status=400)
        if not activity.type:
            return web.json_response({"error": "the activity has no type"}, status=400)

        try:
            auth = await self.adapter.authenticate(activity, request.headers.get("Authorization"))
        except Unauthorized as exc:
            log.warning("teams.unauthorized", reason=str(exc), activity_type=activity.type)
            return web.json_response({"error": "unauthorized"}, status=401)
        except AuthenticationUnavailable as exc:
            log.warning("teams.authentication_unavailable", reason=str(exc), activity_type=activity.type)
            return web.json_response({"error": "authentication unavailable, retry later"}, status=503,
                                     headers={"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))})

        try:
            invoke_response = await self.adapter.process_authenticated(auth, activity, self.bot.on_turn)
        except Exception:  # noqa: BLE001 - Teams redelivers on a 5xx; redeliveries are deduplicated
            log.exception("teams.turn_failed", activity_type=activity.type)
            return web.json_response({"error": "internal error"}, status=500)
        if invoke_response is not None:
            body = invoke_response.body
            # the activity handler already serialized it to a dict; a handler may also return a model
            payload = serializer_helper(body) if hasattr(body, "serialize") else body
            if payload is None:
                return web.Response(status=int(invoke_response.status))
            return web.json_response(payload, status=int(invoke_response.status))
        return web.Response(status=200)


def setup(app: web.Application, rt: Runtime) -> None:
    settings = rt.settings
    if settings.environment == "production" and not settings.teams_app_id:
        log.info("teams.endpoint_disabled", reason="no DESKMATE_TEAMS_APP_ID in production")
        return
    adapter = TeamsAdapter(settings)
    endpoint = MessagesEndpoint(adapter, DeskmateTeamsBot(rt))
    app.router.add_post(ENDPOINT, endpoint.handle)
    log.info("teams.endpoint", path=ENDPOINT, authentication="jwt" if adapter.auth_enabled else "off (development)")
