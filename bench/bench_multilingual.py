"""Cross-lingual retrieval: each embedding backend's quality (English and translated questions), ingestion cost,
memory and query latency, on the sample handbook and the 18F handbook.

    .venv/bin/python bench/bench_multilingual.py                      # every backend, fresh indexes
    .venv/bin/python bench/bench_multilingual.py --backends onnx-minilm-int8,use-multilingual-v3
    .venv/bin/python bench/bench_multilingual.py --keep /tmp/dm-ml    # keep (and reuse) the indexes

Each backend runs alone (no second, cross-lingual embedder: ``bench/bench_retrieval.py`` measures the default
pair) in its own subprocess (so its peak RSS is its own) with the default threads (one per core):
it ingests ``knowledge/sample`` (kb ``sample``) and the 18F handbook in ``../shared`` (kb ``18f``; read in
place, never copied) with ``knowledge.ingest.ingest``, then evaluates document-level recall@1/@5 and MRR@10
(``knowledge.evaluation``, the code behind ``deskmate eval retrieval``) for dense and hybrid (the default
fusion) on:

- English: ``feedback/golden/sample.jsonl``, ``bench/data/18f-paraphrased.jsonl``, the 18F FAQ
  (``../shared/corpora/handbook-18f-tts/faq.jsonl``);
- translated: ``bench/data/sample-golden.{de,es,fr,zh}.jsonl`` and ``bench/data/18f-faq.{de,es,fr,zh}.jsonl``
  (same qids as the English items; whichever exist).

BM25 does not depend on the embedder: it is reported once, as the first backend's. Also measured: ingestion
chunks/s (whole ingest, and the embedding calls alone), RSS after loading the model and peak RSS, one question
embedded alone and one hybrid search (median and p90 over the 18F FAQ in every language), and the best
passage's cosine for answerable vs unanswerable sample questions (what ``DESKMATE_RETRIEVAL_MIN_SCORE`` decides
on). With ``--keep`` an existing index is reused, and its ingestion figures are then those of a no-op ingest.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.handbook_18f import MARKDOWN_DIR, faq_items  # noqa: E402  (../shared, or DESKMATE_SHARED_DIR)

DATA = ROOT / "bench" / "data"
SAMPLE_GOLDEN = ROOT / "feedback" / "golden" / "sample.jsonl"
BACKENDS = ("onnx-minilm-int8", "use-multilingual-v3", "multilingual-e5-small-q4")
LANGS = ("de", "es", "fr", "zh")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def question_sets() -> list[tuple[str, str, str, list[dict[str, Any]]]]:
    """(name, language, kb, rows) for every set that exists; rows are qrels rows (unanswerable ones included)."""

    def read(path: Path) -> list[dict[str, Any]]:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    sets = [("sample", "en", "sample", read(SAMPLE_GOLDEN)),
            ("18f-para", "en", "18f", read(DATA / "18f-paraphrased.jsonl")),
            ("18f-faq", "en", "18f", faq_items())]
    for lang in LANGS:
        for name, kb, file in (("sample", "sample", f"sample-golden.{lang}.jsonl"), ("18f-faq", "18f", f"18f-faq.{lang}.jsonl")):
            if (DATA / file).exists():
                sets.append((name, lang, kb, read(DATA / file)))
    return sets


class _TimedEmbedder:
    """The backend's embedder, with the time spent in its ``embed`` calls added up (ingestion's embedding)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.texts = 0

    def embed(self, texts: Sequence[str]) -> Any:
        started = time.perf_counter()
        out = self.inner.embed(texts)
        self.seconds += time.perf_counter() - started
        self.texts += len(texts)
        return out

    def __getattr__(self, name: str) -> Any:  # name, dim, backend, model, max_tokens, embed_query
        return getattr(self.inner, name)


