"""A large sync's embedding work, shared with every worker through Redis (docs/sources.md, "Sharing the work").

Embedding is most of a first sync's time (a few hundred chunks a second per process). The process that builds
the version — the *coordinator*: ``deskmate source sync`` or the worker whose schedule started the sync — cuts
the texts to embed into batches and publishes them in Redis; each worker that takes a helper job from the arq
queue (:func:`help_embed`, enqueued through the ``invite`` callback the coordinator is given) embeds batches
until none is left. The coordinator embeds batches too, so nothing waits for a worker that does not come.

The exchange, under ``deskmate:embed:<run>:`` (every key expires after ``ttl_s``)::

    meta      hash: role ("main" / "crosslingual"), the embedder's name, the number of batches
    in:<i>    batch i's texts (JSON)
    todo      list: the batches nobody has taken
    taken     hash: batch → when it was taken (unix seconds); taking is atomic (TAKE_SCRIPT)
    out:<i>   batch i's vectors (float32, row after row)
    done      list: the batches whose vectors are in (the coordinator blocks on it)

What cannot go wrong:

- **A helper that dies** (killed worker, lost Redis) leaves a batch taken without vectors: after ``stale_s``
  the coordinator embeds it itself.
- **A helper with another model** (a worker configured differently) declines: the embedder's name is checked,
  so vectors of two models are never mixed in one index.
- **A helper on a host whose cores are all embedding already** declines (``busy_host``): on one machine, a
  second process embedding on the same cores makes the sync slower, not faster (``bench/bench_shared_sync.py``).
- **No Redis, or Redis lost midway**: the coordinator embeds what is missing itself (logged once); a sync never
  fails because the work could not be shared.
- Batches are small (``batch_size`` texts), so a worker that helps is never away from its answers for long,
  and a process works on a run at most once at a time (:class:`Working`: a helper job for a run the process
  is already syncing or helping with declines).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import RedisError

from bot.core.log import get_logger
from knowledge.embedding import Embedder, Vectors
from knowledge.index import IndexStore

log = get_logger(__name__)

PREFIX = "deskmate:embed:"
#: Takes the next batch and notes when, in one step (so a taken batch is never seen as "nobody's"). KEYS: todo,
#: taken; ARGV: now. Returns the batch number or nil.
TAKE_SCRIPT = """
local i = redis.call('LPOP', KEYS[1])
if i then redis.call('HSET', KEYS[2], i, ARGV[1]) end
return i
"""
#: Redis errors and the OS's (refused, reset) from a raw socket.
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError)

ProgressCallback = Callable[[str, int, int], None]  # (stage, done, total): an ingestion's progress


class EmbeddingWork(Protocol):
    """How an ingestion turns texts into vectors (one row per text, in order)."""

    def __call__(self, embedder: Embedder, texts: Sequence[str], *, stage: str,
                 progress: ProgressCallback | None) -> Vectors: ...


def embed_here(embedder: Embedder, texts: Sequence[str], *, stage: str = "embed",
               progress: ProgressCallback | None = None, step: int = 256) -> Vectors:
    """Every text embedded by this process, ``step`` at a time (progress after each step)."""
    parts: list[Vectors] = []
    for i in range(0, len(texts), step):
        parts.append(embedder.embed(list(texts[i : i + step])))
        if progress:
            progress(stage, min(i + step, len(texts)), len(texts))
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def role_of(stage: str) -> str:
    return "crosslingual" if stage.endswith("crosslingual") else "main"


def keys(run: str) -> dict[str, str]:
    base = f"{PREFIX}{run}:"
    return {name: base + name for name in ("meta", "todo", "taken", "done")} | {"base": base}


def encode(vectors: Vectors) -> bytes:
    return np.ascontiguousarray(vectors, dtype=np.float32).tobytes()


def decode(data: bytes, rows: int) -> Vectors:
    return np.frombuffer(data, dtype=np.float32).reshape(rows, -1).copy()


class Working:
    """The runs a process is working on (as the syncing process or as a helper): its own helper jobs for them
    decline, so one process never runs two embeddings of one run side by side on the same cores."""

    def __init__(self) -> None:
        self._runs: set[str] = set()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def on(self, run: str) -> Iterator[bool]:
        """Holds ``run`` for this process; yields False when it was already held (then the caller declines)."""
        with self._lock:
            first = run not in self._runs
            self._runs.add(run)
        try:
            yield first
        finally:
            if first:
                with self._lock:
                    self._runs.discard(run)


#: This process's runs.
PROCESS_WORK = Working()


@dataclass
class SharedEmbedding:
    """The coordinator's side: an :class:`EmbeddingWork` that shares its batches through ``redis`` (a sync
    client) with the workers ``invite`` calls (``invite(run)`` puts a helper job on the queue unless one is
    already waiting; it may raise: the work is then done here)."""

    redis: Redis
    invite: Callable[[str], None]
    batch_size: int = 64
    #: work of fewer batches is embedded here at once (publishing it would cost more than it saves)
    min_batches: int = 4
    #: a batch taken longer ago than this without its vectors is embedded here
    stale_s: float = 120.0
    ttl_s: int = 3600
    working: Working = PROCESS_WORK
    #: this host's name when the syncing process's embedding already uses every core of it: helpers on the same
    #: host then decline (they would only slow it down by sharing the same cores)
    busy_host: str | None = None

    def __call__(self, embedder: Embedder, texts: Sequence[str], *, stage: str = "embed",
                 progress: ProgressCallback | None = None) -> Vectors:
        batches = [list(texts[i : i + self.batch_size]) for i in range(0, len(texts), self.batch_size)]
        if len(batches) < self.min_batches:
            return embed_here(embedder, texts, stage=stage, progress=progress)
        run = uuid.uuid4().hex
        started = time.perf_counter()
        with self.working.on(run):
            work = _Run(self, run, embedder, role_of(stage), batches, stage, progress)
            results = work.run()
        log.info("embedding.shared.done", run=run, stage=stage, batches=len(batches), by_helpers=work.helped,
                 texts=len(texts), seconds=round(time.perf_counter() - started, 2))
        return np.concatenate([results[i] for i in range(len(batches))])


class _Run:
    """One call of :class:`SharedEmbedding`: publish, take and embed batches, collect the helpers' vectors."""

    def __init__(self, shared: SharedEmbedding, run: str, embedder: Embedder, role: str,
                 batches: list[list[str]], stage: str, progress: ProgressCallback | None) -> None:
        self.shared, self.run_id, self.embedder, self.role = shared, run, embedder, role
        self.batches, self.stage, self.progress = batches, stage, progress
        self.keys = keys(run)
        # redis-py types every reply as "an awaitable or a value" (one class for both clients): read as Any here
        self.redis: Any = shared.redis
        self.results: dict[int, Vectors] = {}
        self.total = sum(len(b) for b in batches)
        self.shared_ok = True  # False once Redis failed: everything left is embedded here
        self.helped = 0  # batches whose vectors came from helpers
        self.inviting = True  # False once an invitation failed: no helper will come

    def run(self) -> dict[int, Vectors]:
        try:
            self._publish()
        except REDIS_ERRORS as exc:
            self._lost(exc)
        try:
            while self.shared_ok and len(self.results) < len(self.batches):
                try:
                    self._step()
                except REDIS_ERRORS as exc:
                    self._lost(exc)
            for i in range(len(self.batches)):  # Redis lost: what is left is embedded here
                self._embed(i)
        finally:
            self._clean_up()
        return self.results

    def _publish(self) -> None:
        r, k, ttl = self.redis, self.keys, self.shared.ttl_s
        pipe = r.pipeline(transaction=False)
        for i, batch in enumerate(self.batches):
            pipe.set(f"{k['base']}in:{i}", json.dumps(batch), ex=ttl)
        pipe.rpush(k["todo"], *range(len(self.batches)))
        pipe.hset(k["meta"], mapping={"role": self.role, "embedder": self.embedder.name,
                                      "batches": len(self.batches), "ttl": ttl,
                                      "busy_host": self.shared.busy_host or ""})
        for name in ("meta", "todo"):
            pipe.expire(k[name], ttl)
        pipe.execute()

    def _invite(self) -> None:
        if not self.inviting:
            return
        try:
            self.shared.invite(self.run_id)
        except Exception as exc:  # noqa: BLE001 - no helper comes: the work is done here
            log.warning("embedding.shared.invite_failed", run=self.run_id, error=repr(exc)[:200])
            self.inviting = False

    def _step(self) -> None:
        r, k = self.redis, self.keys
        self._invite()
        taken = r.eval(TAKE_SCRIPT, 2, k["todo"], k["taken"], time.time())
        if taken is not None:
            self._embed(int(taken))
            self._collect(wait=False)
            return
        # nothing left to take: wait for the helpers' vectors, and redo what a lost helper left
        self._collect(wait=True)
        missing = [i for i in range(len(self.batches)) if i not in self.results]
        if not missing:
            return
        taken_at = r.hmget(k["taken"], missing)
        now = time.time()
        for i, at in zip(missing, taken_at):
            if at is None or now - float(at) > self.shared.stale_s:
                log.warning("embedding.shared.batch_lost", run=self.run_id, batch=i)
                r.hset(k["taken"], str(i), now)
                self._embed(i)

    def _collect(self, *, wait: bool) -> None:
        """The helpers' vectors that are in; with ``wait``, waiting up to a second for the first."""
        r, k = self.redis, self.keys
        ready: list[int] = []
        if wait:
            item = r.blpop([k["done"]], timeout=1)
            if item is not None:
                ready.append(int(item[1]))
        while (i := r.lpop(k["done"])) is not None:
            ready.append(int(i))
        for i in ready:
            if i in self.results:
                continue
            data = r.get(f"{k['base']}out:{i}")
            if data is not None:
                self.results[i] = decode(data, len(self.batches[i]))
                self.helped += 1
                self._report()

    def _embed(self, i: int) -> None:
        if i not in self.results:
            self.results[i] = self.embedder.embed(self.batches[i])
            self._report()

    def _report(self) -> None:
        if self.progress:
            done = sum(len(self.batches[i]) for i in self.results)
            self.progress(self.stage, done, self.total)

    def _lost(self, exc: BaseException) -> None:
        if self.shared_ok:
            log.warning("embedding.shared.redis_lost", run=self.run_id, error=repr(exc)[:200])
        self.shared_ok = False

    def _clean_up(self) -> None:
        k = self.keys
        names = [k["meta"], k["todo"], k["taken"], k["done"]]
        names += [f"{k['base']}{kind}:{i}" for kind in ("in", "out") for i in range(len(self.batches))]
        with contextlib.suppress(*REDIS_ERRORS):
            self.redis.delete(*names)


