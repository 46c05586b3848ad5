"""`deskmate ingest`, `deskmate search` and `deskmate eval retrieval`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from bot.core.settings import get_settings
from knowledge.config import KnowledgeConfig
from knowledge.evaluation import evaluate_retrieval, load_qrels
from knowledge.index import IndexNotFound, IndexStore
from knowledge.ingest import IngestReport, NoDocuments, ingest
from knowledge.retrieval import FusionConfig, Retriever, SearchFilter
from playbooks.releases import pinned_index_versions

err = Console(stderr=True)
out = Console()


def _store() -> IndexStore:
    return IndexStore(KnowledgeConfig.from_settings(get_settings()))


def protected_index_versions(kb: str) -> set[int]:
    """Index versions pinned by a release must survive pruning (rollback needs them)."""
    try:
        return pinned_index_versions(get_settings(), kb)
    except Exception:  # noqa: BLE001 - no database yet: nothing is pinned
        return set()


def run_ingest(directory: Path, kb: str, *, show_progress: bool = True) -> IngestReport:
    store = _store()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, disable=not show_progress, transient=True) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                labels = {"embed": "Embedding chunks", "embed-crosslingual": "Embedding chunks (cross-lingual)",
                          "index": "Writing index"}
                tasks[stage] = bar.add_task(labels.get(stage, stage), total=total)
            bar.update(tasks[stage], completed=done, total=total)

        return ingest(store, directory, kb=kb, progress=progress, protected_versions=protected_index_versions(kb))


def print_report(report: IngestReport) -> None:
    if report.created_version:
        err.print(f"[bold]Index '{report.kb}' version {report.version}[/bold]: {report.chunks_total} chunks "
                  f"({report.chunks_embedded} embedded) in {report.seconds:.1f} s")
    else:
        err.print(f"[bold]Index '{report.kb}' unchanged[/bold] (version {report.version}); nothing to embed")
    table = Table(show_header=False, box=None)
    for label, items in (("ingested (new)", report.ingested), ("updated", report.updated),
                         ("unchanged", report.unchanged), ("deleted", report.deleted)):
        table.add_row(label, str(len(items)))
    table.add_row("skipped", str(len(report.skipped)))
    err.print(table)
    for s in report.skipped:
        err.print(f"  skipped {s.path}: {s.reason}")
    if report.pruned_versions:
        err.print(f"  removed old versions: {', '.join(map(str, report.pruned_versions))}")


def ingest_command(
    directory: Annotated[Path, typer.Argument(help="Folder of Markdown, text, HTML, PDF and Word documents.")],
    kb: Annotated[Optional[str], typer.Option(help="Knowledge base (index) name.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON.")] = False,
) -> None:
    """Build or update the index from a folder (incremental: unchanged documents are not re-embedded)."""
    kb = kb or get_settings().kb_name
    if not directory.is_dir():
        err.print(f"[red]error:[/red] {directory} is not a folder")
        raise typer.Exit(2)
    try:
        report = run_ingest(directory, kb, show_progress=not as_json and sys.stderr.isatty())
    except NoDocuments as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    if as_json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print_report(report)


def search_command(
    question: Annotated[str, typer.Argument(help="What to look for.")],
    kb: Annotated[Optional[str], typer.Option(help="Knowledge base name.")] = None,
    k: Annotated[int, typer.Option("--k", help="How many passages.")] = 10,
    knowledge_set: Annotated[Optional[list[str]], typer.Option("--set", help="Limit to knowledge sets.")] = None,
    public_only: Annotated[bool, typer.Option(help="Only sources marked public.")] = False,
    mode: Annotated[str, typer.Option(help="hybrid, dense or bm25.")] = "hybrid",
    version: Annotated[Optional[int], typer.Option(help="Index version (default: latest).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array on stdout.")] = False,
) -> None:
    """Ranked passages for a question, with their sources."""
    settings = get_settings()
    kb = kb or settings.kb_name
    if mode not in ("hybrid", "dense", "bm25"):
        err.print("[red]error:[/red] --mode must be hybrid, dense or bm25")
        raise typer.Exit(2)
    try:
        passages = Retriever(_store()).search(
            question, kb=kb, version=version, k=k, candidates=max(settings.retrieval_candidates, k),
            search_filter=SearchFilter(knowledge_sets=knowledge_set or None, public_only=public_only),
            mode=mode,  # type: ignore[arg-type]
        )
    except IndexNotFound as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    rows = [{"rank": i, "doc_id": p.doc_id, "title": p.title, "location": p.location, "heading": p.heading,
             "score": p.score, "knowledge_set": p.knowledge_set, "chunk_id": p.chunk_id, "text": p.text}
            for i, p in enumerate(passages, start=1)]
    if as_json:
        print(json.dumps(rows, ensure_ascii=False))
        return
    if not rows:
        out.print("No passages found.")
    for row in rows:
        heading = f" › {row['heading']}" if row["heading"] else ""
        out.print(f"[bold]{row['rank']}. {row['title']}{heading}[/bold]  ({row['score']:.3f})  {row['location']}")
        text = " ".join(str(row["text"]).split())
        out.print(f"   {text[:300]}{'…' if len(text) > 300 else ''}\n")


def eval_retrieval_command(
    qrels: Annotated[Path, typer.Option("--qrels", help="JSONL of {qid, question, relevant_doc_ids} (optional: "
                                                        "history, lang, corpus, other fields).")],
    kb: Annotated[Optional[str], typer.Option(help="Knowledge base name.")] = None,
    version: Annotated[Optional[int], typer.Option(help="Index version (default: latest).")] = None,
    corpus: Annotated[Optional[str], typer.Option(help="Only the items whose `corpus` is this.")] = None,
    no_history: Annotated[bool, typer.Option("--no-history", help="Search each question alone, ignoring its "
                                                                  "history.")] = False,
    standalone_field: Annotated[Optional[str], typer.Option(
        "--standalone-field", help="Search this field of each item instead of the question (e.g. standalone).")] = None,
    by: Annotated[Optional[str], typer.Option(help="Also give the results per value of this field (e.g. kind); "
                                                   "default: per lang when several are present.")] = None,
    not_found_level: Annotated[Optional[float], typer.Option(
        help="Calibrated 'not found' level (default: DESKMATE_RETRIEVAL_NOT_FOUND_LEVEL).")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Recall@1/5/10 and MRR@10 (document level) for BM25, dense and hybrid, side by side; and how many
    answerable questions would be declined as "not found", and unanswerable ones (empty relevant_doc_ids)
    answered.

    A question with a `history` is searched as the worker's offline path searches it (knowledge/query.py)."""
    settings = get_settings()
    kb = kb or settings.kb_name
    level = settings.retrieval_not_found_level if not_found_level is None else not_found_level
    try:
        items = load_qrels(qrels, corpus=corpus, unanswerable=True)
        results = evaluate_retrieval(Retriever(_store()), items, kb=kb, version=version,
                                     fusion=FusionConfig(crosslingual=True), use_history=not no_history,
                                     query_field=standalone_field, group_by=by, not_found_level=level,
                                     min_score=settings.retrieval_min_score)
    except (ValueError, FileNotFoundError, IndexNotFound) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    if as_json:
        print(json.dumps(results))
        return
    searched = {"history": "with history (offline query)", "alone": "the turns alone"}.get(
        results["query"], f"field '{results['query']}'")
    _print_results(f"Retrieval on {qrels.name} ({results['n']} answerable questions, kb '{kb}', {searched})",
                   results)
    for value, group in (results.get("groups") or {}).items():
        _print_results(f"{results['group_by']} = {value} ({group['n']} answerable questions)", group)


def _print_results(title: str, results: dict[str, Any]) -> None:
    if results["n"]:
        out.print(_metrics_table(title, results))
    else:
        out.print(title)
    nf = results.get("not_found")
    if nf:
        out.print(f"  not found at level {nf['level']}: {nf['declined']}/{nf['answerable']} answerable declined, "
                  f"{nf['answered']}/{nf['unanswerable']} unanswerable answered\n")


def _metrics_table(title: str, results: dict[str, Any]) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    for mode in ("bm25", "dense", "hybrid"):
        table.add_column(mode, justify="right")
    for metric in ("recall@1", "recall@5", "recall@10", "mrr@10"):
        table.add_row(metric, *(f"{results[m][metric]:.3f}" for m in ("bm25", "dense", "hybrid")))
    return table