def run_one(backend: str, data_dir: Path, with_bm25: bool) -> dict[str, Any]:
    from feedback.interactions import relevance
    from knowledge.config import EmbeddingConfig, KnowledgeConfig
    from knowledge.embedding import embed_queries, get_embedder
    from knowledge.evaluation import QrelItem, evaluate_retrieval
    from knowledge.index import IndexStore
    from knowledge.ingest import ingest
    from knowledge.retrieval import FusionConfig, Retriever
    from bot.core.settings import SAMPLE_KNOWLEDGE_DIR

    out: dict[str, Any] = {"backend": backend, "load_before": os.getloadavg()[0]}
    config = KnowledgeConfig(index_dir=data_dir / "index", chroma_dir=data_dir / "chroma",
                             embedding=EmbeddingConfig(backend=backend),  # type: ignore[arg-type]
                             crosslingual=None)  # each backend alone (bench_retrieval.py measures the default pair)
    started = time.perf_counter()
    embedder = get_embedder(config.embedding)
    out["load_s"] = time.perf_counter() - started
    out["rss_loaded_mb"] = _rss_mb()
    out["dim"] = embedder.dim
    timed = _TimedEmbedder(embedder)
    store = IndexStore(config, embedder=timed)  # type: ignore[arg-type]
    out["ingest"] = {}
    for kb, folder in (("sample", SAMPLE_KNOWLEDGE_DIR), ("18f", MARKDOWN_DIR)):
        timed.seconds, timed.texts = 0.0, 0
        report = ingest(store, Path(folder), kb=kb)
        out["ingest"][kb] = {"chunks": report.chunks_total, "embedded": report.chunks_embedded,
                             "seconds": report.seconds, "embed_seconds": timed.seconds,
                             "chunks_per_s": report.chunks_embedded / report.seconds if report.seconds else None,
                             "embed_chunks_per_s": timed.texts / timed.seconds if timed.seconds else None}
        print(f"[{backend}] ingested {kb}: {report.chunks_embedded} chunks embedded in {report.seconds:.1f} s",
              file=sys.stderr, flush=True)
    out["rss_after_ingest_mb"] = _rss_mb()

    retriever = Retriever(store)
    fusion = FusionConfig()
    modes = ("bm25", "dense", "hybrid") if with_bm25 else ("dense", "hybrid")
    out["quality"] = []
    out["not_found"] = []
    for name, lang, kb, rows in question_sets():
        items = [QrelItem(str(r.get("qid", i)), str(r["question"]), set(r["relevant_doc_ids"]))
                 for i, r in enumerate(rows) if r.get("relevant_doc_ids")]
        result = evaluate_retrieval(retriever, items, kb=kb, fusion=fusion, modes=modes)
        out["quality"].append({"set": name, "lang": lang, "n": len(items),
                               **{mode: result[mode] for mode in modes}})
        if name == "sample":  # the not-found decision: best passage's cosine, answerable vs not
            best = {True: [], False: []}
            for r in rows:
                passages = retriever.search(r["question"], kb=kb, k=6, fusion=fusion)
                best[bool(r.get("relevant_doc_ids"))].append(relevance(passages))
            out["not_found"].append({"lang": lang, "answerable": best[True], "unanswerable": best[False]})
        print(f"[{backend}] {name} {lang}: hybrid {result['hybrid']}", file=sys.stderr, flush=True)

    # latency: every 18F FAQ question (all languages), embedded alone, and searched (hybrid)
    questions = [r["question"] for name, _, _, rows in question_sets() if name == "18f-faq" for r in rows]
    embed_ms, search_ms = [], []
    embed_queries(embedder, ["warm up"])
    for q in questions:
        started = time.perf_counter()
        embed_queries(embedder, [q])
        embed_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        retriever.search(q, kb="18f", k=6, fusion=fusion)
        search_ms.append((time.perf_counter() - started) * 1000)
    out["latency"] = {"n": len(questions),
                      "embed_ms_median": statistics.median(embed_ms), "embed_ms_p90": _pct(embed_ms, 0.9),
                      "search_ms_median": statistics.median(search_ms), "search_ms_p90": _pct(search_ms, 0.9)}
    out["peak_rss_mb"] = _rss_mb()
    out["load_after"] = os.getloadavg()[0]
    return out


# ------------------------------------------------------------------------------------------------------
# report

def _f(v: float | None, digits: int = 2) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _triple(metrics: dict[str, float]) -> str:
    return f"{metrics['recall@1']:.2f} / {metrics['recall@5']:.2f} / {metrics['mrr@10']:.3f}"


