"""Retrieval in a process of its own, so that the worker's event loop keeps the interpreter (issue 16).

A question's search is CPU work: two embeddings, a product with the version's vectors, BM25, fusion — about
16 ms of one core. In threads of the worker's own process (``asyncio.to_thread``) that work is fine alone, but
at 200 answers in flight it made the event loop wait: for the GIL, which six search threads held in turn, and for
the cores, which they and the BLAS library's spinning threads kept busy. The worker's main thread then ran less
than half the time and every answer's stream, database write and Redis call queued behind it
(``docs/benchmarks.md``, "Third round").

:class:`SearchProcess` is a :class:`~bot.pipeline.Searcher` whose searches run in a child process (``spawn``: a
fresh interpreter, never a fork of a process with threads; one by default, ``DESKMATE_SEARCH_PROCESSES``). The
parent keeps only what is cheap:

- **Batches, without a timer.** Questions that arrive while the child is busy wait in the parent and go over in
  one call when it is free: one round trip and one pickling per batch, and the child embeds the batch's
  questions in one call of the main embedder (:meth:`knowledge.retrieval.Retriever.search_many`; the same
  vectors as one by one). Alone, a question goes at once.
- **The vocabulary** (the offline query's term counts) is asked once per index version and kept: the parent
  resolves "latest" itself, with a ``stat`` of the manifest, so a new version is seen at its first question.
- **A crash is not an outage.** A child that dies (out of memory, a native fault) is replaced and the batch is
  sent once more to the new one; a batch that kills two children fails with :class:`SearchProcessError`, and
  the worker's retries take it from there. A child that does not answer within :data:`CALL_TIMEOUT_S` is stopped
  and counts as one that died (a call that needs an index version the child has not read yet is given
  :data:`LOAD_TIMEOUT_S`: reading a big version takes longer than any search). A child whose worker died (SIGKILL) ends itself within a second.

The child loads the embedders and the index once (``warm_kb``), embeds questions on one thread (a question is a
few tokens: a second thread cost more CPU than it saved time) and runs BLAS on one thread (OpenBLAS's idle
threads spin: they had doubled a search's CPU).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import multiprocessing
import os
import pickle
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from threadpoolctl import threadpool_limits

from bot.core.log import get_logger
from knowledge.config import KnowledgeConfig
from knowledge.index import IndexStore
from knowledge.passage import Passage
from knowledge.retrieval import Retriever, SearchRequest, SearchResult

log = get_logger(__name__)

#: Most questions sent to the child in one call (a burst beyond it goes in the next call).
MAX_BATCH = 32
#: How often the child checks that its worker is still alive (seconds).
PARENT_CHECK_S = 1.0
#: A call the child has not answered in this long (seconds) counts as a crash: the child is stopped and replaced,
#: and the call made once more. A search that hangs (a vector server that never answers: Chroma's HTTP client has
#: no timeout) would otherwise hold every question behind it. A batch takes well under a second; loading a new
#: index version, a few seconds. The child's start is not timed.
CALL_TIMEOUT_S = 30.0
#: A call that needs an index version its child has not loaded yet (a new version after a sync, another knowledge
#: base) takes as long as reading that version (0.45 s at 23k chunks on an idle machine, so seconds at 200k, and
#: far more on a busy machine or a network volume) and is timed by this instead.
LOAD_TIMEOUT_S = 600.0
#: How long closing waits for a batch still running before it kills the children (seconds).
CLOSE_GRACE_S = 5.0
#: Index versions whose vocabulary the parent keeps (the releases' pinned versions and the latest).
KEEP_VOCABULARIES = 4

T = TypeVar("T")


class SearchProcessError(RuntimeError):
    """The search process could not start (the models or the index would not load), or stopped while searching,
    twice in a row: the question was not searched."""


# --- the child ----------------------------------------------------------------------------------------------
_retriever: Retriever | None = None
_startup_error: str | None = None  # why the child could not load the models or the index


def _start_child(config: KnowledgeConfig, warm_kb: str | None, parent: int,
                 setup: Callable[[], object] | None) -> None:
    """The child's initializer: the parent's ``setup`` (its logging), one BLAS thread, questions embedded on one
    thread, models and index loaded."""
    global _retriever, _startup_error
    if setup is not None:
        setup()
    threading.Thread(target=_exit_with, args=(parent,), name="deskmate-search-parent", daemon=True).start()
    one_blas_thread()
    one_thread = dataclasses.replace(
        config, embedding=dataclasses.replace(config.embedding, threads=1),
        crosslingual=None if config.crosslingual is None else dataclasses.replace(config.crosslingual, threads=1))
    store = IndexStore(one_thread)
    retriever = Retriever(store)
    try:
        if warm_kb is not None:
            store.warm(warm_kb)
            try:
                retriever.search("warm up", kb=warm_kb, k=1)  # what a first search prepares, prepared now
            except LookupError:
                pass  # no index yet: logged by warm()
    except Exception as exc:  # noqa: BLE001 - said by every call (an initializer that raises breaks the pool, mutely)
        _startup_error = f"{type(exc).__name__}: {exc}"
        log.error("search_process.start_failed", error=_startup_error[:500])
        return
    _retriever = retriever


def one_blas_thread() -> None:
    """Make numpy's BLAS calls of this process run on one thread. A search's products are small; OpenBLAS's
    other threads spin after each, and had doubled a search's CPU (29 → 16 ms per question, measured alone).
    Ingestion's embedders set their own limit per call (``DESKMATE_EMBEDDING_THREADS``)."""
    threadpool_limits(1, user_api="blas")


