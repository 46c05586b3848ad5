"""Searches in a child process (knowledge/search_process.py) and in batches (Retriever.search_many): the same
passages as a search in the asking process, errors that reach their asker, and a child that dies replaced."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from bot.core.log import configure_logging
from knowledge import retrieval
from knowledge.config import EmbeddingConfig, KnowledgeConfig
from knowledge.embedding import Embedder, Vectors, embed_queries
from knowledge.index import IndexNotFound, IndexStore
from knowledge.passage import Passage
from knowledge.retrieval import FusionConfig, Retriever
from knowledge.search_process import SearchProcess, SearchProcessError
from tests.conftest import settings_for

QUESTIONS = [
    "How many vacation days do I get?",
    "how do I reset my VPN password",
    "Wie viele Urlaubstage habe ich?",  # another language: the cross-lingual route, embedded on its own
    "expense report deadline",
    "Who approves travel?",
    "laptop stolen what now",
]
#: More than one block of the dense product (knowledge.retrieval.DENSE_BLOCK) of distinct questions.
MORE = ["parental leave", "where is the office", "security training deadline", "how to request a new monitor",
        "per diem rates", "who do I ask about benefits", "jury duty", "onboarding checklist", "remote work policy",
        "password manager"]


def seen(passages: list[Passage]) -> list[tuple[str, float, float | None, float | None]]:
    return [(p.chunk_id, p.score, p.dense_score, p.relevance) for p in passages]


def same(a: list[Passage], b: list[Passage]) -> None:
    """The same passages, scores and cosines, bit for bit."""
    assert seen(a) == seen(b)


def test_a_batch_finds_what_each_search_finds_alone(sample_retriever: Retriever,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    main_embeddings: list[int] = []

    def counted(embedder: Embedder, texts: Sequence[str]) -> Vectors:
        if embedder is sample_retriever.store.embedder:
            main_embeddings.append(len(texts))
        return embed_queries(embedder, texts)

    requests = [(q, {"kb": "default", "k": 4}) for q in QUESTIONS + MORE]
    requests.append(("and for contractors?", {"kb": "default", "k": 4, "alternative": "vacation days contractors"}))
    requests.append(("VPN password", {"kb": "default", "mode": "bm25"}))
    requests.append(("vacation", {"kb": "nope"}))  # one failing search fails alone
    with monkeypatch.context() as patch:
        patch.setattr(retrieval, "embed_queries", counted)
        results = sample_retriever.search_many(requests)
    assert main_embeddings == [len(QUESTIONS) - 1 + len(MORE) + 2]  # one call: every question but the German one
    assert isinstance(results[-1], IndexNotFound)
    for (query, options), result in zip(requests[:-1], results[:-1]):
        assert isinstance(result, list) and result, query
        same(result, sample_retriever.search(query, **options))


@pytest.fixture
def config(sample_data_dir: Path) -> KnowledgeConfig:
    return KnowledgeConfig.from_settings(settings_for(sample_data_dir))


async def test_the_search_process_answers_as_the_worker_would_in_batches(
        config: KnowledgeConfig, sample_retriever: Retriever) -> None:
    searcher = SearchProcess(config, warm_kb="default")
    try:
        await searcher.start()
        asked = [q for q in QUESTIONS for _ in range(5)]
        results = await asyncio.gather(*(searcher.asearch(q, kb="default", k=4, fusion=FusionConfig())
                                         for q in asked))
        for question, result in zip(asked, results):
            same(result, sample_retriever.search(question, kb="default", k=4))
        assert searcher.batches < len(asked)  # the questions that waited went over together

        with pytest.raises(IndexNotFound):  # the error of the search, as the asking process would raise it
            await searcher.asearch("vacation", kb="nope")
        vocabulary = await searcher.avocabulary("default")
        assert vocabulary == sample_retriever.vocabulary("default") and vocabulary["password"] > 0
        batches = searcher.batches
        assert await searcher.avocabulary("default") is vocabulary  # kept for the version: not asked again
        assert searcher.batches == batches
        with pytest.raises(IndexNotFound):
            await searcher.avocabulary("nope")
    finally:
        await searcher.aclose()


async def test_a_search_process_that_dies_is_replaced_and_an_asker_who_left_is_skipped(
        config: KnowledgeConfig, sample_retriever: Retriever) -> None:
    searcher = SearchProcess(config, warm_kb="default")
    asked: list[asyncio.Future[list[Passage]]] = []
    try:
        await searcher.start()
        pool = searcher._pool
        assert pool is not None
        for pid in list(pool._processes):  # the child dies (out of memory, a native fault)
            os.kill(pid, signal.SIGKILL)
        result = await asyncio.wait_for(searcher.asearch(QUESTIONS[0], kb="default"), timeout=120)
        same(result, sample_retriever.search(QUESTIONS[0], kb="default"))
        assert searcher.restarts == 1

        gone = asyncio.ensure_future(searcher.asearch(QUESTIONS[1], kb="default"))
        kept = asyncio.ensure_future(searcher.asearch(QUESTIONS[2], kb="default"))
        gone.cancel()
        same(await kept, sample_retriever.search(QUESTIONS[2], kb="default"))
        assert gone.cancelled()

        # closed with questions in flight and waiting: each asker is answered or told, none left waiting
        asked += [asyncio.ensure_future(searcher.asearch(q, kb="default")) for q in QUESTIONS * 4]
        await asyncio.sleep(0)
    finally:
        await searcher.aclose()
    done, pending = await asyncio.wait(asked, timeout=30)
    assert not pending
    for task in done:
        error = task.exception()
        assert error is None or isinstance(error, SearchProcessError), error


ORPHAN_SCRIPT = """
import asyncio, sys
from pathlib import Path
from knowledge.config import KnowledgeConfig
from knowledge.search_process import SearchProcess

