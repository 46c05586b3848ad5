"""The Bot Framework ``CloudAdapter`` and the authentication of inbound requests.

With ``DESKMATE_TEAMS_APP_ID`` set, every request must carry a Bot Framework JWT for that app id (signature,
issuer, audience, expiry, endorsement and service URL are checked by botbuilder); anything else is
:class:`Unauthorized`. botbuilder raises whatever its JWT library raises on a malformed token (``DecodeError``,
``ValueError``…), so every failure is mapped to one exception here and the endpoint answers 401, never 500.
The signing keys botbuilder checks the signature with come from :mod:`bot.teams.auth` — fetched asynchronously,
cached, one fetch at a time — installed when the adapter is built; when they cannot be had (the key endpoint is
down or hangs past its short timeout) the request is :class:`AuthenticationUnavailable` (503), at once, and the
event loop never waits on the network. Without an app id the adapter runs in local development mode: no
authentication, outbound calls unsigned (the Bot Framework Emulator, tests against a local connector).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from botbuilder.core import TurnContext
from botbuilder.integration.aiohttp import (CloudAdapter, ConfigurationBotFrameworkAuthentication,
                                            ConfigurationServiceClientCredentialFactory)
from botbuilder.schema import Activity, ConversationReference
from botframework.connector.auth import AuthenticateRequestResult

from bot.core.log import get_logger
from bot.core.settings import Settings
from bot.teams import auth
from bot.teams.auth import KeyPolicy, SigningKeysUnavailable
from bot.teams.credentials import CachedCredentials

log = get_logger(__name__)

AUTH_TIMEOUT_MARGIN_S = 1.0


class Unauthorized(Exception):
    """The request is not from the Bot Framework service for this bot."""


class AuthenticationUnavailable(Exception):
    """The request could not be checked now (the signing keys are unavailable): answer 503, Teams retries."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class BotConfig:
    """The attribute names ``ConfigurationBotFrameworkAuthentication`` reads from its configuration object."""

    APP_ID: str | None
    APP_PASSWORD: str | None
    APP_TYPE: str
    APP_TENANTID: str | None


def bot_config(settings: Settings) -> BotConfig:
    if settings.teams_app_id and settings.teams_app_type != "MultiTenant" and not settings.teams_tenant_id:
        raise ValueError(f"DESKMATE_TEAMS_TENANT_ID is required with DESKMATE_TEAMS_APP_TYPE={settings.teams_app_type} "
                         "(Azure Bot → Configuration → App Tenant ID)")
    if settings.teams_app_id and settings.teams_app_type == "SingleTenant" and not settings.teams_app_password:
        raise ValueError("DESKMATE_TEAMS_APP_PASSWORD (the app registration's client secret) is required with "
                         "DESKMATE_TEAMS_APP_TYPE=SingleTenant")
    return BotConfig(APP_ID=settings.teams_app_id or None, APP_PASSWORD=settings.teams_app_password or None,
                     APP_TYPE=settings.teams_app_type, APP_TENANTID=settings.teams_tenant_id or None)


def bot_authentication(config: Any) -> ConfigurationBotFrameworkAuthentication:
    """botbuilder's authentication for ``config``, with outbound credentials that fetch one token per hour off the
    event loop (:mod:`bot.teams.credentials`) instead of one per message on it."""
    return ConfigurationBotFrameworkAuthentication(
        config, credentials_factory=CachedCredentials(ConfigurationServiceClientCredentialFactory(config)))


class TeamsAdapter(CloudAdapter):
    def __init__(self, settings: Settings, *, key_policy: KeyPolicy | None = None) -> None:
        self.settings = settings
        self.key_policy = key_policy or auth.DEFAULT_KEY_POLICY
        super().__init__(bot_authentication(bot_config(settings)))
        # botbuilder's key cache is process-wide: from now on its lookups are served by async, cached sources
        auth.use_async_signing_keys(self.key_policy)

    @property
    def app_id(self) -> str | None:
        return self.settings.teams_app_id or None

    @property
    def auth_enabled(self) -> bool:
        return self.app_id is not None

    async def authenticate(self, activity: Activity, auth_header: str | None) -> AuthenticateRequestResult:
        """Validate the request's bearer token; raises :class:`Unauthorized` for anything but a valid one, and
        :class:`AuthenticationUnavailable` when it cannot be checked now."""
        # In development mode a header (e.g. a recorded one) is ignored rather than validated against nothing.
        header = (auth_header or "").strip() if self.auth_enabled else ""
        if self.auth_enabled and not header:
            raise Unauthorized("missing Authorization header")
        if auth.installed_key_sources() is None:  # someone put botbuilder's blocking key cache back
            auth.use_async_signing_keys(self.key_policy)
        try:
            # the key fetch has its own timeout; this bounds the whole check, whatever botbuilder awaits
            async with asyncio.timeout(self.key_policy.fetch_timeout_s + AUTH_TIMEOUT_MARGIN_S):
                return await self.bot_framework_authentication.authenticate_request(activity, header)
        except SigningKeysUnavailable as exc:
            raise AuthenticationUnavailable(str(exc), exc.retry_after_s) from exc
        except TimeoutError as exc:
            raise AuthenticationUnavailable("authentication timed out", self.key_policy.failure_backoff_s) from exc
        except Exception as exc:  # noqa: BLE001 - PermissionError, jwt errors, IndexError, ValueError, …
            raise Unauthorized(f"{exc.__class__.__name__}: {exc}"[:300]) from exc

    async def process_authenticated(self, auth: AuthenticateRequestResult, activity: Activity,
                                    logic: Callable[[TurnContext], Awaitable[Any]]) -> Any:
        """Run a turn for an activity that :meth:`authenticate` accepted; returns the invoke response, if any."""
        return await self.process_activity(auth, activity, logic)

    async def continue_as_bot(self, reference: ConversationReference,
                              logic: Callable[[TurnContext], Awaitable[Any]]) -> None:
        """A proactive turn in the conversation of ``reference`` (the worker's delivery path)."""
        await self.continue_conversation(reference, logic, bot_app_id=self.app_id)
