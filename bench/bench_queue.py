"""Redis commands, Redis round trips and event-loop wake-ups per answered question, in one ``deskmate worker``.

Three parties, as deployed: this process (the load: it records and enqueues questions the way the web process
does, then waits for the answers in the database), one ``deskmate worker`` in a child process (the real queue:
SQLite → Redis → arq; the bundled sample knowledge base), and the stand-in model (the local Messages API server
from the tests, streaming one word per ``text_delta``: ``--first-token-s`` to the first word, then
``--tokens-per-s``).

The worker child counts, from inside redis-py (every connection, every client of the process: arq's pool and the
runtime's own):

- *commands*: each command sent (a pipeline's ``MULTI`` … ``EXEC`` count one each);
- *round trips*: each write of commands to a socket that is then answered (a pipeline is one);
- *loop wake-ups*: iterations of the event loop (``BaseEventLoop._run_once``).

It also tallies the commands by name and by where they come from (the first frame in Deskmate's packages or in
arq). Before the batch the worker idles ``--idle-s`` seconds to measure what it spends when nothing is asked (the
poll, cron enqueues); the batch's figures are reported whole and net of that idle rate. The server's own
``INFO commandstats`` (every client, the load's enqueues included) is printed beside them as a cross-check.

    .venv/bin/python bench/bench_queue.py --questions 60 --in-flight 20
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

QUESTIONS = [
    "How do I connect to the VPN?",
    "How many days of annual leave do I get?",
    "How do I reset my password?",
    "Who approves expense reports?",
    "How do I request a new laptop?",
    "What is the policy on working from home?",
]


# --- the worker child: counting inside redis-py and the event loop ------------------------------------
class Counters:
    def __init__(self) -> None:
        self.commands = 0
        self.round_trips = 0
        self.wakeups = 0
        self.by_name: collections.Counter[str] = collections.Counter()
        self.by_origin: collections.Counter[str] = collections.Counter()
        self.callbacks: collections.Counter[str] = collections.Counter()

    def snapshot(self) -> dict[str, Any]:
        return {"commands": self.commands, "round_trips": self.round_trips, "wakeups": self.wakeups,
                "by_name": dict(self.by_name), "by_origin": dict(self.by_origin), "callbacks": dict(self.callbacks)}


def _origin() -> str:
    """The first frame (innermost first) in Deskmate's packages or arq that led to this command."""
    for frame in reversed(traceback.extract_stack(limit=40)[:-3]):
        name = frame.filename
        for package in ("/bot/", "/playbooks/", "/feedback/", "/knowledge/", "/arq/"):
            if package in name and "bench_queue" not in name:
                return f"{package.strip('/')}/{name.rsplit(package, 1)[1]}:{frame.name}"
    return "other"


def instrument(counters: Counters) -> None:
    from redis.asyncio.connection import AbstractConnection

    pack_command = AbstractConnection.pack_command  # pack_commands (a pipeline) packs each with it
    send = AbstractConnection.send_packed_command

    def count(name: Any) -> None:
        text = (name.decode() if isinstance(name, bytes) else str(name)).upper()
        counters.commands += 1
        counters.by_name[text] += 1
        counters.by_origin[f"{_origin()} {text}"] += 1

    def packed_one(self: Any, *args: Any) -> Any:
        count(args[0])
        return pack_command(self, *args)

    async def sent(self: Any, command: Any, check_health: bool = True) -> None:
        counters.round_trips += 1
        await send(self, command, check_health)

    AbstractConnection.pack_command = packed_one  # type: ignore[method-assign]
    AbstractConnection.send_packed_command = sent  # type: ignore[method-assign]

    run_once = asyncio.BaseEventLoop._run_once  # type: ignore[attr-defined]

    def counted_run_once(self: Any) -> None:
        counters.wakeups += 1
        run_once(self)

    asyncio.BaseEventLoop._run_once = counted_run_once  # type: ignore[attr-defined]

    run_handle = asyncio.Handle._run

    def counted_run(self: Any) -> None:
        """What the loop runs: a task's step is named by its coroutine, anything else by its callback."""
        callback = self._callback
        owner = getattr(callback, "__self__", None)
        if isinstance(owner, asyncio.Task):
            coro = owner.get_coro()
            name = f"task {getattr(coro, '__qualname__', type(coro).__name__)}"
        else:
            name = getattr(callback, "__qualname__", type(callback).__name__)
        counters.callbacks[name] += 1
        run_handle(self)

    asyncio.Handle._run = counted_run  # type: ignore[method-assign]


