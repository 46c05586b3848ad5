"""One worker's answers/s and its pipeline overhead, with a stand-in LLM of fixed latency.

Three processes, as deployed: this one (the load: it records and enqueues questions the way the web process does,
and reads the answers back), one ``deskmate worker`` (the real queue: SQLite → Redis → arq), and the stand-in
model (the local Messages API server from the tests, in a process of its own, answering every request after
``--llm-latency`` seconds with a cited answer). Needs an index built by bench_index.py (kb "bench", ≥ 20,000
chunks).

For each in-flight level (the worker's ``DESKMATE_WORKER_MAX_JOBS``; with ``--ahead SHARE``, the answers the model
writes at once, ``DESKMATE_LLM_MAX_CONCURRENT``, while the worker holds ``level × (1 + SHARE)``) it submits ``3 × level`` questions
(``--rounds``) at once — or, with ``--steady SHARE``, one by one at random (Poisson) moments, on average SHARE × the
level's limit per second, as people ask — and prints, on one JSON line:

- what starting the worker cost (``start``): seconds until it said it was ready, and the CPU seconds and RSS of the
  worker and of its search process by then (the worker is started with the installed ``deskmate`` script, as the
  Procfile does);
- answers/s, and the share of the physical limit ``level / llm_latency`` it reached;
- the worker's CPU time per answer (user + system, from /proc; with its search process, also shown alone) and
  RSS (the worker's and its search process's), and the other processes' CPU per answer: the load (this process),
  the stand-in model and Redis;
- the pipeline overhead per answer = the answer job's duration (arq's start → finish: everything the worker did
  for it, recording included) minus the model's wait (``--llm-latency`` for an answer that called the model; 0
  for one that never did: "not found", maintenance) — p50/p95, and per stage (``start``: claim + switches/release/policy + the
  thread's history; ``query``; ``retrieve``; ``compose`` (generation minus the model's wait); ``finish``: record,
  trace, deliver, after-answer hooks), and how long jobs waited in the queue for a free slot or the next poll;
  with ``--ahead``, how long answers with their passages waited for another's model call to end (``llm_slot``:
  a queue for the model, like ``queued``, not counted in the overhead).

``--timeline FILE`` appends one line per answer (recorded, enqueued, started, finished, its stages).

    .venv/bin/python bench/bench_pipeline.py --data-dir /work/perfdata --kb bench --llm-latency 2 --levels 10,50,200
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from arq.jobs import Job  # noqa: E402

from bench.handbook_18f import faq_items  # noqa: E402
from bench.procs import end_child, stop  # noqa: E402
from bot.core.log import configure_logging  # noqa: E402
from bot.core.settings import Settings  # noqa: E402
from bot.core.types import FINAL_STATUSES  # noqa: E402
from bot.local_chat.web import local_question  # noqa: E402
from bot.queue import job_id  # noqa: E402
from bot.runtime import build_runtime  # noqa: E402
from feedback.models import Interaction  # noqa: E402
from tests.fakes.anthropic_server import Reply, start_fake_anthropic  # noqa: E402
from tests.fakes.redis_server import free_port, start_redis_server  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))], 1)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (/proc/<pid>/stat, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children(pid: int) -> list[int]:
    """A process's living child processes (the worker's search process)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found.update(int(c) for c in (task / "children").read_text().split())
    return sorted(found)


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident set size of a process in MB."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def started_cost(worker: int, ready_s: float) -> dict[str, Any]:
    """What starting the worker cost, when it said it was ready: seconds to ready, and CPU seconds and RSS of the
    worker and of its search process (its child processes)."""
    kids = children(worker)
    return {"ready_s": round(ready_s, 1), "worker_cpu_s": round(cpu_s(worker), 1),
            "search_process_cpu_s": round(sum(cpu_s(pid) for pid in kids), 1),
            "worker_rss_mb": round(rss_mb(worker)[0]), "search_process_rss_mb": round(sum(rss_mb(pid)[0] for pid in kids))}


