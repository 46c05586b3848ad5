"""CPU of the model client per answer: ``bot.llm.generate`` against the stand-in Messages API (issue 16).

Two processes: the stand-in model (the local Messages API server from the tests, in a process of its own, so its
work is not counted) and this one, which asks it ``--answers`` questions with ``--concurrency`` in flight through
the real client code path — ``bot.llm.generate`` with the ``AsyncAnthropic`` client that
:class:`bot.answering.AnswerEngine` builds (``--transport engine``), or one on the SDK's default httpx transport
(``--transport httpx``) — in three modes:

- ``sink``: streamed into a sink, as the worker streams a live answer (a sink that keeps the text, so what is
  measured is the client's own work);
- ``stream``: streamed, no sink (the worker's non-live answers);
- ``json``: one non-streamed ``messages.create`` (for comparison).

For each mode it prints one JSON line: CPU ms per answer (``time.process_time`` of this process: user + system,
all threads), answers/s, and a check that every answer had the expected text, sources and usage. The answer is
about 150 words in one-word ``text_delta`` events with 3 cited blocks (``citations_delta``) and a final
``message_delta`` with usage, as the real API streams it.

    .venv/bin/python bench/bench_llm_client.py --answers 200 --concurrency 50 --llm-latency 0.5 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from anthropic import AsyncAnthropic  # noqa: E402

from bench.procs import end_child  # noqa: E402
from bot.answering import AnswerEngine  # noqa: E402
from bot.core.settings import Settings  # noqa: E402
from bot.llm import GenerationConfig, LLMResult, generate  # noqa: E402
from knowledge.passage import Passage  # noqa: E402
from tests.fakes.anthropic_server import Reply, start_fake_anthropic  # noqa: E402

QUESTION = "How do I request annual leave, and how many days do I get?"
CONFIG = GenerationConfig(model="claude-sonnet-5-5", max_tokens=1024, timeout_s=60.0)


def passages() -> list[Passage]:
    """Three handbook-like passages whose first sentences (what the stand-in quotes) are ~40 words each."""
    sentence = ("Full-time employees receive twenty-five days of paid annual leave per calendar year, which they "
                "request in Workday at least two weeks ahead, and which their manager approves or declines within "
                "three working days after checking the team calendar and the coverage of the on-call rota.")
    out = []
    for n, (title, heading) in enumerate([("Leave policy", "Annual leave"), ("Leave policy", "Requesting time off"),
                                          ("People handbook", "Holidays")]):
        slug = title.lower().replace(" ", "-")
        out.append(Passage(chunk_id=f"{slug}-{n}", doc_id=slug, kb="bench", knowledge_set="handbook", title=title,
                           location=f"https://intranet.example.com/{slug}#{n}", heading=heading,
                           text=f"{sentence} Paragraph {n} goes on.\n\n" + "More detail. " * 40, score=0.8 - n / 10,
                           index_version=1))
    return out


async def serve_llm(latency_s: float) -> None:
    """The child process: the stand-in model, its URL on stdout, until stdin closes."""
    async with start_fake_anthropic() as llm:
        llm.always(Reply.answer(cite=[0, 1, 2], delay_s=latency_s))
        print(json.dumps({"llm": llm.url}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


class KeepingSink:
    """A live answer's sink that only keeps the text (the worker's also posts it: not the client's work)."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    async def writing(self) -> None:
        return None

    async def text(self, delta: str) -> None:
        self.parts.append(delta)


async def run_mode(mode: str, llm_url: str, n: int, concurrency: int, transport: str) -> dict[str, Any]:
    settings = Settings(_env_file=None, anthropic_api_key="sk-bench", anthropic_base_url=llm_url,  # type: ignore[call-arg]
                        llm_max_retries=2, llm_timeout_s=60.0)
    given_client = (AsyncAnthropic(api_key="sk-bench", base_url=llm_url, max_retries=2, timeout=60.0)
                    if transport == "httpx" else None)
    engine = AnswerEngine(settings, None, given_client)
    client = engine.client
    assert client is not None
    given = passages()
    gate = asyncio.Semaphore(concurrency)

    async def one() -> tuple[LLMResult, str | None]:
        async with gate:
            sink = KeepingSink() if mode == "sink" else None
            result = await generate(client, QUESTION, [], given, CONFIG, stream=mode != "json", sink=sink)
            return result, ("".join(sink.parts) if sink is not None else None)

    try:
        # warm-up: the connection pool, the SDK's lazy imports and first-call caches
        await asyncio.gather(*(one() for _ in range(min(concurrency, n))))
        cpu0, wall0 = time.process_time(), time.perf_counter()
        results = await asyncio.gather(*(one() for _ in range(n)))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        await engine.close()
    first = results[0][0]
    ok = all(r == first and (live is None or live == r.text) for r, live in results)
    ok = ok and len(first.sources) == 3 and first.usage.output_tokens > 0 and first.stop_reason == "end_turn"
    return {"mode": mode, "transport": transport, "answers": n, "concurrency": concurrency,
            "cpu_ms_per_answer": round(cpu * 1000 / n, 2), "answers_per_s": round(n / wall, 1),
            "answer_words": len(first.text.split()), "all_answers_correct": ok}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--answers", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--llm-latency", type=float, default=0.5, help="the stand-in's delay before it answers")
    parser.add_argument("--rounds", type=int, default=3, help="per mode; the median is printed")
    parser.add_argument("--modes", default="sink,stream,json")
    parser.add_argument("--transport", choices=["engine", "httpx"], default="engine",
                        help="engine: the client AnswerEngine builds; httpx: an AsyncAnthropic with the SDK's default "
                             "(httpx) transport, passed to it")
    parser.add_argument("--serve-llm", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_llm:
        await serve_llm(args.llm_latency)
        return
    child = subprocess.Popen([sys.executable, __file__, "--serve-llm", "--llm-latency", str(args.llm_latency)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        llm_url = json.loads(child.stdout.readline())["llm"]
        for mode in args.modes.split(","):
            runs = [await run_mode(mode, llm_url, args.answers, args.concurrency, args.transport) for _ in range(args.rounds)]
            line = dict(runs[0])
            for key in ("cpu_ms_per_answer", "answers_per_s"):
                line[key] = statistics.median(r[key] for r in runs)
                line[key + "_runs"] = [r[key] for r in runs]
            line["all_answers_correct"] = all(r["all_answers_correct"] for r in runs)
            print(json.dumps(line), flush=True)
    finally:
        end_child(child)


if __name__ == "__main__":
    asyncio.run(main())
