"""A sync's embedding shared through Redis: helpers take batches, the vectors are the ones the syncing process
would have made alone and in the same order, and nothing is lost when a helper dies, declines, or Redis is
away. Real redis-server, the real bundled embedder."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import redis
import redis.asyncio as aioredis

from knowledge.config import KnowledgeConfig
from knowledge.embedding import Embedder, Vectors
from knowledge.index import IndexStore
from knowledge.shared_embedding import (PREFIX, TAKE_SCRIPT, SharedEmbedding, Working, embed_here, help_embed,
                                        keys)
from tests.conftest import SAMPLE_KNOWLEDGE_DIR, settings_for


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    store = IndexStore(KnowledgeConfig.from_settings(settings_for(tmp_path_factory.mktemp("emb"))))
    return store.embedder


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """Paragraphs of the bundled sample handbook: 40 real texts of different lengths."""
    paragraphs = [p.strip() for f in sorted(SAMPLE_KNOWLEDGE_DIR.rglob("*.md")) for p in f.read_text().split("\n\n")]
    chosen = [p for p in paragraphs if len(p) > 40][:40]
    assert len(chosen) == 40
    return chosen


class Gated:
    """The same model (same name, same vectors), whose embedding waits until ``gate`` is set: the syncing process
    held back until a helper has done its part, so the test does not depend on who is faster."""

    def __init__(self, inner: Embedder, gate: threading.Event) -> None:
        self.inner, self.gate, self.name = inner, gate, inner.name

    def embed(self, texts: Sequence[str]) -> Vectors:
        assert self.gate.wait(60), "the helper never finished"
        return self.inner.embed(texts)


class Renamed:
    def __init__(self, inner: Embedder) -> None:
        self.inner, self.name = inner, inner.name + "-other"

    def embed(self, texts: Sequence[str]) -> Vectors:
        return self.inner.embed(texts)


def coordinator(redis_url: str, invite: Callable[[str], None], **options: float) -> SharedEmbedding:
    """The syncing process; helpers in these tests stand for other processes (their own :class:`Working`)."""
    return SharedEmbedding(redis.Redis.from_url(redis_url), invite, batch_size=4, min_batches=2, working=Working(),
                           **options)


def helper_when_invited(client: aioredis.Redis, embedder_for: Callable[[str], Embedder | None],
                        gate: threading.Event) -> tuple[Callable[[str], None], list[asyncio.Task[int]]]:
    """``invite`` for the syncing process's thread: the first invitation starts one helper (standing for another
    worker process: its own :class:`Working`) as a task of the test's loop; ``gate`` is set when it returns."""
    loop = asyncio.get_running_loop()
    invited: list[str] = []
    helpers: list[asyncio.Task[int]] = []

    async def helper(run: str) -> int:
        try:
            return await help_embed(client, embedder_for, run, working=Working())
        finally:
            gate.set()

    def invite(run: str) -> None:  # the arq job, in a worker
        if not invited:
            invited.append(run)
            loop.call_soon_threadsafe(lambda: helpers.append(loop.create_task(helper(run))))

    return invite, helpers


def leftover_keys(redis_url: str) -> list[bytes]:
    return list(redis.Redis.from_url(redis_url).scan_iter(match=PREFIX + "*"))


async def test_a_helper_takes_batches_and_the_vectors_are_those_made_alone(
        redis_url: str, embedder: Embedder, texts: list[str]) -> None:
    alone = embed_here(embedder, texts)
    gate = threading.Event()
    client = aioredis.Redis.from_url(redis_url)
    invite, helpers = helper_when_invited(client, lambda role: embedder if role == "main" else None, gate)
    progress: list[tuple[str, int, int]] = []
    shared = coordinator(redis_url, invite)
    try:
        vectors = await asyncio.to_thread(shared, Gated(embedder, gate), texts, stage="embed",
                                          progress=lambda *a: progress.append(a))
        helped = await helpers[0]
    finally:
        await client.aclose()
    assert helped == 9, "the helper embedded every batch but the one the syncing process had taken"
    assert vectors.shape == alone.shape
    np.testing.assert_allclose(vectors, alone, atol=1e-4)  # same texts in the same order (batching aside)
    assert progress[-1] == ("embed", 40, 40)
    assert leftover_keys(redis_url) == [], "the exchange is cleaned up"