async def main() -> None:
    searcher = SearchProcess(KnowledgeConfig(index_dir=Path(sys.argv[1]), chroma_dir=Path(sys.argv[2])))
    await searcher.start()
    assert searcher._pool is not None
    print(*searcher._pool._processes, flush=True)
    await asyncio.sleep(600)

if __name__ == "__main__":
    asyncio.run(main())
"""


def test_the_search_process_ends_when_its_worker_is_killed(tmp_path: Path) -> None:
    worker = subprocess.Popen([sys.executable, "-c", ORPHAN_SCRIPT, str(tmp_path / "index"), str(tmp_path / "chroma")],
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        assert worker.stdout is not None
        child = int(worker.stdout.readline().split()[0])
        os.kill(worker.pid, signal.SIGKILL)  # no shutdown, no cleanup: the OOM killer's way
        worker.wait(timeout=10)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child}").exists() and _state(child) != "Z" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Path(f"/proc/{child}").exists() or _state(child) == "Z"
    finally:
        if worker.poll() is None:
            worker.kill()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


async def test_a_search_process_that_cannot_load_its_model_says_why(
        config: KnowledgeConfig, sample_data_dir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    broken = dataclasses.replace(config, embedding=EmbeddingConfig(backend="sentence-transformers"))  # not installed
    as_deployed = settings_for(sample_data_dir, log_format="json")
    searcher = SearchProcess(broken, warm_kb="default", setup=functools.partial(configure_logging, as_deployed))
    try:
        with pytest.raises(SearchProcessError, match="could not start: .*sentence-transformers"):
            await asyncio.wait_for(searcher.start(), timeout=120)
        with pytest.raises(SearchProcessError, match="could not start"):  # and every search after, the same
            await searcher.asearch("vacation", kb="default")
        assert searcher.restarts == 0  # a child that cannot load is not a child that crashed
        lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
        assert any(line["event"] == "search_process.start_failed" and "sentence-transformers" in line["error"]
                   for line in lines)  # logged by the child as the worker logs: JSON
    finally:
        await searcher.aclose()


HANGS = "a question whose search never ends"


def hang_on(question: str) -> None:
    """Run in the child (``setup``): its search of ``question`` never ends, as behind a vector server that never
    answers."""
    original = Retriever.search_many

    def search_many(self: Retriever, requests: Sequence[retrieval.SearchRequest]) -> list[retrieval.SearchResult]:
        if any(query == question for query, _ in requests):
            time.sleep(3600)
        return original(self, requests)

    Retriever.search_many = search_many  # type: ignore[method-assign]


async def test_a_search_process_that_hangs_is_stopped_and_replaced(
        config: KnowledgeConfig, sample_retriever: Retriever) -> None:
    searcher = SearchProcess(config, warm_kb="default", setup=functools.partial(hang_on, HANGS), timeout_s=2)
    try:
        await searcher.start()
        started = time.monotonic()
        with pytest.raises(SearchProcessError, match="no answer within 2 s"):
            await searcher.asearch(HANGS, kb="default")
        assert searcher.restarts == 2 and time.monotonic() - started < 60  # tried on a second child, then given up
        result = await asyncio.wait_for(searcher.asearch(QUESTIONS[0], kb="default"), timeout=120)
        same(result, sample_retriever.search(QUESTIONS[0], kb="default"))  # the next question: a fresh child
    finally:
        await searcher.aclose()


def _children() -> list[int]:
    """This process's living multiprocessing children (the search processes a test started)."""
    return [p.pid for p in multiprocessing.active_children() if p.pid is not None]