def _kill(pool: ProcessPoolExecutor) -> None:
    """SIGKILL a pool's children and let it go without waiting (the executor has no public way to kill them)."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.kill()
    pool.shutdown(wait=False, cancel_futures=True)


def _exit_with(parent: int) -> None:
    """End the child when its worker is gone: a SIGKILLed worker cannot stop it, and it would wait forever."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    os._exit(0)


def _child() -> Retriever:
    if _retriever is None:
        raise SearchProcessError(f"the search process could not start: {_startup_error or 'not started'}")
    return _retriever


def _search_batch(requests: list[SearchRequest]) -> list[SearchResult]:
    return [result if _portable(result) else RuntimeError(f"{type(result).__name__}: {result}")
            for result in _child().search_many(requests)]


def _vocabulary(kb: str, version: int) -> dict[str, int]:
    return dict(_child().vocabulary(kb, version))


def _ready() -> bool:
    return _child() is not None


def _portable(result: SearchResult) -> bool:
    """Can the result cross back to the parent? (An exception whose class takes other arguments cannot.)"""
    if not isinstance(result, BaseException):
        return True
    try:
        pickle.loads(pickle.dumps(result))
    except Exception:  # noqa: BLE001 - any failure to round-trip means: send a plain error instead
        return False
    return True


# --- the parent ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Waiting:
    request: SearchRequest
    future: asyncio.Future[list[Passage]]