def test_a_batch_taken_by_a_helper_that_died_is_embedded_by_the_syncing_process(
        redis_url: str, embedder: Embedder, texts: list[str]) -> None:
    sync_redis = redis.Redis.from_url(redis_url)
    lost: list[int] = []

    def invite(run: str) -> None:  # a helper takes a batch, then its worker is killed
        if not lost:
            k = keys(run)
            lost.append(int(sync_redis.eval(TAKE_SCRIPT, 2, k["todo"], k["taken"], "0")))

    vectors = coordinator(redis_url, invite, stale_s=0.5)(embedder, texts)
    assert lost == [0]
    np.testing.assert_allclose(vectors, embed_here(embedder, texts), atol=1e-4)


def test_without_redis_the_syncing_process_embeds_alone(embedder: Embedder, texts: list[str]) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    invited: list[str] = []
    vectors = SharedEmbedding(redis.Redis.from_url(f"redis://127.0.0.1:{port}", socket_connect_timeout=1),
                              invited.append, batch_size=4, min_batches=2)(embedder, texts)
    assert invited == [], "no helper is invited to work that was never published"
    np.testing.assert_allclose(vectors, embed_here(embedder, texts), atol=1e-4)


async def test_a_worker_with_another_model_declines(redis_url: str, embedder: Embedder, texts: list[str]) -> None:
    gate = threading.Event()
    client = aioredis.Redis.from_url(redis_url)
    # configured with another model: mixing its vectors in would break the index
    invite, answers = helper_when_invited(client, lambda role: Renamed(embedder), gate)
    try:
        vectors = await asyncio.to_thread(coordinator(redis_url, invite), Gated(embedder, gate), texts)
        assert await answers[0] == 0
    finally:
        await client.aclose()
    np.testing.assert_allclose(vectors, embed_here(embedder, texts), atol=1e-4)


async def test_a_helper_on_the_host_whose_cores_the_sync_already_uses_declines(
        redis_url: str, embedder: Embedder, texts: list[str]) -> None:
    gate = threading.Event()
    client = aioredis.Redis.from_url(redis_url)
    invite, answers = helper_when_invited(client, lambda role: embedder, gate)  # a worker beside the sync
    busy = coordinator(redis_url, invite)
    busy.busy_host = socket.gethostname()
    try:
        vectors = await asyncio.to_thread(busy, Gated(embedder, gate), texts)
        assert await answers[0] == 0
    finally:
        await client.aclose()
    assert vectors.shape == (40, 384)


async def test_a_helper_for_a_finished_run_or_a_second_one_in_the_same_process_declines(
        redis_url: str, embedder: Embedder, texts: list[str], tmp_path: Path) -> None:
    client = aioredis.Redis.from_url(redis_url)
    loop = asyncio.get_running_loop()
    gate = threading.Event()
    runs: list[str] = []
    first: list[asyncio.Task[int]] = []

    other_process = Working()

    async def helpers(run: str) -> None:
        one = loop.create_task(help_embed(client, lambda role: embedder, run, working=other_process))
        first.append(one)
        await asyncio.sleep(0)  # the first has begun: a second job of the same process must not run beside it
        assert await help_embed(client, lambda role: embedder, run, working=other_process) == 0
        await one
        gate.set()

    def invite(run: str) -> None:
        if not runs:
            runs.append(run)
            asyncio.run_coroutine_threadsafe(helpers(run), loop)

    try:
        await asyncio.to_thread(coordinator(redis_url, invite), Gated(embedder, gate), texts)
        assert first[0].result() == 9
        assert await help_embed(client, lambda role: embedder, runs[0], working=Working()) == 0, "the run is over"
    finally:
        await client.aclose()
