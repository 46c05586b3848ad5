"""The Bot Framework's signing keys, fetched without ever blocking the event loop.

botbuilder validates an inbound token in ``JwtTokenExtractor``: it finds the token's key through a per-URL
``_OpenIdMetadata`` object (``JwtTokenExtractor.metadataCache``), whose refresh downloads the OpenID metadata and
the JWKS with a blocking ``requests.get`` and no timeout — on the event loop, inside the request handler (on the
first request, daily, and hourly for a token with a made-up key id). A slow or hanging key endpoint froze the
whole web process: no health check, no Slack ack, nothing, for as long as the download hung.

Here only the *key source* is replaced; botbuilder still does every check with the key it gets (see
``docs/teams.md``, Authentication):

- :class:`SigningKeys` — the keys of one OpenID metadata URL: fetched with aiohttp under one short timeout for
  both documents (:attr:`KeyPolicy.fetch_timeout_s`, 5 s), cached for the lifetime their ``Cache-Control:
  max-age`` / ``Expires`` headers give (bounded to 5 min … 5 days, 24 h without headers — botbuilder's own
  refresh), refreshed in the background once 80 % of that lifetime has passed, and fetched once for all the
  requests that wait for it (single flight). A failed fetch is :class:`SigningKeysUnavailable` (the endpoint
  answers 503) and, for :attr:`KeyPolicy.failure_backoff_s`, refuses the next requests at once instead of
  starting another fetch; keys that have just expired stay usable for :attr:`KeyPolicy.stale_grace_s` while
  the endpoint is down. A token whose key id is not in the set causes at most one fetch per
  :attr:`KeyPolicy.unknown_kid_refetch_s` (botbuilder: one per hour), for keys Microsoft has just rotated in.
- :class:`AsyncOpenIdMetadata` — botbuilder's ``_OpenIdMetadata`` with ``get`` served by :class:`SigningKeys`
  (its blocking ``_refresh`` cannot run: it raises).
- :func:`use_async_signing_keys` — puts :class:`AsyncKeySources` in place of ``JwtTokenExtractor.metadataCache``,
  so that *every* metadata URL botbuilder looks keys up for (the channel's, the Emulator's and skills', a
  sovereign cloud's, ``ChannelValidation.open_id_metadata_endpoint``) gets an async source; the blocking class
  is never created. botbuilder's cache is process-wide, so this is too; the adapter installs it when built.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from botframework.connector.auth.jwt_token_extractor import JwtTokenExtractor, _OpenIdMetadata
from jwt.algorithms import RSAAlgorithm

from bot.core.log import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class KeyPolicy:
    fetch_timeout_s: float = 5.0  # one fetch: the metadata document and the JWKS together
    default_ttl_s: float = 24 * 3600.0  # no cache headers: botbuilder's daily refresh
    min_ttl_s: float = 300.0  # no-cache / tiny max-age: still not a fetch per request
    max_ttl_s: float = 5 * 24 * 3600.0
    refresh_after: float = 0.8  # share of the lifetime after which a request starts a background refresh
    stale_grace_s: float = 24 * 3600.0  # expired keys still used while the endpoint cannot be reached
    failure_backoff_s: float = 10.0  # after a failed fetch: refuse at once (503), no new fetch, for this long
    unknown_kid_refetch_s: float = 300.0  # an unknown key id refetches at most this often
    max_document_bytes: int = 1 << 20


DEFAULT_KEY_POLICY = KeyPolicy()


class SigningKeysUnavailable(Exception):
    """The keys could not be fetched and none usable are cached: not the caller's fault (503, retry later)."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UnknownSigningKey(PermissionError):
    """The token names no key id, or one that is not among the published keys (401)."""


@dataclass(frozen=True)
class SigningKey:
    """What botbuilder's ``JwtTokenExtractor._validate_token`` reads from a key: ``public_key``, ``endorsements``."""

    public_key: Any
    endorsements: list[str]


@dataclass(frozen=True)
class KeySet:
    keys: dict[str, SigningKey]
    fetched_at: float  # monotonic
    ttl_s: float
    refresh_after: float

    @property
    def refresh_at(self) -> float:
        return self.fetched_at + self.ttl_s * self.refresh_after

    @property
    def expires_at(self) -> float:
        return self.fetched_at + self.ttl_s


_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)", re.IGNORECASE)


