"""Learned answers in the index: what an approval costs, compared with rebuilding the knowledge base.

    .venv/bin/python bench/bench_learned.py                 # the bundled sample handbook
    .venv/bin/python bench/bench_learned.py --docs ../shared/corpora/…/markdown --answers 20

Ingests the folder into a fresh data dir, then times: one approved answer added by ``refresh_learned`` (what
the worker runs after a review decision), the same with ``--answers`` answers at once, an edit of one, an
unchanged refresh, and a full re-ingest of the folder with the answers present (nothing to embed: their vectors
are kept). Prints seconds and the chunks embedded for each; one machine, one run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bot.core.settings import SAMPLE_KNOWLEDGE_DIR, Settings  # noqa: E402
from knowledge.config import KnowledgeConfig  # noqa: E402
from knowledge.index import IndexStore  # noqa: E402
from knowledge.ingest import ingest  # noqa: E402
from knowledge.learned import learned_dir  # noqa: E402
from knowledge.learned_index import refresh_learned  # noqa: E402


def answer(folder: Path, n: int, extra: str = "") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"question-{n}.md").write_text(
        f"---\ntitle: Answered by Workplace Support on 2 Dec 2026\nvisibility: public\nknowledge_set: learned\n"
        f"review_by: '2099-01-01T00:00:00+00:00'\n---\n\n# How do I get parking permit number {n}?\n\n"
        f"Parking permit {n} is issued by Facilities: fill in the form on the intranet, collect the sticker at "
        f"reception two days later.{extra}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=Path, default=SAMPLE_KNOWLEDGE_DIR)
    parser.add_argument("--answers", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(_env_file=None, data_dir=Path(tmp))  # type: ignore[call-arg]
        store = IndexStore(KnowledgeConfig.from_settings(settings))
        started = time.perf_counter()
        base = ingest(store, args.docs, kb="default")
        rows = [("first ingest", time.perf_counter() - started, base.chunks_embedded, base.chunks_total)]
        folder = learned_dir(store.config, "default")

        def timed(label: str) -> None:
            started = time.perf_counter()
            outcome = refresh_learned(store, "default")
            latest = store.manifest("default").latest
            rows.append((label, time.perf_counter() - started, int(outcome["chunks_embedded"]),
                         int(latest["chunk_count"]) if latest else 0))

        answer(folder, 0)
        timed("refresh: 1 answer approved")
        for n in range(1, args.answers + 1):
            answer(folder, n)
        timed(f"refresh: {args.answers} answers approved at once")
        answer(folder, 0, " Visitors get a day pass.")
        timed("refresh: 1 answer edited")
        timed("refresh: nothing changed")
        started = time.perf_counter()
        again = ingest(store, args.docs, kb="default")
        rows.append(("full re-ingest with the answers", time.perf_counter() - started, again.chunks_embedded,
                     again.chunks_total))
    print(f"{'step':<40} {'seconds':>8} {'embedded':>9} {'chunks':>7}")
    for label, seconds, embedded, total in rows:
        print(f"{label:<40} {seconds:>8.2f} {embedded:>9} {total:>7}")


if __name__ == "__main__":
    main()
