"""Streaming vs the placeholder-then-update path in Slack: time from the user's message to the first visible answer
text, and to the complete answer, with a stand-in model that takes ``--first-token`` s to its first token and then
writes ``--tokens-per-s`` tokens per second.

Everything real but the internet services: the intake, the queue (SQLite → Redis → arq), one worker answering
``--in-flight`` questions at once, retrieval over the sample knowledge base, the real anthropic SDK reading the
local Messages API fake's SSE stream, slack_sdk calling the local Slack Web API fake (which records when each
call arrived). The two fakes run in a process of their own (as the real services are elsewhere: their CPU is not
ours); times are ``time.monotonic()``, one clock for every process of the machine. Each question is asked in its
own channel thread, as ``--in-flight`` different people would.

- *first visible text*: the streaming path's ``chat.startStream`` (it carries the first words); the old path's
  answer message (``chat.postMessage``: the whole answer at once);
- *complete*: ``chat.stopStream`` (or the ``chat.update`` that replaced the stream) vs that same message;
- *after first token*: first visible text minus the moment the model's first token was due (its request's arrival
  + ``--first-token``) — the target is ≤ 1.5 s for 95 % of answers.

    .venv/bin/python bench/bench_streaming.py                 # 50 in flight, 1 s to first token, 40 tokens/s
    .venv/bin/python bench/bench_streaming.py --in-flight 10 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.core.settings import SAMPLE_KNOWLEDGE_DIR, Settings  # noqa: E402
from bot.core.types import FINAL_STATUSES, Platform, Question  # noqa: E402
from bot.runtime import build_runtime  # noqa: E402
from feedback.models import Interaction  # noqa: E402
from knowledge.config import KnowledgeConfig  # noqa: E402
from knowledge.index import IndexStore  # noqa: E402
from knowledge.ingest import ingest  # noqa: E402
from tests.fakes.anthropic_server import Reply, start_fake_anthropic  # noqa: E402
from tests.fakes.redis_server import start_redis_server  # noqa: E402
from tests.fakes.slack_api import TEAM_ID, start_fake_slack  # noqa: E402
from tests.stack import running_worker  # noqa: E402

import httpx  # noqa: E402

QUESTIONS = ["What is the per diem for meals when I travel?", "How do I connect to the VPN?",
             "How many days of annual leave do I get?", "How do I request time off?",
             "Who approves my travel?", "How do I reset my password?"]
ANSWER_WORDS = 200  # about 5 s at 40 tokens/s


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))], 3)


def stand_in(first_token_s: float, tokens_per_s: float) -> Reply:
    words = " ".join(f"policy{n % 17}" for n in range(ANSWER_WORDS - 10))
    return Reply.answer(segments=[("Here is what the handbook says. " + words + ".", 0),
                                  (" Ask your manager if unsure.", None)],
                        first_token_s=first_token_s, tokens_per_s=tokens_per_s)


async def serve_fakes(first_token_s: float, tokens_per_s: float) -> None:
    """The child process: both fakes, their URLs on stdout, until stdin closes."""
    async with start_fake_anthropic() as llm, start_fake_slack() as slack:
        llm.always(stand_in(first_token_s, tokens_per_s))
        print(json.dumps({"llm": llm.url, "slack": slack.url, "slack_api": slack.api_url}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def wait_delivered(rt: Any, ids: list[int], timeout_s: float) -> list[Interaction]:
    from sqlmodel import col, select

    deadline = time.monotonic() + timeout_s
    while True:
        async with rt.db.asession() as session:
            rows = list((await session.exec(select(Interaction).where(col(Interaction.id).in_(ids)))).all())
        if len(rows) == len(ids) and all(r.status in FINAL_STATUSES and r.delivery_state in ("delivered", "failed")
                                         for r in rows):
            return rows
        if time.monotonic() > deadline:
            raise TimeoutError("answers not delivered in time")
        await asyncio.sleep(0.1)


async def run(mode: str, args: argparse.Namespace, data_dir: Path, redis_url: str) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="deskmate-bench-stream-"))
    child = subprocess.Popen([sys.executable, __file__, "--serve-fakes", "--first-token", str(args.first_token),
                              "--tokens-per-s", str(args.tokens_per_s)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        urls = json.loads(child.stdout.readline())
        return await measure(mode, args, data_dir, redis_url, tmp, urls)
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(timeout=30)


async def measure(mode: str, args: argparse.Namespace, data_dir: Path, redis_url: str, tmp: Path,
                  urls: dict[str, str]) -> dict[str, Any]:
    settings = Settings(_env_file=None, data_dir=data_dir, kb_name="default",  # type: ignore[call-arg]
                        database_url=f"sqlite:///{tmp / 'db.sqlite'}", redis_url=redis_url,
                        anthropic_api_key="sk-bench", anthropic_base_url=urls["llm"], llm_timeout_s=120,
                        slack_bot_token="xoxb-bench", slack_api_url=urls["slack_api"], job_timeout_s=600,
                        worker_max_jobs=args.in_flight, worker_poll_delay_s=0.02)
    rt = await build_runtime(settings, worker=False)
    try:
        async with running_worker(settings) as worker:
            worker.ctx["runtime"].deliverers[Platform.SLACK].streaming = mode == "streaming"
            asked: dict[str, float] = {}
            ids: list[int] = []
            for round_ in range(args.rounds):
                submits = []
                for i in range(args.in_flight):
                    channel = f"CBENCH{round_:02d}{i:03d}"
                    text = f"{QUESTIONS[i % len(QUESTIONS)]} (#{channel})"
                    question = Question(idempotency_key=f"bench:{mode}:{channel}", platform=Platform.SLACK,
                                        workspace=TEAM_ID, channel=channel, thread=f"1700000000.{i:06d}",
                                        user=f"U{i:05d}", text=text, channel_type="channel",
                                        reply_target={"channel": channel, "thread_ts": f"1700000000.{i:06d}",
                                                      "user": f"U{i:05d}"})
                    asked[channel] = time.monotonic()
                    submits.append(rt.intake.submit(question))
                submitted = await asyncio.gather(*submits)
                ids += [s.interaction_id for s in submitted if s.interaction_id is not None]
                await wait_delivered(rt, ids, timeout_s=600)
    finally:
        await rt.aclose()
    async with httpx.AsyncClient() as http:
        calls = (await http.get(urls["slack"] + "/_calls")).json()
        llm_requests = (await http.get(urls["llm"] + "/_requests")).json()
    first, complete, after_token = [], [], []
    requests: dict[str, float] = {}
    for request in llm_requests:
        for channel in asked:
            if f"(#{channel})" in request["question"]:
                requests.setdefault(channel, request["at"])
    for channel, t0 in asked.items():
        mine = [c for c in calls if c["channel"] == channel and c["status"] == 200 and c["ok"]]
        if mode == "streaming":
            shown = [c["at"] for c in mine if c["method"] == "chat.startStream"]
            done = [c["at"] for c in mine if c["method"] in ("chat.stopStream", "chat.update")]
        else:
            shown = done = [c["at"] for c in mine if c["method"] in ("chat.postMessage", "chat.update")]
        if not shown or not done:
            continue
        first.append(shown[0] - t0)
        complete.append(max(done) - t0)
        if channel in requests:
            after_token.append(shown[0] - (requests[channel] + args.first_token))
    within = sum(a <= 1.5 for a in after_token) / len(after_token) if after_token else 0.0
    return {"mode": mode, "in_flight": args.in_flight, "answers": len(first),
            "first_visible_s_p50": pct(first, 0.5), "first_visible_s_p95": pct(first, 0.95),
            "complete_s_p50": pct(complete, 0.5), "complete_s_p95": pct(complete, 0.95),
            "after_first_token_s_p50": pct(after_token, 0.5), "after_first_token_s_p95": pct(after_token, 0.95),
            "share_within_1_5_s": round(within, 3),
            "append_calls": sum(c["method"] == "chat.appendStream" for c in calls),
            "rate_limited": sum(c["status"] == 429 for c in calls)}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--in-flight", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--first-token", type=float, default=1.0)
    parser.add_argument("--tokens-per-s", type=float, default=40.0)
    parser.add_argument("--modes", default="old,streaming")
    parser.add_argument("--data-dir", type=Path, default=None, help="an ingested sample KB (default: ingest one)")
    parser.add_argument("--serve-fakes", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fakes:
        await serve_fakes(args.first_token, args.tokens_per_s)
        return
    data_dir = args.data_dir
    if data_dir is None:
        data_dir = Path(tempfile.mkdtemp(prefix="deskmate-bench-sample-"))
        settings = Settings(_env_file=None, data_dir=data_dir)  # type: ignore[call-arg]
        ingest(IndexStore(KnowledgeConfig.from_settings(settings)), SAMPLE_KNOWLEDGE_DIR, kb="default")
    with start_redis_server() as redis:
        for mode in args.modes.split(","):
            print(json.dumps(await run(mode, args, data_dir, redis.url)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
