"""``bot.teams.auth``: the signing-key cache on its own — lifetimes from cache headers, refresh before expiry in
the background, single flight, the failure back-off, stale keys while the endpoint is down, unknown key ids —
with a controllable clock against the local OpenID server; and how it is wired into botbuilder."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from botframework.connector.auth.jwt_token_extractor import JwtTokenExtractor

from bot.teams.auth import (
    AsyncKeySources,
    AsyncOpenIdMetadata,
    KeyPolicy,
    SigningKeys,
    SigningKeysUnavailable,
    UnknownSigningKey,
    lifetime,
    use_async_signing_keys,
)
from tests.fakes.botframework import OpenIdServer, start_hanging_server, start_openid_server

POLICY = KeyPolicy(min_ttl_s=0.0, default_ttl_s=1000.0, max_ttl_s=10_000.0, stale_grace_s=500.0,
                   failure_backoff_s=10.0, unknown_kid_refetch_s=300.0, fetch_timeout_s=2.0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server() -> Iterator[OpenIdServer]:
    with start_openid_server(cache_control="max-age=1000") as openid:
        yield openid


@pytest.fixture
def clock() -> Clock:
    return Clock()


def keys_of(server: OpenIdServer, clock: Clock, policy: KeyPolicy = POLICY) -> SigningKeys:
    return SigningKeys(server.metadata_url, policy, clock=clock)


def test_lifetime_follows_cache_headers_within_bounds() -> None:
    policy = KeyPolicy()
    assert lifetime({"Cache-Control": "public, max-age=7200"}, policy) == 7200
    assert lifetime({"Cache-Control": "max-age=7200", "Age": "200"}, policy) == 7000
    assert lifetime({"Cache-Control": "max-age=5"}, policy) == policy.min_ttl_s
    assert lifetime({"Cache-Control": "no-cache"}, policy) == policy.min_ttl_s
    assert lifetime({"Cache-Control": "max-age=99999999"}, policy) == policy.max_ttl_s
    assert lifetime({}, policy) == policy.default_ttl_s == 24 * 3600
    assert lifetime({"Date": "Wed, 01 Jan 2031 00:00:00 GMT", "Expires": "Wed, 01 Jan 2031 02:00:00 GMT"},
                    policy) == 7200
    assert lifetime({"Expires": "0"}, policy) == policy.min_ttl_s


async def test_cached_for_the_header_lifetime_and_refreshed_in_the_background_before_expiry(
        server: OpenIdServer, clock: Clock) -> None:
    keys = keys_of(server, clock)
    key = await keys.get(server.kid)
    assert key.endorsements == ["msteams"]
    assert server.requests == ["/openid", "/keys"]

    clock.now = 700  # within the first 80 % of max-age=1000: from the cache
    assert await keys.get(server.kid) is key
    assert keys.fetches == 1

    clock.now = 850  # past 80 %: answered from the cache at once, refreshed behind it
    started = time.monotonic()
    assert await keys.get(server.kid) is key
    assert time.monotonic() - started < 0.05
    assert keys.fetches == 2
    await asyncio.gather(*keys._background)
    assert server.requests == ["/openid", "/keys"] * 2

    clock.now = 1500  # fresh since the refresh at 850
    await keys.get(server.kid)
    assert keys.fetches == 2


async def test_concurrent_lookups_share_one_fetch(server: OpenIdServer, clock: Clock) -> None:
    keys = keys_of(server, clock)
    found = await asyncio.gather(*(keys.get(server.kid) for _ in range(20)))
    assert len({id(k) for k in found}) == 1
    assert keys.fetches == 1 and server.requests == ["/openid", "/keys"]


async def test_a_failed_fetch_refuses_at_once_during_the_back_off(server: OpenIdServer, clock: Clock) -> None:
    keys = keys_of(server, clock)
    server.fail_status = 500
    with pytest.raises(SigningKeysUnavailable) as failed:
        await keys.get(server.kid)
    assert failed.value.retry_after_s == POLICY.failure_backoff_s
    clock.now = 5
    with pytest.raises(SigningKeysUnavailable):
        await keys.get(server.kid)
    assert server.requests == ["/openid"], "no new fetch during the back-off"

    server.fail_status = None
    clock.now = 11
    await keys.get(server.kid)
    assert keys.fetches == 2


async def test_expired_keys_serve_while_the_endpoint_is_down_but_only_within_the_grace(
        server: OpenIdServer, clock: Clock) -> None:
    keys = keys_of(server, clock)
    key = await keys.get(server.kid)
    server.fail_status = 503
    clock.now = 1200  # expired at 1000; grace until 1500
    assert await keys.get(server.kid) is key
    clock.now = 1600
    with pytest.raises(SigningKeysUnavailable):
        await keys.get(server.kid)


async def test_an_unknown_key_id_refetches_at_most_once_per_interval(server: OpenIdServer, clock: Clock) -> None:
    keys = keys_of(server, clock)
    await keys.get(server.kid)
    for _ in range(3):
        with pytest.raises(UnknownSigningKey):
            await keys.get("made-up")
    assert keys.fetches == 1
    clock.now = 301  # perhaps Microsoft rotated a key in: look once more
    with pytest.raises(UnknownSigningKey):
        await keys.get("made-up")
    assert keys.fetches == 2
    with pytest.raises(UnknownSigningKey):
        await keys.get(None)
    assert keys.fetches == 2


async def test_a_hanging_endpoint_times_out_and_a_cancelled_waiter_leaves_the_fetch_running(clock: Clock) -> None:
    with start_hanging_server() as hung:
        keys = SigningKeys(hung.metadata_url, KeyPolicy(fetch_timeout_s=0.5), clock=clock)
        impatient = asyncio.create_task(keys.get("k"))
        await hung.wait_for_requests(1)
        impatient.cancel()
        started = time.monotonic()
        with pytest.raises(SigningKeysUnavailable):
            await keys.get("k")  # joins the fetch the cancelled request started
        assert time.monotonic() - started < 1.0
        assert hung.requests == ["/openid"] and keys.fetches == 1


def test_every_metadata_url_botbuilder_asks_for_gets_an_async_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(JwtTokenExtractor, "metadataCache", JwtTokenExtractor.metadataCache)  # restored afterwards
    sources = use_async_signing_keys(KeyPolicy(fetch_timeout_s=1.5))
    assert isinstance(JwtTokenExtractor.metadataCache, AsyncKeySources)
    # botbuilder's own lookup, for a URL nobody registered (the Emulator's, a sovereign cloud's…)
    metadata = JwtTokenExtractor.get_open_id_metadata("https://login.example.test/.well-known/openid-configuration")
    assert isinstance(metadata, AsyncOpenIdMetadata)
    assert metadata.signing_keys.policy.fetch_timeout_s == 1.5
    assert JwtTokenExtractor.get_open_id_metadata(metadata.url) is metadata
    assert sources.keys_for(metadata.url) is metadata.signing_keys


async def test_botbuilders_blocking_refresh_cannot_run() -> None:
    metadata = AsyncOpenIdMetadata(SigningKeys("http://127.0.0.1:9/openid"))
    with pytest.raises(RuntimeError):
        await metadata._refresh()
