"""Embedding throughput: texts/s for ~180-word chunks of a real handbook, per batch size and token limit.

    .venv/bin/python bench/bench_embedding.py                     # the default grid
    .venv/bin/python bench/bench_embedding.py --n 200 --batch-sizes 16,32 --max-tokens 256

Each configuration runs in its own subprocess so that its peak RSS is its own. "fixed-pad" rows reproduce
the naive way (texts in file order, every batch padded to max_tokens) for comparison with the default
(length-sorted batches, each padded to its longest text). The corpus is read in place, never copied.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.handbook_18f import MARKDOWN_DIR as CORPUS  # noqa: E402  (../shared, or DESKMATE_SHARED_DIR)
_FRONT_MATTER = re.compile(r"\A---\n.*?\n---\n", re.DOTALL)


def load_chunks(n: int, words: int = 180, corpus: Path = CORPUS) -> list[str]:
    """The first ``n`` consecutive ``words``-word windows of the corpus's Markdown files (sorted by path)."""
    chunks: list[str] = []
    for path in sorted(corpus.rglob("*.md")):
        text = _FRONT_MATTER.sub("", path.read_text(encoding="utf-8", errors="replace"))
        tokens = text.split()
        for start in range(0, len(tokens) - words // 2, words):  # drop a short tail
            chunks.append(" ".join(tokens[start : start + words]))
            if len(chunks) >= n:
                return chunks
    return chunks


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_one(n: int, batch_size: int, max_tokens: int, threads: int, mode: str, repeats: int) -> dict:
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from knowledge.embedding import OnnxMiniLMEmbedder

    chunks = load_chunks(n)
    t0 = time.perf_counter()
    embedder = OnnxMiniLMEmbedder(max_tokens=max_tokens, threads=threads, batch_size=batch_size)
    load_s = time.perf_counter() - t0
    rss_loaded = _peak_rss_mb()
    tokens = embedder.token_counts(chunks)
    embedder.embed(chunks[:batch_size])  # warm-up: first-run allocations

    if mode == "sorted":
        embed = embedder.embed
    else:  # fixed-pad: file order, every batch padded to max_tokens (what the previous indexer did)
        tok = embedder._tokenizer  # noqa: SLF001 - a benchmark of the internals

        def embed(texts: list[str]) -> np.ndarray:
            tok.enable_padding(length=max_tokens)
            try:
                out = []
                for i in range(0, len(texts), batch_size):
                    enc = tok.encode_batch(texts[i : i + batch_size])
                    ids = np.array([e.ids for e in enc], dtype=np.int64)
                    mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
                    h = embedder._session.run(  # noqa: SLF001
                        None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
                    )[0]
                    v = (h * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
                    out.append(v / np.linalg.norm(v, axis=1, keepdims=True))
                return np.concatenate(out)
            finally:
                tok.no_padding()

    times, cpu = [], []
    load_before = os.getloadavg()[0]
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        vectors = embed(chunks)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    assert vectors.shape == (len(chunks), 384)
    best = min(times)
    return {
        "mode": mode,
        "batch_size": batch_size,
        "max_tokens": max_tokens,
        "threads": embedder.threads,
        "n": len(chunks),
        "mean_tokens": statistics.fmean(tokens),
        "truncated": sum(t >= max_tokens for t in tokens) / len(tokens),
        "load_s": load_s,
        "texts_per_s": len(chunks) / best,
        "median_texts_per_s": len(chunks) / statistics.median(times),
        "cpu_s_per_text": min(cpu) / len(chunks),
        "loadavg": max(load_before, os.getloadavg()[0]),
        "rss_loaded_mb": rss_loaded,
        "peak_rss_mb": _peak_rss_mb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=400, help="chunks per run (default 400)")
    parser.add_argument("--batch-sizes", default="8,16,32,64")
    parser.add_argument("--max-tokens", default="128,256", help="comma-separated token limits")
    parser.add_argument("--threads", type=int, default=0, help="0 = one per core")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per configuration (best is reported)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the fixed-pad comparison rows")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration, print JSON
    args = parser.parse_args()

    if args.one:
        cfg = json.loads(args.one)
        print(json.dumps(run_one(**cfg)))
        return

    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    max_tokens = [int(m) for m in args.max_tokens.split(",")]
    configs = [("sorted", b, m) for m in max_tokens for b in batch_sizes]
    if not args.no_baseline:
        configs.append(("fixed-pad", 32, 256))

    print(f"embedding benchmark: {args.n} chunks of ~180 words from {CORPUS}, cores={os.cpu_count()}")
    print("texts/s = best of --repeats passes (median beside it); cpu_ms/t = process CPU time per text (all threads);")
    print("trunc = share of chunks cut at max_tok; peak_rss = the configuration's own process; loadavg = 1-min, during the run")
    header = (
        f"{'mode':<10} {'batch':>5} {'max_tok':>7} {'thr':>3} {'mean_tok':>8} {'trunc':>6} "
        f"{'texts/s':>8} {'median':>8} {'cpu_ms/t':>8} {'load_s':>6} {'rss_load':>8} {'peak_rss':>8} {'loadavg':>7}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for mode, b, m in configs:
        cfg = {"n": args.n, "batch_size": b, "max_tokens": m, "threads": args.threads, "mode": mode,
               "repeats": args.repeats}
        proc = subprocess.run(
            [sys.executable, __file__, "--one", json.dumps(cfg)], capture_output=True, text=True, check=True
        )
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(r)
        print(
            f"{r['mode']:<10} {r['batch_size']:>5} {r['max_tokens']:>7} {r['threads']:>3} {r['mean_tokens']:>8.1f} "
            f"{r['truncated']:>6.0%} {r['texts_per_s']:>8.1f} {r['median_texts_per_s']:>8.1f} "
            f"{1000 * r['cpu_s_per_text']:>8.0f} {r['load_s']:>6.2f} {r['rss_loaded_mb']:>6.0f}MB {r['peak_rss_mb']:>6.0f}MB "
            f"{r['loadavg']:>7.1f}",
            flush=True,
        )

    query_latency(args.threads)


def query_latency(threads: int) -> None:
    """What the answer path pays: one short question, embedded alone (dynamic padding: ~12 tokens, not 256)."""
    sys.path.insert(0, str(ROOT))
    from knowledge.embedding import OnnxMiniLMEmbedder

    embedder = OnnxMiniLMEmbedder(threads=threads)
    question = ["How many days do I have to submit an expense report after travel?"]
    for _ in range(3):
        embedder.embed(question)
    samples = []
    for _ in range(30):
        t0 = time.perf_counter()
        embedder.embed(question)
        samples.append(time.perf_counter() - t0)
    samples.sort()
    print(
        f"\nquery latency (one {embedder.token_counts(question)[0]}-token question): "
        f"median {1000 * statistics.median(samples):.1f} ms, p90 {1000 * samples[int(0.9 * len(samples))]:.1f} ms"
    )


if __name__ == "__main__":
    main()
