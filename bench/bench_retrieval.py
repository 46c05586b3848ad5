"""Retrieval as the worker does it (the default configuration), on every question set we keep: English,
translated, follow-ups and unanswerable — BM25, dense and hybrid side by side, the "not found" decision, and the
search latency. Also the same hybrid search as releases made before the cross-lingual vectors do it ("before":
``FusionConfig.from_dict({})``), from the same indexes, so the figures compare in one run.

    .venv/bin/python bench/bench_retrieval.py                        # fresh indexes in a temporary folder
    .venv/bin/python bench/bench_retrieval.py --keep /tmp/dm-bench    # keep (and reuse) them
    .venv/bin/python bench/bench_retrieval.py --techdocs /work/corpora/fastapi   # and the technical-docs set

Corpora: ``knowledge/sample`` (kb ``sample``), the 18F handbook in ``../shared`` (kb ``18f``, read in place) and,
with ``--techdocs``, the FastAPI documentation extracted as ``bench/data/techdocs-fastapi.source.md`` says (kb
``td``). Question sets: ``feedback/golden/sample.jsonl`` and ``bench/data/`` (README there says how each was
made). Document-level recall@1/@5 and MRR@10 (``knowledge.evaluation``, the code of ``deskmate eval
retrieval``); "not found" at the default level (``DESKMATE_RETRIEVAL_NOT_FOUND_LEVEL``) and at a few others.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.handbook_18f import MARKDOWN_DIR, faq_items  # noqa: E402
from knowledge.calibration import DEFAULT_NOT_FOUND_LEVEL  # noqa: E402
from knowledge.config import KnowledgeConfig  # noqa: E402
from knowledge.evaluation import QrelItem, evaluate_retrieval, load_qrels  # noqa: E402
from knowledge.index import IndexStore  # noqa: E402
from knowledge.ingest import ingest  # noqa: E402
from knowledge.retrieval import FusionConfig, Retriever  # noqa: E402

DATA = ROOT / "bench" / "data"
LANGS = ("de", "es", "fr", "zh")
LEVELS = (0.5, 0.75, 0.9)
NOW = FusionConfig()  # the default of new releases
BEFORE = FusionConfig.from_dict({})  # a release made before the cross-lingual vectors
#: The default before the confidence merge of a message's two rankings (docs/retrieval.md, "A fusion that never
#: loses"): the same fusion, its two rankings merged by plain reciprocal rank.
RRF_MERGE = FusionConfig(alternative_merge="rrf")


def _faq() -> list[QrelItem]:
    return [QrelItem(i["qid"], i["question"], set(i["relevant_doc_ids"]), lang="en") for i in faq_items()]


def _sets(techdocs: bool) -> list[tuple[str, str, str, list[QrelItem], str]]:
    """(set, language, kb, items, how the query is made: history | alone | standalone)."""
    out: list[tuple[str, str, str, list[QrelItem], str]] = [
        ("sample", "en", "sample", load_qrels(ROOT / "feedback" / "golden" / "sample.jsonl", unanswerable=True),
         "history"),
        ("18f-para", "en", "18f", load_qrels(DATA / "18f-paraphrased.jsonl"), "history"),
        ("18f-faq", "en", "18f", _faq(), "history"),
        ("18f-unanswerable", "en", "18f", load_qrels(DATA / "18f-unanswerable.en.jsonl", unanswerable=True),
         "history"),
    ]
    if techdocs:
        out.append(("techdocs", "en", "td", load_qrels(DATA / "techdocs-fastapi.jsonl"), "history"))
    for lang in LANGS:
        out.append(("sample", lang, "sample", load_qrels(DATA / f"sample-golden.{lang}.jsonl", unanswerable=True),
                    "history"))
        out.append(("18f-faq", lang, "18f", load_qrels(DATA / f"18f-faq.{lang}.jsonl"), "history"))
        out.append(("18f-unanswerable", lang, "18f",
                    load_qrels(DATA / f"18f-unanswerable.{lang}.jsonl", unanswerable=True), "history"))
    for corpus in ("sample", "18f"):
        items = load_qrels(DATA / "followups.jsonl", corpus=corpus)
        for how in ("alone", "history", "standalone"):
            out.append((f"follow-ups {corpus}", how, corpus, items, how))
        out.append((f"topic changes {corpus}", "history", corpus, _topic_changes(items), "history"))
    return out


def _topic_changes(items: list[QrelItem]) -> list[QrelItem]:
    """A new, self-contained question in a thread about something else: conversation i's history, then the
    hand-written standalone question of conversation i+7 (when it is about other documents). What carrying the
    thread's words must not break."""
    out = []
    for i, item in enumerate(items):
        other = items[(i + 7) % len(items)]
        if not other.relevant & item.relevant:
            out.append(QrelItem(f"{item.qid}+{other.qid}", str(other.fields["standalone"]), other.relevant,
                                history=item.history, lang="en"))
    return out


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _fmt(m: dict[str, float]) -> str:
    return f"{m['recall@1']:.2f} / {m['recall@5']:.2f} / {m['mrr@10']:.3f}" if m else "—"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="Index folder to keep and reuse.")
    parser.add_argument("--techdocs", type=Path, help="The extracted FastAPI docs (bench/data/techdocs-fastapi.source.md).")
    parser.add_argument("--json", type=Path, help="Also write the raw figures here.")
    args = parser.parse_args(argv)
    data_dir = args.keep or Path(tempfile.mkdtemp(prefix="dm-bench-retrieval-"))
    store = IndexStore(KnowledgeConfig(index_dir=data_dir / "index", chroma_dir=data_dir / "chroma"))
    corpora = [("sample", ROOT / "knowledge" / "sample"), ("18f", MARKDOWN_DIR)]
    if args.techdocs:
        corpora.append(("td", args.techdocs))
    ingestion: dict[str, Any] = {}
    for kb, folder in corpora:
        report = ingest(store, folder, kb=kb)
        ingestion[kb] = {"chunks": report.chunks_total, "embedded": report.chunks_embedded,
                         "seconds": round(report.seconds, 1)}
        print(f"ingested {kb}: {report.chunks_total} chunks ({report.chunks_embedded} embedded) in "
              f"{report.seconds:.1f} s", file=sys.stderr)
    retriever = Retriever(store)

    rows: list[dict[str, Any]] = []
    for name, lang, kb, items, how in _sets(bool(args.techdocs)):
        started = time.perf_counter()
        options: dict[str, Any] = dict(kb=kb, use_history=how != "alone",
                                       query_field="standalone" if how == "standalone" else None)
        now = evaluate_retrieval(retriever, items, fusion=NOW, **options)
        before = evaluate_retrieval(retriever, items, fusion=BEFORE, modes=("hybrid",), not_found_level=None,
                                    **options)
        rrf_merge = evaluate_retrieval(retriever, items, fusion=RRF_MERGE, modes=("hybrid",), **options)
        levels = {level: evaluate_retrieval(retriever, items, fusion=NOW, modes=("hybrid",), not_found_level=level,
                                            **options)["not_found"] for level in LEVELS if level != DEFAULT_NOT_FOUND_LEVEL}
        levels[DEFAULT_NOT_FOUND_LEVEL] = now["not_found"]
        rows.append({"set": name, "lang": lang, "kb": kb, "n": now["n"], "bm25": now["bm25"], "dense": now["dense"],
                     "hybrid": now["hybrid"], "rrf_merge": rrf_merge["hybrid"], "before": before["hybrid"], "not_found": levels,
                     "not_found_before": before["not_found"]})
        print(f"{name} {lang}: {time.perf_counter() - started:.1f} s", file=sys.stderr)

    latency = _latency(retriever)
    _print(rows, latency, ingestion)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "latency": latency, "ingestion": ingestion}, default=str))


