"""`deskmate source list|show NAME|sync NAME|sync --all`: the knowledge sources of DESKMATE_SOURCES_FILE.

The sync itself is :func:`knowledge.connectors.sync.sync_source`, run and recorded by
:func:`playbooks.sources.run_sync` (the worker's schedule uses it too); runs are read back by
:mod:`feedback.sync_runs` (``list`` and ``show``)."""

from __future__ import annotations

import json
from functools import partial
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from bot.core.settings import Settings, get_settings
from bot.embed_jobs import shared_embedding
from feedback.db import Database, get_database
from feedback.models import SyncRun
from feedback.sync_runs import last_runs, recent_runs
from knowledge.connectors.config import SourceConfig, SourcesConfigError, load_sources
from knowledge.connectors.sync import SyncResult, kb_of
from playbooks.sources import run_sync

app = typer.Typer(help="Knowledge sources (DESKMATE_SOURCES_FILE): list, show, sync.", no_args_is_help=True)
err = Console(stderr=True, soft_wrap=True)  # whole lines: errors name a source and a key
out = Console()


def _sources(settings: Settings) -> list[SourceConfig]:
    try:
        return load_sources(settings.sources_file)
    except SourcesConfigError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc


def _database(settings: Settings) -> Database:
    db = get_database(settings.database_url_resolved())
    db.migrate()
    return db


def _run_line(run: SyncRun | None) -> str:
    if run is None:
        return "never synced"
    return (f"{run.status} at {run.started_at:%Y-%m-%d %H:%M} UTC: +{run.added} ~{run.updated} -{run.deleted} "
            f"={run.unchanged}, {len(run.skipped)} skipped, {len(run.errors)} errors, {run.seconds:.1f} s")


@app.command("list")
def list_command(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every source with its kind, knowledge base, set, visibility, schedule and last run."""
    settings = get_settings()
    sources = _sources(settings)
    with _database(settings).session() as session:
        last = last_runs(session)
    if as_json:
        print(json.dumps([{**s.public_settings(), "kb": kb_of(s, settings.kb_name),
                           "last_run": last[s.name].model_dump(mode="json") if s.name in last else None}
                          for s in sources]))
        return
    if not sources:
        out.print(f"No sources declared in {settings.sources_file} (see docs/sources.md).")
        return
    table = Table(title=f"Sources ({settings.sources_file})")
    for column in ("name", "kind", "kb", "knowledge set", "visibility", "schedule", "last run"):
        table.add_column(column)
    for s in sources:
        table.add_row(s.name, s.kind, kb_of(s, settings.kb_name), s.knowledge_set or "(by folder)", s.visibility,
                      s.schedule, _run_line(last.get(s.name)))
    out.print(table)


@app.command("show")
def show_command(
    name: Annotated[str, typer.Argument(help="The source's name.")],
    runs: Annotated[int, typer.Option(help="How many recent runs.")] = 5,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """A source's settings (credentials only as the variable or file that holds them) and its recent runs."""
    settings = get_settings()
    source = next((s for s in _sources(settings) if s.name == name), None)
    if source is None:
        err.print(f"[red]error:[/red] no source named '{name}' in {settings.sources_file}")
        raise typer.Exit(1)
    with _database(settings).session() as session:
        history = recent_runs(session, name, limit=runs)
    if as_json:
        print(json.dumps({"source": {**source.public_settings(), "kb": kb_of(source, settings.kb_name)},
                          "runs": [r.model_dump(mode="json") for r in history]}))
        return
    table = Table(show_header=False, box=None, title=f"Source '{name}'")
    for key, value in {**source.public_settings(), "kb": kb_of(source, settings.kb_name)}.items():
        table.add_row(key, str(value))
    out.print(table)
    if not history:
        out.print("Never synced.")
    for run in history:
        out.print(f"- {_run_line(run)}")
        for s in run.skipped[:10]:
            out.print(f"    skipped {s.get('path')}: {s.get('reason')}")
        for e in run.errors[:10]:
            out.print(f"    [red]error[/red] {e}")


def print_result(result: SyncResult) -> None:
    colour = {"ok": "green", "unchanged": "green", "partial": "yellow"}.get(result.status, "red")
    version = f", index '{result.kb}' version {result.index_version}" if result.index_version else ""
    err.print(f"[bold {colour}]{result.source}[/bold {colour}] ({result.kind}): {result.status}{version} — "
              f"{len(result.added)} added, {len(result.updated)} updated, {len(result.unchanged)} unchanged, "
              f"{len(result.deleted)} deleted, {len(result.skipped)} skipped, {len(result.errors)} errors "
              f"in {result.seconds:.1f} s")
    for s in result.skipped:
        err.print(f"  skipped {s.path}: {s.reason}")
    for e in result.errors:
        err.print(f"  [red]error[/red] {e}")


def sync_sources(settings: Settings, names: list[str] | None, *, trigger: str = "cli",
                 force: bool = False) -> list[SyncResult]:
    """Sync the named sources (None: all), one after the other, each recorded; a failing one never stops the
    others."""
    sources = load_sources(settings.sources_file)
    _database(settings)
    chosen = sources if names is None else [s for s in sources if s.name in names]
    return [run_sync(settings, source, sources, trigger=trigger, force=force,
                     embedding=partial(shared_embedding, settings))  # running workers help embed
            for source in chosen]


def declared_sources(settings: Settings) -> list[SourceConfig]:
    """The sources of DESKMATE_SOURCES_FILE (a broken file is a clear error, exit 2)."""
    return _sources(settings)


def sync_and_print(settings: Settings) -> list[SyncResult]:
    results = sync_sources(settings, None)
    for result in results:
        print_result(result)
    return results


@app.command("sync")
def sync_command(
    name: Annotated[Optional[str], typer.Argument(help="The source to sync.")] = None,
    all_sources: Annotated[bool, typer.Option("--all", help="Sync every source.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Apply a change the change guard would hold (a mass "
                                                        "deletion you intend).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the runs as JSON.")] = False,
) -> None:
    """Sync a source now (incremental: only what changed since its last sync is read and embedded); exit 1 when
    a source failed or was held."""
    settings = get_settings()
    if (name is None) == (not all_sources):
        err.print("[red]error:[/red] name one source, or --all")
        raise typer.Exit(2)
    sources = _sources(settings)
    if name is not None and name not in {s.name for s in sources}:
        err.print(f"[red]error:[/red] no source named '{name}' in {settings.sources_file}")
        raise typer.Exit(1)
    if not sources:
        err.print(f"No sources declared in {settings.sources_file} (see docs/sources.md).")
        return
    results = sync_sources(settings, None if all_sources else [name or ""], force=force)
    if as_json:
        print(json.dumps([r.to_dict() for r in results]))
    else:
        for result in results:
            print_result(result)
    if any(r.status in ("failed", "held") for r in results):
        raise typer.Exit(1)