def serve_worker(counts_path: Path) -> None:
    """The child process: ``deskmate worker`` with counters; SIGUSR1 writes them to ``counts_path``."""
    counters = Counters()
    instrument(counters)

    def dump(_signum: int, _frame: Any) -> None:
        tmp = counts_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(counters.snapshot()))
        tmp.replace(counts_path)

    signal.signal(signal.SIGUSR1, dump)
    from bot.core.settings import get_settings
    from bot.worker import run_worker

    run_worker(get_settings())


# --- the load ------------------------------------------------------------------------------------------
async def read_counts(proc: subprocess.Popen[bytes], path: Path) -> dict[str, Any]:
    path.unlink(missing_ok=True)
    proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 30
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the worker did not write its counters")
        await asyncio.sleep(0.02)
    return dict(json.loads(path.read_text()))


def delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: after[k] - before[k] for k in ("commands", "round_trips", "wakeups")}
    for key in ("by_name", "by_origin", "callbacks"):
        diff = {k: v - before[key].get(k, 0) for k, v in after[key].items()}
        out[key] = {k: v for k, v in sorted(diff.items(), key=lambda kv: -kv[1]) if v}
    return out


async def commandstats(redis: Any) -> dict[str, int]:
    info = await redis.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}


async def wait_answered(rt: Any, ids: list[int], timeout_s: float) -> None:
    """Every question final and its answer job finished (its arq result is written last)."""
    from arq.jobs import Job
    from sqlmodel import col, select

    from bot.core.types import FINAL_STATUSES
    from bot.queue import job_id
    from feedback.models import Interaction

    deadline = time.monotonic() + timeout_s
    while True:
        async with rt.db.asession() as session:
            rows = list((await session.exec(select(Interaction).where(col(Interaction.id).in_(ids)))).all())
        if len(rows) == len(ids) and all(r.status in FINAL_STATUSES for r in rows):
            infos = [await Job(job_id(r.idempotency_key), rt.redis).result_info() for r in rows]
            if all(i is not None for i in infos):
                statuses = collections.Counter(str(r.status) for r in rows)
                if len(statuses) > 1 or "answered" not in next(iter(statuses)):
                    print(json.dumps({"statuses": dict(statuses)}), file=sys.stderr)
                return
        if time.monotonic() > deadline:
            raise TimeoutError("questions unanswered")
        await asyncio.sleep(0.1)