def _latency(retriever: Retriever) -> dict[str, dict[str, float]]:
    """Hybrid search latency per question (ms, p50/p95), warm: English, translated, and a thread's message
    searched twice (with its alternative)."""
    english = [i["question"] for i in faq_items()]
    foreign = [item.question for lang in LANGS for item in load_qrels(DATA / f"18f-faq.{lang}.jsonl")][:100]
    out: dict[str, dict[str, float]] = {}
    for label, questions, alternative, fusion in (
            ("English", english, False, NOW), ("other languages", foreign, False, NOW),
            ("in a thread (two queries)", english, True, NOW),
            ("in a thread, reciprocal-rank merge (before)", english, True, RRF_MERGE)):
        retriever.search(questions[0], kb="18f", fusion=fusion)  # warm
        times = []
        for q in questions:
            started = time.perf_counter()
            retriever.search(q, kb="18f", fusion=fusion, alternative=f"{q} travel leave" if alternative else None)
            times.append((time.perf_counter() - started) * 1000)
        out[label] = {"p50": round(statistics.median(times), 1), "p95": round(_pct(times, 0.95), 1)}
    return out


def _declined(nf: dict[str, Any]) -> str:
    part = []
    if nf["answerable"]:
        part.append(f"{nf['declined']}/{nf['answerable']} declined")
    if nf["unanswerable"]:
        part.append(f"{nf['answered']}/{nf['unanswerable']} answered")
    return ", ".join(part)