class SearchProcess:
    """Searches (and vocabularies) answered by ``processes`` child processes (``DESKMATE_SEARCH_PROCESSES``); one
    per worker process. See the module."""

    def __init__(self, config: KnowledgeConfig, *, warm_kb: str | None = None, processes: int = 1,
                 setup: Callable[[], object] | None = None, timeout_s: float = CALL_TIMEOUT_S) -> None:
        """``setup``: a picklable callable each child runs first (the worker passes its logging configuration, so
        that the child's lines are formatted and filtered like its own). ``timeout_s``: see
        :data:`CALL_TIMEOUT_S`."""
        if processes < 1:
            raise ValueError(f"processes must be 1 or more, got {processes}")
        self.config = config
        self.warm_kb = warm_kb
        self.processes = processes
        self.setup = setup
        self.timeout_s = timeout_s
        self._versions = IndexStore(config)  # resolves "latest" (a stat of the manifest); loads no version
        self._pool: ProcessPoolExecutor | None = None
        self._waiting: list[_Waiting] = []
        self._sending: dict[asyncio.Task[None], list[_Waiting]] = {}  # batches in flight
        self._vocabularies: OrderedDict[tuple[str, int], Mapping[str, int]] = OrderedDict()
        #: the versions the children have loaded, with how many calls that needed each have returned (a version
        #: counts as loaded once there were as many as children)
        self._loaded: Counter[tuple[str, int]] = Counter()
        self.batches = 0  # calls made to the child, for tests and benchmarks
        self.restarts = 0

    async def start(self) -> None:
        """Start the children and wait until they have loaded the models and ``warm_kb``'s latest version. If the
        start fails or is cancelled (a worker stopped while it starts), the children are killed at once: leaving
        them would hold the worker's exit until they finish loading."""
        try:
            await asyncio.gather(*(self._call(_ready) for _ in range(self.processes)))
        except BaseException:
            pool, self._pool = self._pool, None
            if pool is not None:
                _kill(pool)
            raise

    async def asearch(self, query: str, **options: Any) -> list[Passage]:
        """:meth:`knowledge.retrieval.Retriever.search` in the child, batched with the questions waiting."""
        future: asyncio.Future[list[Passage]] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting((query, options), future))
        self._pump()
        return await future

    async def avocabulary(self, kb: str, version: int | None = None) -> Mapping[str, int]:
        """The version's terms and how many chunks contain each, asked of the child once per version."""
        resolved = await asyncio.to_thread(self._versions.resolve_version, kb, version)
        key = (kb, resolved)
        vocabulary = self._vocabularies.get(key)
        if vocabulary is None:
            vocabulary = await self._call(_vocabulary, kb, resolved, needs={key})
            self._vocabularies[key] = vocabulary
            while len(self._vocabularies) > KEEP_VOCABULARIES:
                self._vocabularies.popitem(last=False)
        return vocabulary

    async def aclose(self) -> None:
        """Stop the child (questions still waiting fail with :class:`SearchProcessError`)."""
        sending, self._sending = self._sending, {}
        for task, batch in sending.items():
            task.cancel()  # a task not yet started never runs: its askers are told here
            self._waiting.extend(batch)
        for waiting in self._waiting:
            if not waiting.future.done():
                waiting.future.set_exception(SearchProcessError("the search process was stopped"))
        self._waiting.clear()
        pool, self._pool = self._pool, None
        if pool is not None:
            closing = asyncio.ensure_future(asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True))
            try:  # a batch still running ends in milliseconds; one that hangs would hold the worker's exit
                await asyncio.wait_for(asyncio.shield(closing), CLOSE_GRACE_S)
            except TimeoutError:
                _kill(pool)
                await closing

    # --- helpers -----------------------------------------------------------------------------------
    def _pump(self) -> None:
        """Send waiting questions, a batch per call, while a child is free."""
        while self._waiting and len(self._sending) < self.processes:
            batch = [w for w in self._waiting[:MAX_BATCH] if not w.future.done()]  # done: its asker gave up
            del self._waiting[:MAX_BATCH]
            if batch:
                task = asyncio.create_task(self._send(batch), name="deskmate-search-batch")
                self._sending[task] = batch
                task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.pop(task, None)

    async def _send(self, batch: list[_Waiting]) -> None:
        try:
            requests = [w.request for w in batch]
            needs = await asyncio.to_thread(self._versions_of, requests)  # a stat per knowledge base
            results = await self._call(_search_batch, requests, needs=needs)
        except Exception as exc:  # noqa: BLE001 - every asker of the batch hears of it
            results = [exc] * len(batch)
        finally:
            this = asyncio.current_task()
            if this is not None:
                self._sending.pop(this, None)  # its child is free for the next batch
        for w, result in zip(batch, results):
            if w.future.done():
                continue
            if isinstance(result, BaseException):
                w.future.set_exception(result)
            else:
                w.future.set_result(result)
        self._pump()  # what arrived meanwhile

    async def _call(self, fn: Callable[..., T], *args: Any, needs: set[tuple[str, int]] | None = None) -> T:
        """``fn(*args)`` in the child; a child that died is replaced and the call made once more. ``needs``: the
        index versions the call reads (a version not loaded yet is given :data:`LOAD_TIMEOUT_S`)."""
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            fresh = self._pool is None
            pool = self._running_pool()
            timeout: float | None = None  # the start (imports, models, the index) is not timed
            try:
                if fresh and fn is not _ready:  # a replaced child: started first, untimed
                    await asyncio.gather(*(loop.run_in_executor(pool, _ready) for _ in range(self.processes)))
                    await self._warmed()
                if fn is not _ready:
                    loaded = all(self._loaded[key] >= self.processes for key in needs or ())
                    timeout = self.timeout_s if loaded else max(self.timeout_s, LOAD_TIMEOUT_S)
                result: T = await asyncio.wait_for(loop.run_in_executor(pool, fn, *args), timeout)
                if fn is _search_batch:
                    self.batches += 1
                if fn is _ready:
                    await self._warmed()
                self._loaded.update(needs or ())
                return result
            except (BrokenProcessPool, TimeoutError) as exc:
                if isinstance(exc, TimeoutError):  # a search that hangs (a vector server that never answers)
                    exc = BrokenProcessPool(f"no answer within {timeout:g} s: the child was stopped")
                    _kill(pool)
                log.error("search_process.stopped", attempt=attempt, error=str(exc)[:200])
                if self._pool is pool:
                    self._pool = None
                    self._loaded.clear()  # a new child loads every version again
                    self.restarts += 1
                    pool.shutdown(wait=False, cancel_futures=True)
                if attempt == 2:
                    raise SearchProcessError(f"the search process stopped twice: {exc}") from exc
        raise AssertionError("unreachable")

    def _versions_of(self, requests: Sequence[SearchRequest]) -> set[tuple[str, int]]:
        """The index versions ``requests`` read ("latest" resolved; one the store cannot resolve is left out: the
        child reports it to its asker)."""
        needs = set()
        for kb, version in {(options["kb"], options.get("version")) for _, options in requests}:
            with contextlib.suppress(Exception):
                needs.add((kb, self._versions.resolve_version(kb, version)))
        return needs

    async def _warmed(self) -> None:
        """A child that started has loaded ``warm_kb``'s latest version (:func:`_start_child`)."""
        if self.warm_kb is not None:
            needs = await asyncio.to_thread(self._versions_of, [("", {"kb": self.warm_kb})])
            for key in needs:
                self._loaded[key] = max(self._loaded[key], self.processes)

    def _running_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start_child,
                                             initargs=(self.config, self.warm_kb, os.getpid(), self.setup))
        return self._pool
