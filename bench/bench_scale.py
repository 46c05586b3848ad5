"""Retrieval latency and worker memory as the index grows: 20k → 200k chunks.

Builds, from the ≥ 20,000-chunk index of bench_index.py (``--data-dir``, kb "bench"), synthetic versions of N
chunks (kb "scale<N>"): the real chunks repeated with a copy number in their text (so BM25 sees N distinct
chunks), their real vectors repeated with a little noise and renormalised (a 200k-chunk embedding is ~3 hours on
this machine; the dense search's cost depends on the matrix's size, not its values), written the way ingestion
writes a version (chunks.json, BM25, vectors.npy, vectors_xl.npy, headings.json) — with no Chroma collection:
the worker's dense search is the exact product over vectors.npy. Then, for each N, in a fresh process: the
RSS after loading the version and answering the questions, and hybrid search latency p50/p95 over the 18F FAQ
and paraphrased questions (k = 6, 40 candidates), as the worker searches.

    .venv/bin/python bench/bench_scale.py --data-dir /work/perfdata --sizes 20000,50000,100000,200000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.handbook_18f import faq_items  # noqa: E402
from bot.core.settings import Settings  # noqa: E402
from knowledge.config import KnowledgeConfig  # noqa: E402
from knowledge.index import IndexStore, heading_terms  # noqa: E402

BASE_KB = "bench"


def store_for(data_dir: Path) -> IndexStore:
    return IndexStore(KnowledgeConfig.from_settings(Settings(_env_file=None, data_dir=data_dir)))  # type: ignore[call-arg]


def build(data_dir: Path, size: int) -> str:
    """Write kb ``scale<size>`` version 1 from the base index (kept when already built)."""
    import bm25s

    from knowledge.chunking import indexed_text
    from knowledge.index import Manifest, bm25_tokenize, now_iso

    kb = f"scale{size}"
    store = store_for(data_dir)
    if store.latest_version(kb) is not None:
        return kb
    base = store.load(BASE_KB)
    assert base.vectors is not None, "the base index has no vectors.npy"
    rng = np.random.default_rng(7)
    n_base = len(base.chunks)
    rows = [i % n_base for i in range(size)]
    records = [replace(base.chunks[r], chunk_id=f"{base.chunks[r].chunk_id}~{i // n_base}",
                       text=base.chunks[r].text + (f" (copy {i // n_base})" if i >= n_base else ""))
               for i, r in enumerate(rows)]

    def noisy(matrix: np.ndarray) -> np.ndarray:
        out = np.asarray(matrix, dtype=np.float32)[rows].copy()
        out[n_base:] += rng.normal(0, 0.02, size=out[n_base:].shape).astype(np.float32)
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out

    vdir = store.kb_dir(kb) / "v1"
    shutil.rmtree(vdir, ignore_errors=True)
    vdir.mkdir(parents=True)
    np.save(vdir / "vectors.npy", noisy(base.vectors))
    if base.crosslingual_vectors is not None:
        np.save(vdir / "vectors_xl.npy", noisy(base.crosslingual_vectors))
    retriever = bm25s.BM25()
    retriever.index(bm25_tokenize([indexed_text(r.title, r.heading, r.text) for r in records]), show_progress=False)
    retriever.save(str(vdir / "bm25"))
    (vdir / "chunks.json").write_text(json.dumps([r.__dict__ for r in records]))
    (vdir / "headings.json").write_text(json.dumps([sorted(t) for t in heading_terms(records)]))
    info = json.loads((store.kb_dir(BASE_KB) / f"v{base.version}" / "vectors.json").read_text())
    (vdir / "vectors.json").write_text(json.dumps(info))
    base_manifest = store.manifest(BASE_KB)
    store.write_manifest(Manifest(kb=kb, embedder=base_manifest.embedder, chunking=base_manifest.chunking,
                                  versions=[{"version": 1, "created_at": now_iso(), "source": "bench_scale",
                                             "doc_count": 0, "chunk_count": size, "docs": {}}]))
    return kb


def measure(data_dir: Path, kb: str) -> dict[str, object]:
    """In this (fresh) process: load, search every question, report latency and RSS."""
    from knowledge.retrieval import Retriever

    store = store_for(data_dir)
    retriever = Retriever(store)
    questions = [item["question"] for item in faq_items()]
    para = Path(__file__).resolve().parent / "data" / "18f-paraphrased.jsonl"
    questions += [json.loads(line)["question"] for line in para.read_text().splitlines() if line.strip()]
    store.embedder.embed(["warm up"])
    if store.crosslingual_embedder is not None:
        store.crosslingual_embedder.embed(["warm up"])
    models_mb = _rss_mb()[0]
    t0 = time.perf_counter()
    retriever.search("warm up", kb=kb, k=6)
    load_s = time.perf_counter() - t0
    timings = []
    for q in questions:
        t = time.perf_counter()
        retriever.search(q, kb=kb, k=6, candidates=40)
        timings.append((time.perf_counter() - t) * 1000)
    ordered = sorted(timings)
    rss, peak = _rss_mb()
    return {"kb": kb, "chunks": len(store.load(kb).chunks), "first_search_s": round(load_s, 1),
            "hybrid_p50_ms": round(statistics.median(timings), 1),
            "hybrid_p95_ms": round(ordered[int(round(0.95 * (len(ordered) - 1)))], 1),
            "rss_models_only_mb": round(models_mb), "rss_mb": round(rss), "peak_rss_mb": round(peak),
            "load_average": round(os.getloadavg()[0], 1)}


def _rss_mb() -> tuple[float, float]:
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/deskmate-bench-20k"))
    parser.add_argument("--sizes", default="20000,50000,100000,200000")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.data_dir, args.measure)), flush=True)
        return
    for size in (int(s) for s in args.sizes.split(",")):
        kb = build(args.data_dir, size)
        subprocess.run([sys.executable, __file__, "--data-dir", str(args.data_dir), "--measure", kb], check=True)


if __name__ == "__main__":
    main()
