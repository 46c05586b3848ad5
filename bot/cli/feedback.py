"""`deskmate feedback …` (labels out: export, Langfuse, golden sets) and `deskmate eval run|compare|gate`."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bot.answerer import evaluation_answerer
from bot.cli.playbooks import cli_actor
from bot.core.settings import Settings, get_settings
from feedback.db import get_database
from feedback.evals.report import print_comparison, print_run, render_html, to_json
from feedback.evals.runner import EvalError, EvalResult, run_eval
from feedback.evals.runner import Progress as ProgressCallback
from feedback.export import FORMATS, labelled_rows, parse_since, write_csv, write_jsonl
from feedback.gate import GateReport, evaluate_gate, gate_dataset
from feedback.golden import (
    GoldenError,
    GoldenItem,
    check_doc_ids,
    load_golden,
    promote_feedback,
    summary,
    write_golden,
)
from feedback.langfuse_sync import (
    LangfuseNotConfigured,
    feedback_item,
    golden_item,
    push_dataset,
    push_scores,
)
from knowledge.config import KnowledgeConfig
from knowledge.index import IndexStore
from playbooks.admin import AdminContext, AdminReply, handle_admin_command

err = Console(stderr=True)
out = Console()

feedback_app = typer.Typer(help="Labelled answers: export them, send them to Langfuse, grow the golden set.",
                           no_args_is_help=True)

DatasetOption = Annotated[Optional[Path], typer.Option(
    "--dataset", help="Golden set (JSONL). Default: DESKMATE_GATE_DATASET, else the bundled sample set.")]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Keep info-level logs on stderr.")]


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


def _quiet(verbose: bool) -> None:
    if not verbose:
        logging.getLogger().setLevel(logging.WARNING)


def _rows(settings: Settings, since: str | None, label: str | None) -> list[dict[str, Any]]:
    try:
        since_at = parse_since(since) if since else None
    except ValueError as exc:
        raise _fail(str(exc), 2) from exc
    if label not in (None, "up", "down"):
        raise _fail("--label must be up or down", 2)
    db = get_database(settings.database_url_resolved())
    db.migrate()

    async def fetch() -> list[dict[str, Any]]:
        try:
            return await labelled_rows(db, since=since_at, label=label)
        finally:
            await db.async_engine.dispose()

    return asyncio.run(fetch())


# --- deskmate feedback ... -------------------------------------------------------------------------------
@feedback_app.command("export")
def export_command(
    since: Annotated[Optional[str], typer.Option(help="Only votes given (or changed) since DATE (YYYY-MM-DD or ISO).")] = None,
    label: Annotated[Optional[str], typer.Option(help="up or down (default: both).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv.")] = "jsonl",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="File to write (default: stdout).")] = None,
) -> None:
    """Labelled answers as an eval dataset: question, passages, answer, citations, release, label, reason."""
    if fmt not in FORMATS:
        raise _fail("--format must be jsonl or csv", 2)
    rows = _rows(get_settings(), since, label)
    writer = write_jsonl if fmt == "jsonl" else write_csv
    if output is None:
        writer(rows, sys.stdout)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        with output.open("w", encoding="utf-8", newline="") as fh:
            writer(rows, fh)
        ups = sum(r["label"] == "up" for r in rows)
        err.print(f"Wrote {len(rows)} labelled answers ({ups} 👍, {len(rows) - ups} 👎) to {output}")


@feedback_app.command("push-scores")
def push_scores_command(
    since: Annotated[Optional[str], typer.Option(help="Only votes since DATE.")] = None,
) -> None:
    """Send every vote to Langfuse as the `user_feedback` score on its answer's trace (idempotent backfill)."""
    settings = get_settings()
    rows = _rows(settings, since, None)
    try:
        result = push_scores(settings, rows)
    except LangfuseNotConfigured as exc:
        raise _fail(str(exc)) from exc
    err.print(f"Scores sent: {result.sent}; without a trace: {result.skipped}; failed: {result.failed}")
    if result.failed:
        raise typer.Exit(1)


@feedback_app.command("push-dataset")
def push_dataset_command(
    name: Annotated[str, typer.Argument(help="Langfuse dataset name (created if missing).")],
    since: Annotated[Optional[str], typer.Option(help="Only votes since DATE.")] = None,
    label: Annotated[Optional[str], typer.Option(help="up or down (default: both).")] = None,
    golden: Annotated[Optional[Path], typer.Option(help="Push this golden set instead of labelled answers.")] = None,
) -> None:
    """Push labelled answers (or a golden set) to a Langfuse dataset; re-running updates the same items."""
    settings = get_settings()
    if golden is not None:
        try:
            items = [golden_item(i) for i in load_golden(golden)]
        except GoldenError as exc:
            raise _fail(str(exc)) from exc
        description = f"Deskmate golden set {golden.name}"
    else:
        items = [feedback_item(r) for r in _rows(settings, since, label)]
        description = "Deskmate answers labelled 👍/👎 by employees"
    try:
        result = push_dataset(settings, name, items, description=description)
    except LangfuseNotConfigured as exc:
        raise _fail(str(exc)) from exc
    err.print(f"Dataset '{name}': {result.sent} items pushed, {result.failed} failed")
    if result.failed:
        raise typer.Exit(1)


