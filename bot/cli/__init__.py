"""The `deskmate` command: all of the command line lives in this package, which may import every layer.

This module holds the typer ``app`` (run by the ``deskmate`` script through :mod:`bot.console`), the process commands
(``run``, ``web``, ``worker``, ``chat``) and assembles the others: :mod:`bot.cli.knowledge` (ingest, search,
eval retrieval), :mod:`bot.cli.feedback` (feedback …, eval run|compare|gate), :mod:`bot.cli.playbooks`
(admin …, release …, rollback), :mod:`bot.cli.sources` (source …), :mod:`bot.cli.slack` (slack …) and ``bot.teams.package`` (teams …).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from typing import Annotated, Optional

import typer
from aiohttp.web import AppRunner
from arq.worker import Worker
from rich.console import Console

from bot.cli import feedback as feedback_cli
from bot.cli import knowledge as knowledge_cli
from bot.cli import playbooks as playbooks_cli
from bot.cli import slack as slack_cli
from bot.cli import sources as sources_cli
from bot.core.log import configure_logging, get_logger
from bot.core.settings import Settings, get_settings
from bot.local_chat.terminal import chat_loop
from bot.redis_conn import ensure_embedded_redis, stop_embedded_redis
from bot.runtime import Runtime, build_runtime
from bot.teams import package as teams_package
from bot.web import run_web, serve
from bot.worker import build_worker, run_worker
from feedback.db import get_database
from knowledge.ingest import NoDocuments

log = get_logger(__name__)
err = Console(stderr=True)

app = typer.Typer(help="Deskmate: an internal support assistant for Slack and Teams.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
eval_app = typer.Typer(help="Measure retrieval and answers.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")

app.command("ingest")(knowledge_cli.ingest_command)
app.command("search")(knowledge_cli.search_command)
eval_app.command("retrieval")(knowledge_cli.eval_retrieval_command)
eval_app.command("run")(feedback_cli.eval_run_command)
eval_app.command("compare")(feedback_cli.eval_compare_command)
eval_app.command("gate")(feedback_cli.eval_gate_command)
app.add_typer(feedback_cli.feedback_app, name="feedback")
playbooks_cli.register(app)  # admin …, release …, rollback
app.add_typer(slack_cli.app, name="slack")
app.add_typer(sources_cli.app, name="source")
app.add_typer(teams_package.app, name="teams")


@app.callback()
def main() -> None:
    configure_logging(get_settings())


def prepare(settings: Settings, *, ingest: bool) -> None:
    """Settings fit for the environment; database schema up to date; when asked, the sources of
    DESKMATE_SOURCES_FILE synced, or (when it declares none) the knowledge folder ingested."""
    problems = settings.production_problems()
    if problems:
        for problem in problems:
            err.print(f"[bold red]Refusing to start:[/bold red] {problem}")
        raise typer.Exit(2)
    get_database(settings.database_url_resolved()).migrate()
    if ingest and sources_cli.declared_sources(settings):
        sources_cli.sync_and_print(settings)  # the sources replace the knowledge folder (docs/sources.md)
    elif ingest:
        try:
            report = knowledge_cli.run_ingest(settings.knowledge_dir, settings.kb_name)
        except NoDocuments as exc:  # start anyway: the version in service (if any) keeps answering
            err.print(f"[bold yellow]warning:[/bold yellow] {exc}")
        else:
            knowledge_cli.print_report(report)


@contextlib.asynccontextmanager
async def local_services(settings: Settings, *, web: bool, worker: bool) -> AsyncIterator[Runtime]:
    """Embedded Redis (when no URL is set), and in this process a worker and/or the web server."""
    redis_proc = ensure_embedded_redis(settings)
    rt = await build_runtime(settings, worker=False)
    runner: AppRunner | None = None
    worker_obj: Worker | None = None
    worker_task: asyncio.Task[None] | None = None
    try:
        if worker:
            worker_obj = build_worker(settings, handle_signals=False)
            worker_task = asyncio.create_task(worker_obj.main())
        if web:
            runner, _ = await serve(settings, runtime=rt)
        yield rt
    finally:
        if runner is not None:
            await runner.cleanup()
        if worker_obj is not None:
            await worker_obj.close()
        if worker_task is not None:
            worker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await worker_task
        await rt.aclose()
        stop_embedded_redis(redis_proc)


@app.command()
def run(
    ingest: Annotated[bool, typer.Option(help="Sync DESKMATE_SOURCES_FILE's sources first, or ingest DESKMATE_KNOWLEDGE_DIR when it declares none (incremental).")] = True,
) -> None:
    """Everything for local use in one process: embedded Redis, the web server (chat page) and a worker."""
    settings = get_settings()
    prepare(settings, ingest=ingest)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with local_services(settings, web=True, worker=True):
            err.print(f"\n[bold green]Deskmate is running.[/bold green] Chat at "
                      f"[link]http://{settings.web_host}:{settings.web_port}/chat[/link]  (Ctrl-C to stop)\n")
            await stop.wait()

    asyncio.run(main())


@app.command()
def web() -> None:
    """The web process (Procfile `web`): adapters, health, local chat."""
    settings = get_settings()
    prepare(settings, ingest=False)
    asyncio.run(run_web(settings))


@app.command()
def worker() -> None:
    """The worker process (Procfile `worker`): answers questions from the queue."""
    settings = get_settings()
    prepare(settings, ingest=False)
    run_worker(settings)


@app.command()
def chat(
    question: Annotated[Optional[list[str]], typer.Option("--question", "-q", help="Ask and exit (repeatable).")] = None,
    with_worker: Annotated[bool, typer.Option(help="Run a worker in this process.")] = True,
    ingest: Annotated[bool, typer.Option(help="Sync DESKMATE_SOURCES_FILE's sources first, or ingest DESKMATE_KNOWLEDGE_DIR when it declares none (incremental).")] = True,
) -> None:
    """Chat in the terminal, through the same queue and worker as Slack and Teams."""
    settings = get_settings()
    prepare(settings, ingest=ingest)

    async def main() -> int:
        async with local_services(settings, web=False, worker=with_worker) as rt:
            return await chat_loop(rt, question)

    raise typer.Exit(asyncio.run(main()))
