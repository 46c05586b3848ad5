"""Deskmate's outbound Bot Framework credentials: one app token per hour, never fetched on the event loop.

botbuilder's ``CloudAdapter`` asks its credentials factory for new credentials for every connector client it makes
— every turn: each placeholder sent while a message is taken in, each answer delivered with
``continue_conversation``. New credentials mean a new MSAL application with an empty token cache, so every message
Deskmate sent to Teams cost a token request to Microsoft Entra ID (OpenID discovery + ``POST …/oauth2/v2.0/token``),
and that request was made with ``requests``, synchronously, when msrest signed the outgoing call — on the event
loop. Measured against a local fake of the token endpoint: 94 ms of frozen event loop per message, one token
request per message (tests/bot/teams/test_credentials.py); against the real service, more, and for as long as it
hangs.

:class:`CachedCredentials` wraps botbuilder's factory:

- one credentials object per (app id, scope, login endpoint) for the life of the process, so its MSAL token cache
  serves every turn (MSAL renews the token when it nears expiry);
- before the credentials are handed to a connector, the token is read — or fetched, or renewed — in a thread
  (``asyncio.to_thread``), so that signing a request on the event loop only ever reads MSAL's cache.

It is per process, like a connection pool: nothing two processes must agree on. Without an app id (local
development mode) botbuilder's empty credentials are passed through untouched.
"""

from __future__ import annotations

import asyncio

from botframework.connector.auth import AppCredentials, ServiceClientCredentialsFactory
from msrest.authentication import Authentication


class CachedCredentials(ServiceClientCredentialsFactory):  # type: ignore[misc]
    """A :class:`ServiceClientCredentialsFactory` that keeps its credentials and fetches their token off the loop."""

    def __init__(self, inner: ServiceClientCredentialsFactory) -> None:
        self.inner = inner
        self._credentials: dict[tuple[str, str, str, bool], Authentication] = {}

    async def is_valid_app_id(self, app_id: str) -> bool:
        return bool(await self.inner.is_valid_app_id(app_id))

    async def is_authentication_disabled(self) -> bool:
        return bool(await self.inner.is_authentication_disabled())

    async def create_credentials(self, app_id: str, oauth_scope: str, login_endpoint: str,
                                 validate_authority: bool) -> Authentication:
        key = (app_id or "", oauth_scope or "", login_endpoint or "", bool(validate_authority))
        credentials = self._credentials.get(key)
        if credentials is None:
            credentials = await self.inner.create_credentials(app_id, oauth_scope, login_endpoint,
                                                              validate_authority)
            credentials = self._credentials.setdefault(key, credentials)
        if isinstance(credentials, AppCredentials) and credentials.microsoft_app_id:
            await asyncio.to_thread(credentials.get_access_token)  # from MSAL's cache unless it must be renewed
        return credentials