@feedback_app.command("promote-golden")
def promote_golden_command(
    into: Annotated[Optional[Path], typer.Option(
        help="Golden set to append to (default: DATA_DIR/golden/promoted.jsonl).")] = None,
    since: Annotated[Optional[str], typer.Option(help="Only votes since DATE.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the new items instead of writing them.")] = False,
) -> None:
    """👍 answers become reference answers, 👎 questions regression items (to review) in a golden set."""
    settings = get_settings()
    target = into or settings.data_dir / "golden" / "promoted.jsonl"
    existing: list[GoldenItem] = []
    if target.is_file() and target.stat().st_size:
        try:
            existing = load_golden(target)
        except GoldenError as exc:
            raise _fail(f"{target} is not a valid golden set:\n{exc}") from exc
    promotion = promote_feedback(_rows(settings, since, None), existing)
    if dry_run:
        for item in promotion.added:
            print(json.dumps(item.to_dict(), ensure_ascii=False))
    elif promotion.added:
        write_golden(target, promotion.added, append=True)
    ups = sum(i.origin == "feedback:up" for i in promotion.added)
    skipped = ", ".join(f"{n} {why}" for why, n in promotion.skipped.items()) or "none"
    err.print(f"{'Would add' if dry_run else 'Added'} {len(promotion.added)} items to {target}: {ups} from 👍, "
              f"{len(promotion.added) - ups} 👎 regression items (needs_review); skipped: {skipped}")


@feedback_app.command("validate-golden")
def validate_golden_command(
    dataset: Annotated[Path, typer.Argument(help="Golden set (JSONL).")],
    kb: Annotated[Optional[str], typer.Option(help="Also check doc ids against this knowledge base's index.")] = None,
) -> None:
    """Check a golden set's format (and, with --kb, that its doc ids exist in the index)."""
    try:
        items = load_golden(dataset)
    except GoldenError as exc:
        raise _fail(f"{len(exc.problems)} problem(s):\n" + "\n".join(exc.problems)) from exc
    if kb:
        data = IndexStore(KnowledgeConfig.from_settings(get_settings())).load(kb)
        problems = check_doc_ids(items, {c.doc_id for c in data.chunks})
        if problems:
            raise _fail("\n".join(problems))
    counts = summary(items)
    out.print(f"{dataset}: valid — " + ", ".join(f"{v} {k}" for k, v in counts.items()))


# --- deskmate eval run | compare | gate ------------------------------------------------------------------
@contextmanager
def _progress(enabled: bool) -> Iterator[ProgressCallback]:
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, disable=not enabled, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def update(release: str, done: int, total: int) -> None:
            if release not in tasks:
                tasks[release] = bar.add_task(f"Evaluating {release}", total=total)
            bar.update(tasks[release], completed=done)

        yield update


def _evaluate(settings: Settings, dataset: Path, releases: list[str | None], *, judge: bool | None,
              concurrency: int | None, show_progress: bool, kind: str = "run") -> list[EvalResult]:
    async def main() -> list[EvalResult]:
        db = get_database(settings.database_url_resolved())
        try:
            db.migrate()
            async with evaluation_answerer(settings) as answerer:
                with _progress(show_progress) as progress:
                    return await run_eval(answerer, settings, dataset, releases, judge=judge,
                                          concurrency=concurrency, progress=progress, kind=kind, db=db)
        finally:
            await db.async_engine.dispose()

    try:
        return asyncio.run(main())
    except (EvalError, GoldenError) as exc:
        raise _fail(str(exc)) from exc


def _dataset(settings: Settings, dataset: Path | None) -> Path:
    path = dataset or gate_dataset(settings)
    if not path.is_file():
        raise _fail(f"{path} does not exist", 2)
    return path


def _write_html(path: Path | None, results: list[EvalResult]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(results), encoding="utf-8")
    err.print(f"HTML report: {path}")


