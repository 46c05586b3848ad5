"""Ingestion throughput and retrieval latency at ≥ 20,000 chunks.

The corpus is the 18F handbook (read in place from ../shared) written out N times with a per-copy edition line
in every section, so no copy is a duplicate of another and every chunk is embedded. Prints documents/s,
chunks/s, peak RSS, and retrieval latency p50/p95 for hybrid, dense and BM25 over the FAQ and paraphrased
questions. The built index is kept (``--data-dir``) for bench_pipeline.py.

    .venv/bin/python bench/bench_index.py --copies 14 --data-dir /tmp/deskmate-bench-20k
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.handbook_18f import MARKDOWN_DIR, faq_items  # noqa: E402
from bot.core.settings import Settings  # noqa: E402
from knowledge.config import KnowledgeConfig  # noqa: E402
from knowledge.embedding import Embedder, embed_queries  # noqa: E402
from knowledge.index import IndexStore  # noqa: E402
from knowledge.ingest import ingest  # noqa: E402
from knowledge.retrieval import Retriever  # noqa: E402

CITIES = ["Lisbon", "Toronto", "Denver", "Austin", "Chicago", "Boston", "Seattle", "Atlanta", "Phoenix", "Miami",
          "Portland", "Dallas", "Detroit", "Raleigh", "Omaha", "Tucson", "Fresno", "Tulsa", "Boise", "Reno"]


def build_corpus(target: Path, copies: int) -> int:
    if target.exists():
        shutil.rmtree(target)
    files = 0
    for i in range(copies):
        city = CITIES[i % len(CITIES)]
        for src in MARKDOWN_DIR.rglob("*.md"):
            rel = src.relative_to(MARKDOWN_DIR)
            dst = target / f"edition-{i:02d}" / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            text = src.read_text(encoding="utf-8", errors="replace")
            lines = [ln + f"\n\nThis section applies to the {city} office (edition {i})." if ln.startswith("#") else ln
                     for ln in text.splitlines()]
            dst.write_text("\n".join(lines) + f"\n\nEdition {i} for {city}.\n", encoding="utf-8")
            files += 1
    return files


EDITION_LINE = re.compile(r"(This section applies to the \w+ office \(edition \d+\)\.|Edition \d+ for \w+\.)")


class SharedVectors:
    """An embedder that embeds each text once *up to its edition lines* (``--shared-vectors``): a chunk of
    edition N gets the vector of the same chunk of the first edition that had it. The chunks, their texts and
    the BM25 index stay those of every edition; only the model time is saved (the editions' lines have the same
    word count, so the chunks fall alike). For timing and memory at ≥ 20,000 chunks when a full embedding
    (~20 min on an idle 2-core machine, well over an hour on a busy one) cannot be afforded; the dense
    rankings then hold ties between editions, so quality figures come from the real question sets, not this
    index."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self._cache: dict[str, npt.NDArray[np.float32]] = {}

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        keys = [EDITION_LINE.sub("", t) for t in texts]
        todo = sorted({k for k in keys if k not in self._cache})
        if todo:
            for key, vector in zip(todo, self.inner.embed(todo)):
                self._cache[key] = np.asarray(vector, dtype=np.float32)
        return np.stack([self._cache[k] for k in keys]) if keys else np.zeros((0, self.dim), dtype=np.float32)

    def embed_query(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        return np.asarray(embed_queries(self.inner, texts), dtype=np.float32)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=14)
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/deskmate-bench-20k"))
    parser.add_argument("--reuse", action="store_true", help="skip ingestion if the index exists")
    parser.add_argument("--shared-vectors", action="store_true",
                        help="embed each chunk once across editions (see SharedVectors)")
    args = parser.parse_args()

    settings = Settings(_env_file=None, data_dir=args.data_dir)  # type: ignore[call-arg]
    store = IndexStore(KnowledgeConfig.from_settings(settings))
    if args.shared_vectors:
        crosslingual = store.crosslingual_embedder
        store = IndexStore(store.config, SharedVectors(store.embedder),
                           SharedVectors(crosslingual) if crosslingual is not None else None)
    if not (args.reuse and store.latest_version("bench") is not None):
        if args.data_dir.exists():
            shutil.rmtree(args.data_dir)
        corpus = args.data_dir / "corpus"
        files = build_corpus(corpus, args.copies)
        print(f"corpus: {files} files in {corpus}")
        started = time.perf_counter()
        report = ingest(store, corpus, kb="bench")
        seconds = time.perf_counter() - started
        docs = len(report.ingested)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"documents": docs, "chunks": report.chunks_total, "seconds": round(seconds, 1),
                          "documents_per_s": round(docs / seconds, 1),
                          "chunks_per_s": round(report.chunks_total / seconds, 1),
                          "skipped": len(report.skipped), "peak_rss_mb": round(peak_mb)}))

        started = time.perf_counter()
        again = ingest(store, corpus, kb="bench")
        print(json.dumps({"reingest_unchanged_seconds": round(time.perf_counter() - started, 1),
                          "created_version": again.created_version}))

    retriever = Retriever(store)
    questions = [item["question"] for item in faq_items()]
    para = Path(__file__).resolve().parent / "data" / "18f-paraphrased.jsonl"
    questions += [json.loads(line)["question"] for line in para.read_text().splitlines() if line.strip()]
    retriever.search("warm up", kb="bench", k=6)
    chunks = len(store.load("bench").chunks)
    results = {"chunks_in_index": chunks, "queries": len(questions)}
    for mode in ("hybrid", "dense", "bm25"):
        timings = []
        for q in questions:
            t0 = time.perf_counter()
            retriever.search(q, kb="bench", k=6, candidates=40, mode=mode)  # type: ignore[arg-type]
            timings.append((time.perf_counter() - t0) * 1000)
        results[mode] = {"p50_ms": round(statistics.median(timings), 1), "p95_ms": round(percentile(timings, 0.95), 1)}
    results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