def lifetime(headers: Mapping[str, str], policy: KeyPolicy) -> float:
    """How long a document may be cached, from its response headers, within the policy's bounds."""
    cache_control = headers.get("Cache-Control", "")
    directives = {part.split("=", 1)[0].strip().lower() for part in cache_control.split(",")}
    ttl: float | None = None
    if directives & {"no-store", "no-cache"}:
        ttl = 0.0
    elif match := _MAX_AGE.search(cache_control):
        ttl = float(match.group(1))
    elif expires := headers.get("Expires"):
        try:
            then = email.utils.parsedate_to_datetime(expires)
            now = email.utils.parsedate_to_datetime(headers["Date"]) if "Date" in headers else None
            ttl = then.timestamp() - (now.timestamp() if now else time.time())
        except (TypeError, ValueError, IndexError, OverflowError):
            ttl = 0.0  # an invalid Expires means "already expired" (RFC 9111)
    if ttl is None:
        return policy.default_ttl_s
    try:
        ttl -= float(headers.get("Age", "0"))
    except ValueError:
        pass
    return min(max(ttl, policy.min_ttl_s), policy.max_ttl_s)


def parse_jwks(document: Any) -> dict[str, SigningKey]:
    """The RSA keys of a JWKS by key id (others are skipped: botbuilder accepts RS256 only)."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("the JWKS has no key list")
    keys: dict[str, SigningKey] = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str) or jwk.get("kty") != "RSA":
            continue
        try:
            public_key = RSAAlgorithm.from_jwk(json.dumps(jwk))
        except Exception:  # noqa: BLE001 - jwt raises InvalidKeyError, ValueError…: one bad key is skipped
            log.warning("teams.signing_key_skipped", kid=jwk["kid"])
            continue
        endorsements = jwk.get("endorsements")
        keys[jwk["kid"]] = SigningKey(public_key, [e for e in endorsements if isinstance(e, str)]
                                      if isinstance(endorsements, list) else [])
    if not keys:
        raise ValueError("the JWKS holds no usable RSA key")
    return keys


class SigningKeys:
    """The signing keys published at one OpenID metadata URL (see the module's docstring)."""

    def __init__(self, metadata_url: str, policy: KeyPolicy = DEFAULT_KEY_POLICY, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.metadata_url = metadata_url
        self.policy = policy
        self._clock = clock
        self._keyset: KeySet | None = None
        self._inflight: asyncio.Task[KeySet] | None = None
        self._background: set[asyncio.Task[KeySet]] = set()
        self._failed_until = float("-inf")
        self._last_attempt = float("-inf")
        self.fetches = 0  # started, for logs and tests

    async def get(self, key_id: str | None) -> SigningKey:
        """The key ``key_id``; raises :class:`UnknownSigningKey` or :class:`SigningKeysUnavailable`."""
        if not key_id:
            raise UnknownSigningKey("the token names no signing key")
        keyset = await self._usable()
        key = keyset.keys.get(key_id)
        if key is None and self._clock() - self._last_attempt >= self.policy.unknown_kid_refetch_s:
            keyset = await self._fetch_shared()  # perhaps a key rotated in since the last fetch
            key = keyset.keys.get(key_id)
        if key is None:
            raise UnknownSigningKey(f"unknown signing key id {key_id[:64]!r}")
        return key

    async def _usable(self) -> KeySet:
        now = self._clock()
        keyset = self._keyset
        if keyset is not None and now < keyset.expires_at:
            if now >= keyset.refresh_at:
                self._refresh_in_background()
            return keyset
        stale = keyset if keyset is not None and now < keyset.expires_at + self.policy.stale_grace_s else None
        if now < self._failed_until:
            if stale is not None:
                return stale
            raise SigningKeysUnavailable(f"the signing keys of {self.metadata_url} could not be fetched just now",
                                         retry_after_s=self._failed_until - now)
        try:
            return await self._fetch_shared()
        except SigningKeysUnavailable:
            if stale is None:
                raise
            log.warning("teams.signing_keys_stale", url=self.metadata_url,
                        expired_s_ago=round(self._clock() - stale.expires_at))
            return stale

    def _refresh_in_background(self) -> None:
        if (self._inflight is not None and not self._inflight.done()) or self._clock() < self._failed_until:
            return
        task = self._start_fetch()
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _fetch_shared(self) -> KeySet:
        """Join the fetch under way, or start one; a waiter cancelled (or timed out) leaves it running."""
        task = self._inflight if self._inflight is not None and not self._inflight.done() else self._start_fetch()
        return await asyncio.shield(task)

    def _start_fetch(self) -> asyncio.Task[KeySet]:
        task = asyncio.get_running_loop().create_task(self._fetch(), name=f"teams-signing-keys {self.metadata_url}")
        task.add_done_callback(self._fetch_done)
        self._inflight = task
        self.fetches += 1
        return task

    def _fetch_done(self, task: asyncio.Task[KeySet]) -> None:
        if self._inflight is task:  # also when it was cancelled before it ran
            self._inflight = None
        if not task.cancelled():
            task.exception()  # a failure is logged in _fetch; retrieved here so that asyncio does not complain

    async def _fetch(self) -> KeySet:
        self._last_attempt = started = self._clock()
        try:
            async with asyncio.timeout(self.policy.fetch_timeout_s):
                keys, ttl = await self._download()
        except Exception as exc:  # noqa: BLE001 - timeout, connection, HTTP status, JSON, JWKS: all "unavailable"
            self._failed_until = self._clock() + self.policy.failure_backoff_s
            reason = "timed out" if isinstance(exc, TimeoutError) else f"{exc.__class__.__name__}: {exc}"[:300]
            log.warning("teams.signing_keys_fetch_failed", url=self.metadata_url, error=reason,
                        seconds=round(self._clock() - started, 2), cached=self._keyset is not None)
            raise SigningKeysUnavailable(f"the signing keys of {self.metadata_url} could not be fetched ({reason})",
                                         retry_after_s=self.policy.failure_backoff_s) from exc
        keyset = KeySet(keys=keys, fetched_at=self._clock(), ttl_s=ttl, refresh_after=self.policy.refresh_after)
        self._keyset = keyset
        self._failed_until = float("-inf")
        log.info("teams.signing_keys_fetched", url=self.metadata_url, keys=len(keys), ttl_s=round(ttl),
                 seconds=round(self._clock() - started, 2))
        return keyset

    async def _download(self) -> tuple[dict[str, SigningKey], float]:
        timeout = aiohttp.ClientTimeout(total=self.policy.fetch_timeout_s)
        async with aiohttp.ClientSession(timeout=timeout, headers={"Accept": "application/json"}) as session:
            metadata, metadata_headers = await self._get_json(session, self.metadata_url)
            jwks_uri = metadata.get("jwks_uri") if isinstance(metadata, dict) else None
            if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
                raise ValueError("the OpenID metadata has no jwks_uri")
            jwks, jwks_headers = await self._get_json(session, jwks_uri)
        keys = parse_jwks(jwks)
        # refreshed together, so cached as long as the shorter-lived of the two documents allows
        return keys, min(lifetime(metadata_headers, self.policy), lifetime(jwks_headers, self.policy))

    async def _get_json(self, session: aiohttp.ClientSession, url: str) -> tuple[Any, Mapping[str, str]]:
        async with session.get(url) as response:
            response.raise_for_status()
            body = bytearray()
            async for chunk in response.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > self.policy.max_document_bytes:
                    raise ValueError(f"{url} is larger than {self.policy.max_document_bytes} bytes")
            return json.loads(body), response.headers


class AsyncOpenIdMetadata(_OpenIdMetadata):
    """botbuilder's key source for one metadata URL, served by :class:`SigningKeys` (no ``requests``)."""

    def __init__(self, keys: SigningKeys) -> None:
        super().__init__(keys.metadata_url)
        self.signing_keys = keys

    async def get(self, key_id: str | None) -> SigningKey:
        return await self.signing_keys.get(key_id)

    async def _refresh(self) -> None:
        raise RuntimeError("botbuilder's blocking key refresh is replaced by bot.teams.auth.SigningKeys")


class AsyncKeySources:
    """Stands in for ``JwtTokenExtractor.metadataCache`` (a dict botbuilder only calls ``get`` and ``setdefault``
    on): whatever URL is asked for, the answer is an :class:`AsyncOpenIdMetadata`, made on first use."""

    def __init__(self, policy: KeyPolicy) -> None:
        self.policy = policy
        self._sources: dict[str, AsyncOpenIdMetadata] = {}

    def get(self, url: str, default: Any = None) -> AsyncOpenIdMetadata:
        source = self._sources.get(url)
        if source is None:
            source = self._sources[url] = AsyncOpenIdMetadata(SigningKeys(url, self.policy))
        return source

    def setdefault(self, url: str, default: Any = None) -> AsyncOpenIdMetadata:
        return self.get(url)

    def __getitem__(self, url: str) -> AsyncOpenIdMetadata:
        return self.get(url)

    def __contains__(self, url: object) -> bool:
        return url in self._sources

    def keys_for(self, url: str) -> SigningKeys:
        return self.get(url).signing_keys


def use_async_signing_keys(policy: KeyPolicy) -> AsyncKeySources:
    """Serve every key botbuilder's token validation looks up from async sources with ``policy`` (fresh caches)."""
    sources = AsyncKeySources(policy)
    JwtTokenExtractor.metadataCache = sources
    return sources


def installed_key_sources() -> AsyncKeySources | None:
    cache = JwtTokenExtractor.metadataCache
    return cache if isinstance(cache, AsyncKeySources) else None