def eval_run_command(
    dataset: DatasetOption = None,
    release: Annotated[Optional[str], typer.Option(help="Release to evaluate (default: the active one).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full result as JSON.")] = False,
    html_file: Annotated[Optional[Path], typer.Option("--html", help="Also write an HTML report here.")] = None,
    judge: Annotated[Optional[bool], typer.Option("--judge/--no-judge", help="LLM judge (default: DESKMATE_EVAL_JUDGE; needs a key).")] = None,
    concurrency: Annotated[Optional[int], typer.Option(help="Items at once (default: DESKMATE_EVAL_CONCURRENCY).")] = None,
    verbose: VerboseOption = False,
) -> None:
    """Run a release's real pipeline over a golden set: retrieval, citations, correctness, abstention, latency, cost."""
    settings = get_settings()
    _quiet(verbose)
    path = _dataset(settings, dataset)
    (result,) = _evaluate(settings, path, [release], judge=judge, concurrency=concurrency,
                          show_progress=not as_json and sys.stderr.isatty())
    if as_json:
        print(to_json([result]))
    else:
        print_run(out, result)
    _write_html(html_file, [result])


def eval_compare_command(
    a: Annotated[str, typer.Argument(help="Baseline release (A).")],
    b: Annotated[str, typer.Argument(help="Release compared with it (B).")],
    dataset: DatasetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print both runs and the comparison as JSON.")] = False,
    html_file: Annotated[Optional[Path], typer.Option("--html", help="Also write an HTML report here.")] = None,
    judge: Annotated[Optional[bool], typer.Option("--judge/--no-judge")] = None,
    concurrency: Annotated[Optional[int], typer.Option()] = None,
    verbose: VerboseOption = False,
) -> None:
    """Run two releases on the same items: metrics side by side and per-item wins and losses of B against A."""
    settings = get_settings()
    _quiet(verbose)
    path = _dataset(settings, dataset)
    ra, rb = _evaluate(settings, path, [a, b], judge=judge, concurrency=concurrency,
                       show_progress=not as_json and sys.stderr.isatty())
    if as_json:
        print(to_json([ra, rb]))
    else:
        print_comparison(out, ra, rb)
    _write_html(html_file, [ra, rb])


def eval_gate_command(
    candidate: Annotated[str, typer.Argument(help="The release to promote.")],
    promote: Annotated[bool, typer.Option("--promote", help="Promote it when the gate passes (audited).")] = False,
    force: Annotated[bool, typer.Option("--force", help="With --promote: promote even if the gate refuses (audited).")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    html_file: Annotated[Optional[Path], typer.Option("--html", help="Also write an HTML report here.")] = None,
    verbose: VerboseOption = False,
) -> None:
    """The promotion quality gate: evaluate the active release and CANDIDATE on the gate's golden set, store both
    runs (what `promote` then checks) and say whether CANDIDATE is worse beyond the tolerances."""
    settings = get_settings()
    _quiet(verbose)
    _dataset(settings, None)

    async def main() -> tuple[GateReport, AdminReply | None]:
        db = get_database(settings.database_url_resolved())
        try:
            db.migrate()
            async with evaluation_answerer(settings) as answerer:
                with _progress(not as_json and sys.stderr.isatty()) as progress:
                    report = await evaluate_gate(answerer, settings, candidate, progress=progress, db=db)
            reply = None
            if promote:
                reply = await _promote(settings, candidate, force)
            return report, reply
        finally:
            await db.async_engine.dispose()

    try:
        report, reply = asyncio.run(main())
    except EvalError as exc:
        raise _fail(str(exc)) from exc
    assert report.active is not None and report.candidate is not None  # evaluated now: both runs are there
    if as_json:
        print(json.dumps({"ok": report.ok, "message": report.message, "dataset": str(gate_dataset(settings)),
                          "regressions": [r.__dict__ | {"text": r.text} for r in report.regressions],
                          "active": report.active.to_dict(items=False), "candidate": report.candidate.to_dict(items=False),
                          "promotion": reply and {"ok": reply.ok, "text": reply.text}}, indent=1, default=str))
    else:
        print_comparison(out, report.active, report.candidate)
        style = "green" if report.ok else "red"
        out.print(f"[bold {style}]Gate {'passed' if report.ok else 'refused'}:[/bold {style}] {report.message}")
        if reply is not None:
            out.print(reply.text)
    _write_html(html_file, [report.active, report.candidate])
    if promote and reply is not None and not reply.ok:
        raise typer.Exit(1)
    if not promote and not report.ok:
        raise typer.Exit(1)


async def _promote(settings: Settings, name: str, force: bool) -> AdminReply:
    """Promote through the admin command handler, so the CLI promotion is audited like a chat one."""
    deps = AdminContext(settings=settings, db=get_database(settings.database_url_resolved()))
    return await handle_admin_command(deps, cli_actor(), f"promote {name}{' --force' if force else ''}")