async def _until_gone(pids: list[int], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while any(_state(pid) not in ("gone", "Z") for pid in pids) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert all(_state(pid) in ("gone", "Z") for pid in pids), [(pid, _state(pid)) for pid in pids]


async def test_a_worker_stopped_while_its_search_process_loads_does_not_wait_for_it(config: KnowledgeConfig) -> None:
    """A worker stopped while it starts (a deploy, a scale-down) exits at once: its child, still loading, is
    killed rather than waited for (the interpreter's exit would wait for the pool until the load finished)."""
    searcher = SearchProcess(config, warm_kb="default", setup=functools.partial(time.sleep, 600))  # a slow load
    others = set(_children())
    starting = asyncio.create_task(searcher.start())
    deadline = time.monotonic() + 60
    while not set(_children()) - others and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    pids = list(set(_children()) - others)
    assert pids
    stopped = time.monotonic()
    starting.cancel()  # what arq does to the worker's start on SIGTERM
    with pytest.raises(asyncio.CancelledError):
        await starting
    await _until_gone(pids, timeout_s=5)
    assert time.monotonic() - stopped < 5
    await searcher.aclose()


async def test_closing_does_not_wait_for_a_search_that_hangs(config: KnowledgeConfig,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("knowledge.search_process.CLOSE_GRACE_S", 1.0)
    searcher = SearchProcess(config, warm_kb="default", setup=functools.partial(hang_on, HANGS))
    others = set(_children())
    await searcher.start()
    pids = list(set(_children()) - others)
    asking = asyncio.create_task(searcher.asearch(HANGS, kb="default"))
    while searcher.batches == 0 and not searcher._sending:  # the batch is on its way to the child
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await asyncio.wait_for(searcher.aclose(), timeout=30)
    assert time.monotonic() - started < 10  # the grace, then the child killed
    with pytest.raises(SearchProcessError, match="stopped"):
        await asking  # its asker is told, not left waiting
    await _until_gone(pids, timeout_s=5)


def slow_loads(seconds: float) -> None:
    """Run in the child (``setup``): reading an index version takes ``seconds``, as a big one does (the chunk
    table of 200k chunks)."""
    original = IndexStore.load

    def load(self: IndexStore, kb: str, version: int | None = None) -> Any:
        if (kb, self.resolve_version(kb, version)) not in self._loaded:
            time.sleep(seconds)
        return original(self, kb, version)

    IndexStore.load = load  # type: ignore[method-assign]


async def test_a_version_that_loads_slower_than_a_search_may_take_is_loaded_not_killed(
        config: KnowledgeConfig, sample_retriever: Retriever) -> None:
    """The call timeout is for searches; the first call that needs a version the child has not read yet (a new
    version after a sync: seconds at 200k chunks, more on a busy machine) is given the load's time, or every
    search of a big new version could kill the child, twice, and fail."""
    searcher = SearchProcess(config, setup=functools.partial(slow_loads, 3), timeout_s=1)  # nothing loaded at start
    try:
        await searcher.start()
        result = await asyncio.wait_for(searcher.asearch(QUESTIONS[0], kb="default"), timeout=120)
        same(result, sample_retriever.search(QUESTIONS[0], kb="default"))
        assert searcher.restarts == 0
        again = await asyncio.wait_for(searcher.asearch(QUESTIONS[1], kb="default"), timeout=60)  # loaded now
        same(again, sample_retriever.search(QUESTIONS[1], kb="default"))
    finally:
        await searcher.aclose()
