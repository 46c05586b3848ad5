"""A source sync's embedding shared with a running worker through the arq queue (bot/embed_jobs.py): the worker
takes the helper job, embeds batches with its own models, and the version the sync builds holds exactly the
vectors the syncing process would have made alone. Real redis-server, a real worker, the bundled sample."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from prometheus_client import REGISTRY

from bot.embed_jobs import shared_embedding
from bot.core.settings import SAMPLE_KNOWLEDGE_DIR
from feedback.db import get_database
from knowledge.chunking import indexed_text
from knowledge.config import KnowledgeConfig
from knowledge.connectors.config import parse_sources
from knowledge.embedding import Embedder, Vectors
from knowledge.index import IndexStore
from knowledge.shared_embedding import EmbeddingWork, ProgressCallback, SharedEmbedding, Working, embed_here
from playbooks.sources import run_sync
from tests.conftest import settings_for
from tests.stack import running_worker

METRIC = "deskmate_worker_embedding_batches_total"


def helped() -> float:
    return REGISTRY.get_sample_value(METRIC) or 0.0


class AfterTheWorker:
    """The syncing process's embedder, held back until the worker has embedded its part (the worker and this
    process share two cores: without this, which one is faster decides whether the worker gets any batch)."""

    def __init__(self, inner: Embedder, before: float) -> None:
        self.inner, self.before, self.name = inner, before, inner.name

    def embed(self, texts: Sequence[str]) -> Vectors:
        deadline = time.monotonic() + 60
        while helped() <= self.before:
            assert time.monotonic() < deadline, "the worker never helped"
            time.sleep(0.02)
        return self.inner.embed(texts)


async def test_a_running_worker_embeds_part_of_a_sync(tmp_path: Path, redis_url: str) -> None:
    # two of the sample's folders (~70 chunks, a few batches of 16 each): the whole sample took two minutes of
    # CPU on a slow machine, embedded once by the sync and once more below to compare
    folder = tmp_path / "handbook"
    for part in ("travel", "it"):
        shutil.copytree(SAMPLE_KNOWLEDGE_DIR / part, folder / part)
    sources_file = tmp_path / "sources.yaml"
    sources_file.write_text(f"- {{name: handbook, kind: folder, path: '{folder}'}}\n")
    settings = settings_for(tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
                            redis_url=redis_url, sources_file=sources_file, worker_poll_delay_s=0.02,
                            sources_scheduler=False, embedding_threads=1)  # one core each: the host has room
    get_database(settings.database_url_resolved()).migrate()
    sources = parse_sources([{"name": "handbook", "kind": "folder", "path": str(folder)}])
    before = helped()

    @contextlib.contextmanager
    def embedding() -> Iterator[EmbeddingWork]:
        # the worker runs in this process too: the sync holds its run apart, as another process would
        with shared_embedding(settings, batch_size=16, min_batches=2, working=Working()) as shared:
            def embed(embedder: Embedder, texts: Sequence[str], *, stage: str,
                      progress: ProgressCallback | None) -> Vectors:
                return shared(AfterTheWorker(embedder, helped()), texts, stage=stage, progress=progress)

            yield embed

    async with running_worker(settings):
        result = await asyncio.to_thread(run_sync, settings, sources[0], sources, embedding=embedding)
    assert result.status == "ok" and result.created_version, result.errors
    assert helped() - before >= 2, "the worker embedded batches of both embedders (MiniLM and the cross-lingual one)"

    # the version holds the vectors this process would have made alone, row for row
    store = IndexStore(KnowledgeConfig.from_settings(settings))
    vdir = store.kb_dir(result.kb) / f"v{result.index_version}"
    chunks = json.loads((vdir / "chunks.json").read_text())
    texts = [indexed_text(c["title"], c["heading"], c["text"]) for c in chunks]
    assert len(texts) > 3 * 16, "batches enough for the worker's part and the process's own"
    np.testing.assert_allclose(np.load(vdir / "vectors.npy"), embed_here(store.embedder, texts), atol=1e-4)
    crosslingual = store.crosslingual_embedder
    assert crosslingual is not None
    np.testing.assert_allclose(np.load(vdir / "vectors_xl.npy")[:24], crosslingual.embed(texts[:24]), atol=1e-4)


def test_a_sync_on_every_core_keeps_helpers_of_its_own_host_away(tmp_path: Path, redis_url: str) -> None:
    every_core = settings_for(tmp_path, redis_url=redis_url)  # DESKMATE_EMBEDDING_THREADS=0: one per core
    with shared_embedding(every_core) as shared:
        assert isinstance(shared, SharedEmbedding) and shared.busy_host == socket.gethostname()
    with shared_embedding(settings_for(tmp_path, redis_url=redis_url, embedding_threads=1)) as shared:
        assert isinstance(shared, SharedEmbedding) and shared.busy_host is None
    with shared_embedding(settings_for(tmp_path, redis_url=redis_url, sources_shared_embedding=False)) as alone:
        assert alone is embed_here