def worker_env(args: argparse.Namespace, data_dir: Path, database_url: str, redis_url: str,
               llm_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESKMATE_")}
    env.update({
        "PYTHONUNBUFFERED": "1", "ANONYMIZED_TELEMETRY": "False",
        "DESKMATE_ENVIRONMENT": "production",
        "DESKMATE_USER_HASH_SALT": secrets.token_hex(32),
        "DESKMATE_DATA_DIR": str(data_dir),
        "DESKMATE_DATABASE_URL": database_url, "DESKMATE_REDIS_URL": redis_url,
        "DESKMATE_ANTHROPIC_API_KEY": "sk-bench", "DESKMATE_ANTHROPIC_BASE_URL": llm_url,
        "DESKMATE_WORKER_MAX_JOBS": str(args.in_flight), "DESKMATE_SOURCES_SCHEDULER": "false",
    })
    return env


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--questions", type=int, default=60)
    parser.add_argument("--in-flight", type=int, default=20, help="the worker's DESKMATE_WORKER_MAX_JOBS")
    parser.add_argument("--first-token-s", type=float, default=1.0)
    parser.add_argument("--tokens-per-s", type=float, default=40.0)
    parser.add_argument("--idle-s", type=float, default=3.0)
    parser.add_argument("--data-dir", type=Path, help="a data dir for the sample knowledge base (ingested there "
                        "if it has no index yet; default: a temporary one)")
    parser.add_argument("--top", type=int, default=25, help="origins listed")
    args = parser.parse_args()
    from bench.procs import stop
    from bot.core.settings import SAMPLE_KNOWLEDGE_DIR, Settings
    from bot.local_chat.web import local_question
    from bot.runtime import build_runtime
    from tests.fakes.anthropic_server import Reply, start_fake_anthropic
    from tests.fakes.redis_server import start_redis_server

    logging.disable(logging.INFO)
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))  # the load's own
    tmp = Path(tempfile.mkdtemp(prefix="deskmate-bench-queue-"))
    data_dir = args.data_dir or tmp / "data"
    if not (data_dir / "index").exists():
        from knowledge.config import KnowledgeConfig
        from knowledge.index import IndexStore
        from knowledge.ingest import ingest

        settings = Settings(_env_file=None, data_dir=data_dir)  # type: ignore[call-arg]
        ingest(IndexStore(KnowledgeConfig.from_settings(settings)), SAMPLE_KNOWLEDGE_DIR, kb="default")
    database_url = f"sqlite:///{tmp / 'db.sqlite'}"
    counts_path = tmp / "counts.json"
    try:
        with start_redis_server() as redis_server:
            async with start_fake_anthropic() as llm:
                llm.always(Reply.answer(first_token_s=args.first_token_s, tokens_per_s=args.tokens_per_s))
                settings = Settings(_env_file=None, database_url=database_url,  # type: ignore[call-arg]
                                    redis_url=redis_server.url, data_dir=data_dir)
                rt = await build_runtime(settings, worker=False)
                log_path = tmp / "worker.log"
                with open(log_path, "wb") as log_file:
                    proc = subprocess.Popen(
                        [sys.executable, __file__, "--serve-worker", str(counts_path)],
                        env=worker_env(args, data_dir, database_url, redis_server.url, llm.url),
                        stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
                try:
                    deadline = time.monotonic() + 180
                    while b'"worker.ready"' not in log_path.read_bytes():
                        if proc.poll() is not None or time.monotonic() > deadline:
                            raise RuntimeError(f"the worker did not start:\n{log_path.read_text()[-3000:]}")
                        await asyncio.sleep(0.2)
                    warm = await rt.intake.submit(local_question(QUESTIONS[0], "bench-warm-up"))
                    assert warm.interaction_id is not None
                    await wait_answered(rt, [warm.interaction_id], timeout_s=120)

                    idle0 = await read_counts(proc, counts_path)
                    await asyncio.sleep(args.idle_s)
                    idle = delta(await read_counts(proc, counts_path), idle0)

                    before, server0 = await read_counts(proc, counts_path), await commandstats(rt.redis)
                    started = time.perf_counter()
                    gate = asyncio.Semaphore(20)

                    async def ask(i: int) -> Any:
                        async with gate:
                            return await rt.intake.submit(
                                local_question(QUESTIONS[i % len(QUESTIONS)], f"bench-{i}"))

                    submitted = await asyncio.gather(*(ask(i) for i in range(args.questions)))
                    await wait_answered(rt, [s.interaction_id for s in submitted if s.interaction_id], timeout_s=600)
                    wall = time.perf_counter() - started
                    batch = delta(await read_counts(proc, counts_path), before)
                    server = {k: v - server0.get(k, 0) for k, v in (await commandstats(rt.redis)).items()}
                finally:
                    stop(proc)
                    await rt.aclose()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    n = args.questions
    per = {k: round(batch[k] / n, 1) for k in ("commands", "round_trips", "wakeups")}
    idle_rate = {k: round(idle[k] / args.idle_s, 1) for k in ("commands", "round_trips", "wakeups")}
    net = {k: round((batch[k] - idle[k] / args.idle_s * wall) / n, 1) for k in ("commands", "round_trips", "wakeups")}
    server_total = sum(v for k, v in server.items() if k not in ("info", "monitor"))
    print(json.dumps({
        "questions": n, "in_flight": args.in_flight, "wall_s": round(wall, 1),
        "worker_per_answer": per, "worker_per_answer_net_of_idle": net, "worker_idle_per_s": idle_rate,
        "server_commands_per_answer_all_clients": round(server_total / n, 1),
        "load_average": round(os.getloadavg()[0], 1)}))
    print(json.dumps({"worker_commands_by_name_per_answer":
                      {k: round(v / n, 2) for k, v in batch["by_name"].items()}}))
    print(json.dumps({"idle_commands_by_origin_per_s":
                      {k: round(v / args.idle_s, 2) for k, v in list(idle["by_origin"].items())[:args.top]}}))
    print("worker loop callbacks per answer (task steps by coroutine):")
    for name, calls in list(batch["callbacks"].items())[:args.top]:
        print(f"  {calls / n:7.2f}  {name}")
    print("worker commands per answer, by origin:")
    for origin, calls in list(batch["by_origin"].items())[:args.top]:
        print(f"  {calls / n:7.2f}  {origin}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-worker":
        serve_worker(Path(sys.argv[2]))  # arq's Worker.run runs its own event loop
        sys.exit(0)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