def _print(rows: list[dict[str, Any]], latency: dict[str, dict[str, float]], ingestion: dict[str, Any]) -> None:
    print("\n### Recall@1 / recall@5 / MRR@10 (default configuration)\n")
    print("| set | lang / query | questions | BM25 | dense | hybrid | hybrid, reciprocal-rank merge | hybrid, before |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["n"]:
            print(f"| {r['set']} | {r['lang']} | {r['n']} | {_fmt(r['bm25'])} | {_fmt(r['dense'])} | "
                  f"**{_fmt(r['hybrid'])}** | {_fmt(r['rrf_merge'])} | {_fmt(r['before'])} |")
    print("\n### Hybrid against the better single retriever (negative = hybrid below it)\n")
    print("| set | lang / query | recall@1 | recall@5 | MRR@10 | reciprocal-rank merge: recall@1 | recall@5 | MRR@10 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["n"]:
            gaps = [r[h][m] - max(r["bm25"][m], r["dense"][m])
                    for h in ("hybrid", "rrf_merge") for m in ("recall@1", "recall@5", "mrr@10")]
            print(f"| {r['set']} | {r['lang']} | " + " | ".join(f"{g:+.3f}" for g in gaps) + " |")
    print("\n### Recall@5 of each language against English (hybrid; target: within 0.10)\n")
    english = {r["set"]: r["hybrid"]["recall@5"] for r in rows if r["lang"] == "en" and r["n"]}
    print("| set | " + " | ".join(LANGS) + " |")
    print("|---|" + "---|" * len(LANGS))
    for name in ("sample", "18f-faq"):
        cells = []
        for lang in LANGS:
            r = next(x for x in rows if x["set"] == name and x["lang"] == lang)
            cells.append(f"{r['hybrid']['recall@5']:.2f} ({r['hybrid']['recall@5'] - english[name]:+.2f})")
        print(f"| {name} (en {english[name]:.2f}) | " + " | ".join(cells) + " |")
    print("\n### \"Not found\": answerable questions declined, unanswerable ones answered\n")
    levels = sorted(rows[0]["not_found"])
    print("| set | lang / query | before (cosine 0.3, MiniLM) | " + " | ".join(f"level {lv:g}" for lv in levels) + " |")
    print("|---|---|---|" + "---|" * len(levels))
    for r in rows:
        if r["lang"] in ("alone", "standalone"):
            continue
        cells = [_declined(r["not_found_before"])] + [_declined(r["not_found"][lv]) for lv in levels]
        print(f"| {r['set']} | {r['lang']} | " + " | ".join(cells) + " |")
    print("\n### Hybrid search latency, 18F index (ms, warm, one process)\n")
    print("| questions | p50 | p95 |")
    print("|---|---|---|")
    for label, figures in latency.items():
        print(f"| {label} | {figures['p50']} | {figures['p95']} |")
    print("\nIngestion: " + ", ".join(f"{kb} {v['chunks']} chunks, {v['embedded']} embedded in {v['seconds']} s"
                                      for kb, v in ingestion.items()))


if __name__ == "__main__":
    main()