async def help_embed(client: AsyncRedis, embedder_for: Callable[[str], Embedder | None], run: str, *,
                     budget_s: float = 120.0, working: Working = PROCESS_WORK) -> int:
    """A worker's side: embed ``run``'s batches until none is left, or until ``budget_s`` has passed (then it
    stops taking new ones); returns how many this call embedded. ``embedder_for(role)`` is this process's
    embedder for that role (None: it has none). Declines (returns 0) when the run is over, when this process
    already works on it, or when its embedder is not the coordinator's."""
    k = keys(run)
    redis: Any = client  # see _Run.redis
    with working.on(run) as first:
        if not first:
            return 0
        meta = {key.decode(): value.decode() for key, value in (await redis.hgetall(k["meta"])).items()}
        if not meta:
            return 0  # over (or never published)
        if meta.get("busy_host") and meta["busy_host"] == socket.gethostname():
            log.info("embedding.shared.same_host", run=run)  # its cores are all embedding already
            return 0
        embedder = embedder_for(meta["role"])
        if embedder is None or embedder.name != meta["embedder"]:
            log.warning("embedding.shared.other_model", run=run, role=meta["role"], wanted=meta["embedder"],
                        have=embedder.name if embedder is not None else None)
            return 0
        take = redis.register_script(TAKE_SCRIPT)
        embedded = 0
        stop_at = time.monotonic() + budget_s
        while time.monotonic() < stop_at and (taken := await take(keys=[k["todo"], k["taken"]], args=[time.time()])) is not None:
            i = int(taken)
            data = await redis.get(f"{k['base']}in:{i}")
            if data is None:
                break  # the run ended meanwhile
            texts: list[str] = json.loads(data)
            try:
                vectors = await asyncio.to_thread(embedder.embed, texts)
            except Exception:
                await redis.rpush(k["todo"], i)  # back for the coordinator, which will say what is wrong
                raise
            ttl = int(meta.get("ttl", 3600))
            pipe = redis.pipeline(transaction=False)
            pipe.set(f"{k['base']}out:{i}", encode(vectors), ex=ttl)
            pipe.rpush(k["done"], i)
            pipe.expire(k["done"], ttl)
            await pipe.execute()
            embedded += 1
        if embedded:
            log.info("embedding.shared.helped", run=run, role=meta["role"], batches=embedded)
        return embedded


def embedder_for_store(store: IndexStore) -> Callable[[str], Embedder | None]:
    """``embedder_for`` of :func:`help_embed` for an index store (its embedders are loaded on first use)."""

    def pick(role: str) -> Embedder | None:
        embedder: Embedder | None = store.embedder if role == "main" else store.crosslingual_embedder
        return embedder

    return pick
