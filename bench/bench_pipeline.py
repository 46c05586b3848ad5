"""Pipeline overhead and one worker's throughput, with a stand-in LLM of fixed latency.

The stand-in is the local Messages API server from the tests, answering every request after ``--llm-latency``
seconds with a cited answer. Needs an index built by bench_index.py (kb "bench", ≥ 20,000 chunks).

For each in-flight level (arq ``max_jobs``) it submits ``3 × level`` questions at once through the real queue
(database → Redis → worker) and prints answers/s, and per answer the pipeline overhead excluding the LLM wait
(retrieve + compose + record + deliver), p50/p95.

    .venv/bin/python bench/bench_pipeline.py --data-dir /tmp/deskmate-bench-20k
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bot.core.types import FINAL_STATUSES

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.handbook_18f import faq_items  # noqa: E402
from bot.core.settings import Settings  # noqa: E402
from bot.local_chat.web import local_question  # noqa: E402
from bot.runtime import build_runtime  # noqa: E402
from feedback.models import Interaction  # noqa: E402
from tests.fakes.anthropic_server import Reply, start_fake_anthropic  # noqa: E402
from tests.fakes.redis_server import start_redis_server  # noqa: E402
from tests.stack import running_worker  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))], 1)


async def wait_all_final(rt: object, ids: list[int], timeout_s: float) -> list[Interaction]:
    """One polling query for all questions (hundreds of concurrent pollers would starve the worker's pool)."""
    from sqlmodel import col, select

    deadline = time.monotonic() + timeout_s
    while True:
        async with rt.db.asession() as session:  # type: ignore[attr-defined]
            rows = list((await session.exec(select(Interaction).where(col(Interaction.id).in_(ids)))).all())
        if all(r.status in FINAL_STATUSES for r in rows) and len(rows) == len(ids):
            return rows
        if time.monotonic() > deadline:
            raise TimeoutError(f"{sum(r.status not in FINAL_STATUSES for r in rows)} questions unanswered")
        await asyncio.sleep(0.1)


async def run_level(base: dict, level: int, llm_latency_s: float, questions: list[str]) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="deskmate-bench-"))
    settings = Settings(_env_file=None, database_url=f"sqlite:///{tmp / 'db.sqlite'}",  # type: ignore[call-arg]
                        worker_max_jobs=level, **base)
    rt = await build_runtime(settings, worker=False)
    try:
        async with running_worker(settings):
            n = level * 3
            started = time.perf_counter()
            gate = asyncio.Semaphore(20)  # as a web process's connection pool would

            async def ask(i: int) -> Any:
                async with gate:
                    return await rt.intake.submit(
                        local_question(questions[i % len(questions)], f"bench-{level}-{i}"))

            submitted = await asyncio.gather(*(ask(i) for i in range(n)))
            rows = await wait_all_final(rt, [s.interaction_id for s in submitted], timeout_s=900)
            wall = time.perf_counter() - started
    finally:
        await rt.aclose()
    llm_ms = llm_latency_s * 1000
    overhead = [r.latency_ms.get("total_before_delivery", 0) + r.latency_ms.get("deliver", 0) - llm_ms for r in rows
                if not r.fallback]
    retrieve = [r.latency_ms.get("retrieve", 0) for r in rows]
    end_to_end = [(r.answered_at - r.created_at).total_seconds() * 1000 for r in rows if r.answered_at]
    return {"in_flight": level, "answers": n, "fallbacks": sum(r.fallback for r in rows),
            "answers_per_s": round(n / wall, 2), "wall_s": round(wall, 1),
            "overhead_ms_p50": pct(overhead, 0.5) if overhead else None,
            "overhead_ms_p95": pct(overhead, 0.95) if overhead else None,
            "retrieve_ms_p50": pct(retrieve, 0.5), "retrieve_ms_p95": pct(retrieve, 0.95),
            "end_to_end_ms_p50": pct(end_to_end, 0.5), "end_to_end_ms_p95": pct(end_to_end, 0.95)}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/deskmate-bench-20k"))
    parser.add_argument("--llm-latency", type=float, default=2.0)
    parser.add_argument("--levels", default="10,50,200")
    parser.add_argument("--kb", default="bench")
    args = parser.parse_args()
    questions = [item["question"] for item in faq_items()]
    with start_redis_server() as redis:
        async with start_fake_anthropic() as llm:
            llm.always(Reply.answer(delay_s=args.llm_latency))
            base = {"data_dir": args.data_dir, "kb_name": args.kb, "redis_url": redis.url,
                    "anthropic_api_key": "sk-bench", "anthropic_base_url": llm.url, "llm_timeout_s": 60,
                    "job_timeout_s": 600, "worker_poll_delay_s": 0.05}
            for level in (int(x) for x in args.levels.split(",")):
                print(json.dumps(await run_level(base, level, args.llm_latency, questions)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