def report(results: list[dict[str, Any]]) -> str:
    lines: list[str] = []
    lines.append("Cost (default threads = one per core; whole ingest, and the embedding calls alone):\n")
    lines.append("| backend | dim | model load | sample: chunks/s (embed only) | 18F: chunks/s (embed only) | 18F ingest "
                 "| RSS after load | peak RSS | question embed p50 / p90 | hybrid search p50 / p90 |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        s, h, lat = r["ingest"]["sample"], r["ingest"]["18f"], r["latency"]
        lines.append(
            f"| {r['backend']} | {r['dim']} | {r['load_s']:.2f} s | {_f(s['chunks_per_s'], 1)} ({_f(s['embed_chunks_per_s'], 1)}) "
            f"| {_f(h['chunks_per_s'], 1)} ({_f(h['embed_chunks_per_s'], 1)}) | {h['seconds']:.0f} s ({h['embedded']} chunks) "
            f"| {r['rss_loaded_mb']:.0f} MB | {r['peak_rss_mb']:.0f} MB "
            f"| {lat['embed_ms_median']:.1f} / {lat['embed_ms_p90']:.1f} ms | {lat['search_ms_median']:.0f} / {lat['search_ms_p90']:.0f} ms |")
    lines.append("\nLoad average (1 min) before / after each backend's run: "
                 + ", ".join(f"{r['backend']} {r['load_before']:.1f} / {r['load_after']:.1f}" for r in results))

    lines.append("\nQuality — recall@1 / recall@5 / MRR@10 (document level; answerable questions):\n")
    header = "| set | lang | n | BM25 | " + " | ".join(f"{r['backend']} dense | {r['backend']} hybrid" for r in results) + " |"
    lines.append(header)
    lines.append("|---|---|---:|---:|" + "---:|---:|" * len(results))
    for i, row in enumerate(results[0]["quality"]):
        bm25 = _triple(row["bm25"]) if "bm25" in row else "—"
        cells = []
        for r in results:
            q = r["quality"][i]
            cells += [_triple(q["dense"]), _triple(q["hybrid"])]
        lines.append(f"| {row['set']} | {row['lang']} | {row['n']} | {bm25} | " + " | ".join(cells) + " |")

    lines.append("\nMean over the translated sets (hybrid recall@5 / MRR@10), and over the English ones:\n")
    lines.append("| backend | English r@5 / MRR | translated r@5 / MRR | worst translated set r@5 |")
    lines.append("|---|---:|---:|---:|")
    for r in results:
        en = [q["hybrid"] for q in r["quality"] if q["lang"] == "en"]
        xl = [q for q in r["quality"] if q["lang"] != "en"]
        worst = min(xl, key=lambda q: q["hybrid"]["recall@5"]) if xl else None

        def mean(rows: list[dict[str, float]], key: str) -> float:
            return statistics.fmean(m[key] for m in rows) if rows else float("nan")

        lines.append(f"| {r['backend']} | {mean(en, 'recall@5'):.3f} / {mean(en, 'mrr@10'):.3f} "
                     f"| {mean([q['hybrid'] for q in xl], 'recall@5'):.3f} / {mean([q['hybrid'] for q in xl], 'mrr@10'):.3f} "
                     f"| {(worst['set'] + ' ' + worst['lang'] + ' ' + format(worst['hybrid']['recall@5'], '.2f')) if worst else '—'} |")

    lines.append("\nNot found: best passage's cosine on the sample set (min / median / max), answerable vs unanswerable:\n")
    lines.append("| backend | lang | answerable | unanswerable | answerable below 0.3 | unanswerable at or above 0.3 |")
    lines.append("|---|---|---:|---:|---:|---:|")
    for r in results:
        for nf in r["not_found"]:
            a, u = nf["answerable"], nf["unanswerable"]

            def rng(v: list[float]) -> str:
                return f"{min(v):.2f} / {statistics.median(v):.2f} / {max(v):.2f}" if v else "—"

            lines.append(f"| {r['backend']} | {nf['lang']} | {rng(a)} | {rng(u)} | {sum(x < 0.3 for x in a)}/{len(a)} "
                         f"| {sum(x >= 0.3 for x in u)}/{len(u)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated (default: all three)")
    parser.add_argument("--keep", type=Path, help="data dir to keep the indexes in (reused when it has them)")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one backend, print JSON
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--with-bm25", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:
        import logging

        logging.disable(logging.WARNING)  # ingest's per-file warnings (18F pages without text)
        print(json.dumps(run_one(args.one, args.data_dir, args.with_bm25)))
        return

    base = args.keep or Path(tempfile.mkdtemp(prefix="bench-multilingual-"))
    results = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESKMATE_") or k == "DESKMATE_SHARED_DIR"}
    env["ANONYMIZED_TELEMETRY"] = "False"
    for i, backend in enumerate(b.strip() for b in args.backends.split(",") if b.strip()):
        cmd = [sys.executable, __file__, "--one", backend, "--data-dir", str(base / backend)]
        if i == 0:
            cmd.append("--with-bm25")
        proc = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, cwd=ROOT)
        sys.stderr.write("\n".join(line for line in proc.stderr.splitlines() if line.startswith("[")) + "\n")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(f"\n{os.cpu_count()} CPUs; indexes in {base}\n")
    print(report(results))


if __name__ == "__main__":
    main()