async def serve_llm(latency_s: float) -> None:
    """The child process: the stand-in model, its URL on stdout, until stdin closes."""
    async with start_fake_anthropic() as llm:
        llm.always(Reply.answer(delay_s=latency_s))
        print(json.dumps({"llm": llm.url}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def wait_all_final(rt: Any, ids: list[int], timeout_s: float) -> list[Interaction]:
    """Wait until every question is answered: one counting query per poll (hundreds of concurrent pollers, or
    every row loaded as an object ten times a second, would cost this process more CPU than the web process's
    own intake — and it shares the machine with the worker it measures), then the rows once."""
    from sqlalchemy import func
    from sqlmodel import col, select

    deadline = time.monotonic() + timeout_s
    done = select(func.count()).select_from(Interaction).where(
        col(Interaction.id).in_(ids), col(Interaction.status).in_(FINAL_STATUSES))
    while True:
        async with rt.db.asession() as session:
            finished = (await session.exec(done)).one()
        if finished >= len(ids):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(ids) - finished} questions unanswered")
        await asyncio.sleep(0.1)
    async with rt.db.asession() as session:
        return list((await session.exec(select(Interaction).where(col(Interaction.id).in_(ids)))).all())


def worker_env(args: argparse.Namespace, level: int, database_url: str, redis_url: str, llm_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESKMATE_")}
    env.update({
        "PYTHONUNBUFFERED": "1", "ANONYMIZED_TELEMETRY": "False",
        "DESKMATE_ENVIRONMENT": "production",  # JSON logs, as deployed
        "DESKMATE_USER_HASH_SALT": secrets.token_hex(32),
        "DESKMATE_DATA_DIR": str(args.data_dir), "DESKMATE_KB_NAME": args.kb,
        "DESKMATE_DATABASE_URL": database_url, "DESKMATE_REDIS_URL": redis_url,
        "DESKMATE_ANTHROPIC_API_KEY": "sk-bench", "DESKMATE_ANTHROPIC_BASE_URL": llm_url,
        "DESKMATE_LLM_TIMEOUT_S": "60", "DESKMATE_JOB_TIMEOUT_S": "600", "DESKMATE_WORKER_POLL_DELAY_S": "0.05",
        # `level` answers with the model at once; with --ahead, more held (searching while they wait for a call)
        "DESKMATE_WORKER_MAX_JOBS": str(level + math.ceil(args.ahead * level)),
        "DESKMATE_LLM_MAX_CONCURRENT": str(level if args.ahead else 0),
        "DESKMATE_WORKER_METRICS_PORT": str(free_port()),
        "DESKMATE_SOURCES_SCHEDULER": "false",
    })
    if args.search_processes is not None:
        env["DESKMATE_SEARCH_PROCESSES"] = str(args.search_processes)
    if os.environ.get("DESKMATE_EMBEDDING_MAX_TOKENS"):  # as the index was built
        env["DESKMATE_EMBEDDING_MAX_TOKENS"] = os.environ["DESKMATE_EMBEDDING_MAX_TOKENS"]
    return env


@contextlib.asynccontextmanager
async def worker_process(env: dict[str, str], log_path: Path) -> Any:
    deskmate = Path(sys.executable).parent / "deskmate"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([str(deskmate if deskmate.exists() else shutil.which("deskmate")), "worker"], env=env,
                                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while b'"worker.ready"' not in log_path.read_bytes():
            if proc.poll() is not None:
                raise RuntimeError(f"the worker exited:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError("the worker did not start within 180 s")
            await asyncio.sleep(0.2)
        yield proc
    finally:
        stop(proc)


async def run_level(args: argparse.Namespace, level: int, redis_url: str, llm_url: str,
                    questions: list[str], others: dict[str, int]) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="deskmate-bench-"))
    database_url = f"sqlite:///{tmp / 'db.sqlite'}"
    settings = Settings(_env_file=None, database_url=database_url, redis_url=redis_url,  # type: ignore[call-arg]
                        data_dir=args.data_dir, kb_name=args.kb, log_level="WARNING")  # not a line per question
    configure_logging(settings)
    rt = await build_runtime(settings, worker=False)
    await rt.redis.flushdb()
    try:
        launched = time.perf_counter()
        async with worker_process(worker_env(args, level, database_url, redis_url, llm_url),
                                  tmp / "worker.log") as proc:
            start = started_cost(proc.pid, time.perf_counter() - launched)
            # one question first, not measured: the worker's first search loads what it loads lazily
            warm = await rt.intake.submit(local_question(questions[0], f"bench-{level}-warm-up"))
            assert warm.interaction_id is not None, "the warm-up question was not recorded"
            await wait_all_final(rt, [warm.interaction_id], timeout_s=300)
            n = level * args.rounds
            family = [proc.pid, *children(proc.pid)]  # the worker and its search process
            cpu0 = {pid: cpu_s(pid) for pid in family}
            others0 = {name: cpu_s(pid) for name, pid in others.items()}
            started, t0 = time.perf_counter(), time.time()
            gate = asyncio.Semaphore(20)  # as a web process's connection pool would

            async def ask(i: int) -> Any:
                async with gate:
                    return await rt.intake.submit(
                        local_question(questions[i % len(questions)], f"bench-{level}-{i}"))

            if args.steady is None:  # every question at once: bursts the size of the level
                submitted = await asyncio.gather(*(ask(i) for i in range(n)))
            else:  # one at a time, at random (Poisson) moments, on average `steady` × the level's limit per second
                rate, gaps = args.steady * level / args.llm_latency, random.Random(level)
                asks, due = [], time.perf_counter()
                for i in range(n):
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                    asks.append(asyncio.create_task(ask(i)))
                    due += gaps.expovariate(rate)
                submitted = list(await asyncio.gather(*asks))
            rows = await wait_all_final(rt, [s.interaction_id for s in submitted], timeout_s=900)
            wall = time.perf_counter() - started
            await asyncio.sleep(0.5)  # the last jobs' results and after-answer hooks
            cpu_by = {pid: cpu_s(pid) - cpu0[pid] for pid in family}
            cpu = sum(cpu_by.values())
            others_cpu = {name: cpu_s(pid) - others0[name] for name, pid in others.items()}
            rss, peak = (sum(x) for x in zip(*(rss_mb(pid) for pid in family)))
            jobs: dict[int | None, float] = {}
            timeline: list[dict[str, Any]] = []
            for row in rows:
                info = await Job(job_id(row.idempotency_key), rt.redis).result_info()
                if info is not None:
                    jobs[row.id] = (info.finish_time - info.start_time).total_seconds() * 1000
                    timeline.append({"id": row.id, "created": row.created_at.replace(tzinfo=row.created_at.tzinfo or timezone.utc).timestamp(),
                                     "enqueued": info.enqueue_time.timestamp(), "started": info.start_time.timestamp(),
                                     "finished": info.finish_time.timestamp(), "stages_ms": row.latency_ms})
    finally:
        await rt.aclose()
    queued = [1000 * (t["started"] - t["enqueued"]) for t in timeline]  # waiting for a free slot (max_jobs) or a poll
    stages: dict[str, list[float]] = {s: [] for s in ("start", "query", "retrieve", "compose", "finish")}
    overhead, llm, slot_wait = [], [], []
    for r in rows:
        lat = dict(r.latency_ms or {})
        # the stand-in answers after exactly --llm-latency: that is the wait of an answer that called it (the
        # "llm" stage, the whole model call, also holds the SDK's and the stream's own work)
        model_wait = args.llm_latency * 1000 if ("llm" in lat or (r.model and not r.fallback)) else 0.0
        if "llm" in lat:
            llm.append(float(lat["llm"]))
        job_ms = jobs.get(r.id)
        if job_ms is None:
            continue
        # with --ahead, an answer that has its passages waits for another's model call to end: a queue for the
        # model, reported on its own ("llm_slot"), like the wait for a job slot ("queued")
        waited = float(lat.get("llm_slot", 0.0))
        slot_wait.append(waited)
        overhead.append(job_ms - model_wait - waited)
        before = float(lat.get("total_before_delivery", 0.0))
        for stage in ("start", "query", "retrieve"):
            if stage in lat:
                stages[stage].append(float(lat[stage]))
        stages["compose"].append(max(0.0, float(lat.get("generate", 0.0)) - model_wait - waited))
        stages["finish"].append(max(0.0, job_ms - before))
    if args.timeline is not None:  # one line per answer: when it was recorded, enqueued, started, finished
        with open(args.timeline, "a") as out:
            out.writelines(json.dumps({"in_flight": level, "t0": t0, **t}) + "\n" for t in timeline)
    return {"start": start, "in_flight": level, "arrivals": "burst" if args.steady is None else f"steady {args.steady:g}", "answers": n, "not_found": sum(r.status == "not_found" for r in rows),
            "fallbacks": sum(r.fallback for r in rows), "wall_s": round(wall, 1),
            "answers_per_s": round(n / wall, 2),
            "share_of_limit": round((n / wall) / (level / args.llm_latency), 3),
            "worker_cpu_ms_per_answer": round(cpu * 1000 / n, 1),
            "search_process_cpu_ms_per_answer": round(sum(c for pid, c in cpu_by.items() if pid != proc.pid) * 1000 / n, 1),
            "other_cpu_ms_per_answer": {name: round(c * 1000 / n, 1) for name, c in others_cpu.items()},
            "worker_rss_mb": round(rss), "worker_peak_rss_mb": round(peak),
            "overhead_ms_p50": pct(overhead, 0.5), "overhead_ms_p95": pct(overhead, 0.95),
            "queued_ms_p50_p95": [pct(queued, 0.5), pct(queued, 0.95)],
            "llm_slot_wait_ms_p50_p95": [pct(slot_wait, 0.5), pct(slot_wait, 0.95)],
            "stages_ms_p50_p95": {s: [pct(v, 0.5), pct(v, 0.95)] for s, v in stages.items() if v},
            "llm_call_ms_p50_p95": [pct(llm, 0.5), pct(llm, 0.95)],
            "end_to_end_ms_p50": pct([(r.answered_at - r.created_at).total_seconds() * 1000
                                      for r in rows if r.answered_at], 0.5),
            "end_to_end_ms_p95": pct([(r.answered_at - r.created_at).total_seconds() * 1000
                                      for r in rows if r.answered_at], 0.95),
            "load_average": os.getloadavg()[0]}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/deskmate-bench-20k"))
    parser.add_argument("--llm-latency", type=float, default=2.0)
    parser.add_argument("--levels", default="10,50,200")
    parser.add_argument("--kb", default="bench")
    parser.add_argument("--search-processes", type=int, default=None,
                        help="DESKMATE_SEARCH_PROCESSES for the worker (default: the setting's default; 0 = threads)")
    parser.add_argument("--rounds", type=int, default=3, help="questions per level = level × rounds")
    parser.add_argument("--ahead", type=float, default=0.0, metavar="SHARE",
                        help="the worker holds level × (1 + SHARE) answers, `level` of them with the model at once "
                             "(DESKMATE_LLM_MAX_CONCURRENT): the others search while they wait for a call to end")
    parser.add_argument("--steady", type=float, default=None, metavar="SHARE",
                        help="questions arrive one by one at random moments, SHARE × the level's limit per second on "
                             "average (e.g. 0.8), instead of all at once")
    parser.add_argument("--timeline", type=Path, default=None,
                        help="append one JSON line per answer (recorded, enqueued, started, finished, stages) to it")
    parser.add_argument("--serve-llm", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_llm:
        await serve_llm(args.llm_latency)
        return
    questions = [item["question"] for item in faq_items()]
    logging.disable(logging.INFO)  # this process's own intake lines
    child = subprocess.Popen([sys.executable, __file__, "--serve-llm", "--llm-latency", str(args.llm_latency)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        llm_url = json.loads(child.stdout.readline())["llm"]
        with start_redis_server() as redis:
            for level in (int(x) for x in args.levels.split(",")):
                others = {"load": os.getpid(), "model": child.pid, "redis": redis.pid or 0}
                print(json.dumps(await run_level(args, level, redis.url, llm_url, questions, others)), flush=True)
    finally:
        end_child(child)


if __name__ == "__main__":
    asyncio.run(main())
