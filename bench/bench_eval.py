"""The eval report on the bundled sample golden set and on the 18F (TTS) handbook FAQ, through the real pipeline.

    .venv/bin/python bench/bench_eval.py                 # both sets; writes data/bench/eval/*.json and *.html
    .venv/bin/python bench/bench_eval.py --only sample   # or --only 18f

Each knowledge base is ingested once into its own data dir under ``data/bench/eval`` with ``deskmate ingest``
(the 18F handbook as ``--kb 18f``; ~1,500 chunks take a few minutes to embed on 2 cores; later runs find the
documents unchanged and embed nothing). Then the active release (``initial``: k=6, hybrid, min score 0.3)
runs over each golden set with ``eval_concurrency`` 1, so latency is per question, not queueing. Without
``DESKMATE_ANTHROPIC_API_KEY`` the answers are the extractive fallback and there is no judge: the figures say
so. A second release ``strict`` (min score 0.4: "not found" sooner) is compared with it on the sample set, and a
release that retrieves nothing (k=0) is put through the quality gate, which must refuse it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.handbook_18f import MARKDOWN_DIR, faq_items  # noqa: E402
from bot.answerer import evaluation_answerer  # noqa: E402
from bot.core.settings import SAMPLE_KNOWLEDGE_DIR, Settings  # noqa: E402
from feedback.evals.metrics import METRICS  # noqa: E402
from feedback.evals.report import fmt, print_comparison, print_run, render_html  # noqa: E402
from feedback.evals.runner import EvalResult, compare, run_eval  # noqa: E402
from feedback.golden import SAMPLE_GOLDEN  # noqa: E402

OUT = ROOT / "data" / "bench" / "eval"
console = Console(width=130)


def settings_for(name: str, kb: str) -> Settings:
    data_dir = OUT / name
    # the key, if any, comes from the environment; everything else is this bench's own
    return Settings(_env_file=None, data_dir=data_dir, kb_name=kb, eval_concurrency=1,  # type: ignore[call-arg]
                    database_url=f"sqlite:///{data_dir / 'deskmate.db'}",
                    anthropic_api_key=os.environ.get("DESKMATE_ANTHROPIC_API_KEY"), log_level="WARNING")


def ingest(settings: Settings, folder: Path) -> float:
    """`deskmate ingest FOLDER --kb KB` into the bench's data dir (incremental: a re-run embeds nothing)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESKMATE_")}
    env.update(DESKMATE_DATA_DIR=str(settings.data_dir), DESKMATE_DATABASE_URL=settings.database_url or "",
               DESKMATE_LOG_LEVEL="WARNING")
    started = time.perf_counter()
    subprocess.run([str(ROOT / ".venv" / "bin" / "deskmate"), "ingest", str(folder), "--kb", settings.kb_name],
                   check=True, env=env, cwd=ROOT)
    return time.perf_counter() - started


def figures_table(columns: list[tuple[str, EvalResult]]) -> str:
    """A Markdown table: one row per metric, one column per (set, release)."""
    lines = ["| metric | " + " | ".join(label for label, _ in columns) + " |",
             "|---|" + "---:|" * len(columns),
             "| items (answerable / unanswerable) | " + " | ".join(
                 f"{r.summary['n']} ({r.summary['n_answerable']} / {r.summary['n_unanswerable']})" for _, r in columns) + " |"]
    for m in METRICS:
        if m.key == "regression_repeats":
            continue
        lines.append(f"| {m.label} | " + " | ".join(fmt(m.key, r.summary.get(m.key)) for _, r in columns) + " |")
    return "\n".join(lines)


def save(name: str, results: list[EvalResult]) -> None:
    (OUT / f"{name}.json").write_text(json.dumps({"runs": [r.to_dict() for r in results],
                                                  **({"comparison": compare(*results)} if len(results) == 2 else {})},
                                                 indent=1, default=str), encoding="utf-8")
    (OUT / f"{name}.html").write_text(render_html(results), encoding="utf-8")
    console.print(f"[dim]wrote {OUT / name}.json and .html[/dim]")


async def bench_sample() -> list[tuple[str, EvalResult]]:
    from feedback.db import get_database
    from feedback.gate import evaluate_gate
    from playbooks.releases import create_release
    from feedback.releases import active_release, get_release

    settings = settings_for("sample", "default")
    seconds = ingest(settings, SAMPLE_KNOWLEDGE_DIR)
    console.print(f"sample knowledge base ingested/checked in {seconds:.1f} s")
    db = get_database(settings.database_url_resolved())
    db.migrate()
    async with db.asession() as session:
        await active_release(session, settings)
        for name, changes in (("strict", {"min_score": 0.4}), ("blind", {"retrieval_k": 0})):
            if await get_release(session, name) is None:
                await create_release(session, settings, name, actor="bench", base="initial", **changes)
    async with evaluation_answerer(settings) as answerer:
        initial, strict = await run_eval(answerer, settings, SAMPLE_GOLDEN, ["initial", "strict"], db=db)
        print_run(console, initial)
        print_comparison(console, initial, strict)
        save("sample", [initial])
        save("sample-initial-vs-strict", [initial, strict])
        gate = await evaluate_gate(answerer, settings, "blind", active="initial", db=db)
    console.print(f"[bold]Gate on 'blind' (k=0):[/bold] {'passed' if gate.ok else 'refused'} — {gate.message}")
    await db.aclose()
    return [("sample, `initial`", initial), ("sample, `strict` (min score 0.4)", strict)]


async def bench_18f() -> list[tuple[str, EvalResult]]:
    from feedback.golden import parse_golden

    settings = settings_for("18f", "18f")
    seconds = ingest(settings, MARKDOWN_DIR)
    console.print(f"18F handbook ingested/checked in {seconds:.1f} s")
    golden = OUT / "18f" / "faq-18f.golden.jsonl"
    golden.write_text("".join(json.dumps(i) + "\n" for i in faq_items()), encoding="utf-8")
    parse_golden(golden.read_text(encoding="utf-8"), source=str(golden))  # valid as a golden set
    async with evaluation_answerer(settings) as answerer:
        [result] = await run_eval(answerer, settings, golden, [None])
    print_run(console, result)
    save("18f", [result])
    from feedback.db import get_database

    await get_database(settings.database_url_resolved()).aclose()
    return [("18F FAQ, `initial`", result)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("sample", "18f"))
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    import logging

    from bot.core.log import configure_logging

    configure_logging(settings_for("sample", "default"))
    logging.getLogger().setLevel(logging.WARNING)
    columns: list[tuple[str, EvalResult]] = []
    if args.only in (None, "sample"):
        columns += asyncio.run(bench_sample())
    if args.only in (None, "18f"):
        columns += asyncio.run(bench_18f())
    mode = "Claude + judge" if os.environ.get("DESKMATE_ANTHROPIC_API_KEY") else "no API key: extractive fallback, no judge"
    print(f"\nFigures ({mode}):\n")
    print(figures_table(columns))

if __name__ == "__main__":
    main()
