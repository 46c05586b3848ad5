"""`deskmate admin …`, `deskmate release …` and `deskmate rollback`.

The operator at a shell is the admin ``cli:<OS user>`` (shell access to a Deskmate host is the authorisation);
every command goes through the same handler and audit log as ``/deskmate`` in Slack.
"""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table

from bot.core.settings import Settings, get_settings
from feedback.db import get_database
from feedback.models import Alert, AuditEntry, Release
from knowledge.config import KnowledgeConfig
from knowledge.index import IndexNotFound, IndexStore
from playbooks import audit
from playbooks.admin import AdminActor, AdminContext, handle_admin_command
from playbooks.alerts import recent_alerts
from playbooks.releases import ReleaseError, create_release, list_releases
from feedback.releases import active_release, get_release
from playbooks.reports import release_line
from playbooks.status import ReleaseFigures, format_metrics, release_figures

out = Console()
err = Console(stderr=True)
T = TypeVar("T")

admin_app = typer.Typer(help="Incident commands — the same as /deskmate in Slack, run as cli:<your OS user>.",
                        no_args_is_help=True)
release_app = typer.Typer(help="Releases: immutable bundles of prompt, model, retrieval settings and index version.",
                          no_args_is_help=True)


def cli_actor() -> AdminActor:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry (containers)
        user = "unknown"
    return AdminActor(platform="cli", user_id=user, channel=socket.gethostname(), display_name="")


def run_async(fn: Callable[[AdminContext], Awaitable[T]]) -> T:
    """Run ``fn(context)`` against the settings and the (migrated) database, then close the database.

    Nothing here needs Redis (or a retriever): admin commands work with Redis down.
    """

    async def main() -> T:
        settings = get_settings()
        db = get_database(settings.database_url_resolved())
        db.migrate()
        try:
            return await fn(AdminContext(settings=settings, db=db))
        finally:
            await db.aclose()

    return asyncio.run(main())


def admin(text: str) -> None:
    """Run one admin command as the CLI actor and print the reply; exit 1 when it did not succeed."""
    reply = run_async(lambda rt: handle_admin_command(rt, cli_actor(), text))
    out.print(Markdown(reply.text))
    if not reply.ok:
        raise typer.Exit(1)


# --- deskmate admin ------------------------------------------------------------------------------------
@admin_app.command("status")
def status_command() -> None:
    """Active release, kill-switches, last hour's answers, votes, fallback and error rates, spend today."""
    admin("status")


@admin_app.command("kill")
def kill_command(
    mode: Annotated[str, typer.Argument(help="on | off | retrieval-only")],
    channel: Annotated[Optional[str], typer.Argument(help="slack:C0123ABCD, teams:19:…; omit for everywhere")] = None,
    reason: Annotated[str, typer.Option(help="Why (shown in status and the audit log).")] = "",
) -> None:
    """Set the kill-switch, everywhere or for one channel."""
    admin(" ".join(["kill", mode, channel or "global", reason]).strip())


@admin_app.command("releases")
def releases_command() -> None:
    """Releases with their feedback and eval results, and recent changes."""
    admin("releases")


@admin_app.command("rollback")
def admin_rollback_command(name: Annotated[Optional[str], typer.Argument()] = None) -> None:
    """Back to the previously active release, or to NAME."""
    admin(f"rollback {name or ''}".strip())


@admin_app.command("promote")
def admin_promote_command(name: str, force: Annotated[bool, typer.Option("--force")] = False) -> None:
    """Make NAME the active release (asks the quality gate; --force overrides it, audited)."""
    admin(f"promote {name}{' --force' if force else ''}")


@admin_app.command("budget")
def budget_command() -> None:
    """LLM spend today (UTC) against the daily cap."""
    admin("budget")


@admin_app.command("grant")
def grant_command(user: Annotated[str, typer.Argument(help="slack:U0123ABCD or teams:<AAD object id>")],
                  note: Annotated[str, typer.Option()] = "") -> None:
    """Let a chat user run admin commands (stored in the database)."""
    admin(f"grant {user} {note}".strip())


@admin_app.command("revoke")
def revoke_command(user: str) -> None:
    """Remove a chat user from the admin table."""
    admin(f"revoke {user}")


@admin_app.command("admins")
def admins_command() -> None:
    """Who may run admin commands."""
    admin("admins")


@admin_app.command("audit")
def audit_command(
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many entries (newest first).")] = 50,
    actor: Annotated[Optional[str], typer.Option(help="Only this actor, e.g. slack:U0123ABCD.")] = None,
) -> None:
    """Print the audit log: who did what, where, before → after, when — allowed or refused."""

    async def fetch(rt: AdminContext) -> list[AuditEntry]:
        async with rt.db.asession() as session:
            return await audit.recent(session, limit, actor=actor)

    entries = run_async(fetch)
    table = Table(title="Audit log (newest first)", show_lines=False)
    for column in ("when (UTC)", "who", "where", "command", "allowed", "before", "after", "detail"):
        table.add_column(column, overflow="fold")
    for e in entries:
        table.add_row(e.at.strftime("%Y-%m-%d %H:%M:%S"), e.actor, e.where, e.command,
                      "yes" if e.allowed else "[red]REFUSED[/red]", e.before, e.after, e.detail)
    out.print(table)


@admin_app.command("alerts")
def alerts_command(limit: Annotated[int, typer.Option("--limit", "-n")] = 20) -> None:
    """Recent alerts (budget, 👎 rate, fallback rate, error rate)."""
    alerts: list[Alert] = run_async(lambda rt: recent_alerts(rt.db, limit))
    table = Table(title="Alerts (newest first)")
    for column in ("when (UTC)", "kind", "posted", "message"):
        table.add_column(column, overflow="fold")
    for a in alerts:
        table.add_row(a.at.strftime("%Y-%m-%d %H:%M:%S"), a.kind, "yes" if a.delivered else "no", a.message)
    out.print(table)


# --- deskmate release ----------------------------------------------------------------------------------
def parse_index_version(value: str | None, settings: Settings, kb: str) -> int | None:
    """``latest`` → the newest built version (pinned); N → N, which must be kept."""
    if value is None:
        return None
    store = IndexStore(KnowledgeConfig.from_settings(settings))
    try:
        if value.strip().lower() == "latest":
            return store.resolve_version(kb, None)
        return store.resolve_version(kb, int(value))
    except ValueError as exc:
        raise typer.BadParameter("--index-version is a number or 'latest'") from exc
    except IndexNotFound as exc:
        raise typer.BadParameter(str(exc)) from exc


@release_app.command("create")
def release_create_command(
    name: str,
    model: Annotated[Optional[str], typer.Option(help="Claude model id.")] = None,
    prompt_file: Annotated[Optional[Path], typer.Option(exists=True, dir_okay=False, help="System prompt text.")] = None,
    prompt_version: Annotated[Optional[str], typer.Option(help="Default: a hash of the prompt file.")] = None,
    k: Annotated[Optional[int], typer.Option("--k", help="Passages given to the model.")] = None,
    candidates: Annotated[Optional[int], typer.Option(help="Candidates per retriever before fusion.")] = None,
    min_score: Annotated[Optional[float], typer.Option(
        help="Best-passage cosine below which: not found (only where there is no calibration).")] = None,
    not_found_level: Annotated[Optional[float], typer.Option(
        help="Calibrated 'not found': the best passage must be closer than this share (0-1) of unrelated "
             "questions.")] = None,
    dense_weight: Annotated[Optional[float], typer.Option(help="Weighted fusion: share of the dense score.")] = None,
    crosslingual: Annotated[Optional[bool], typer.Option(
        "--crosslingual/--no-crosslingual",
        help="Search questions not in the documents' language with the cross-lingual vectors.")] = None,
    thread_merge: Annotated[Optional[str], typer.Option(
        help="How a thread's message and its history-carrying query are merged: confidence (each ranking weighted "
             "by its lead) or rrf (reciprocal ranks, the merge of releases made before it).")] = None,
    max_tokens: Annotated[Optional[int], typer.Option()] = None,
    temperature: Annotated[Optional[float], typer.Option()] = None,
    index_version: Annotated[Optional[str], typer.Option(help="N or 'latest' (default: the base release's).")] = None,
    knowledge_set: Annotated[Optional[list[str]], typer.Option(help="Limit to these knowledge sets (repeatable).")] = None,
    query_rewrite: Annotated[Optional[str], typer.Option(
        help="The search query: auto, llm, offline or off (see DESKMATE_QUERY_REWRITE).")] = None,
    rewrite_model: Annotated[Optional[str], typer.Option(help="Model of the query rewrite.")] = None,
    base: Annotated[Optional[str], typer.Option(help="Copy this release (default: the active one).")] = None,
    notes: Annotated[str, typer.Option()] = "",
) -> None:
    """Create a release (not active until `release promote`)."""
    settings = get_settings()
    actor = cli_actor()
    changes: dict[str, Any] = {"notes": notes or None}
    if prompt_file is not None:
        template = prompt_file.read_text(encoding="utf-8")
        if not template.strip():
            raise typer.BadParameter("the prompt file is empty")
        changes["prompt_template"] = template
        changes["prompt_version"] = prompt_version or "sha-" + hashlib.sha256(template.encode()).hexdigest()[:10]
    elif prompt_version:
        changes["prompt_version"] = prompt_version
    for key, value in (("model", model), ("retrieval_k", k), ("retrieval_candidates", candidates),
                       ("min_score", min_score), ("not_found_level", not_found_level),
                       ("max_tokens", max_tokens), ("temperature", temperature),
                       ("query_rewrite", query_rewrite), ("rewrite_model", rewrite_model)):
        if value is not None:
            changes[key] = value
    if knowledge_set:
        changes["knowledge_sets"] = list(knowledge_set)

    async def create(rt: AdminContext) -> Release:
        async with rt.db.asession() as session:
            source = await get_release(session, base) if base else None
            kb = source.kb if source else settings.kb_name
            if index_version is not None:
                changes["index_version"] = parse_index_version(index_version, settings, kb)
            if thread_merge is not None and thread_merge not in ("confidence", "rrf"):
                raise typer.BadParameter("--thread-merge is confidence or rrf")
            if dense_weight is not None or crosslingual is not None or thread_merge is not None:
                # the base's other fusion settings are kept
                fusion_base = source or await active_release(session, settings)
                fusion = dict(fusion_base.fusion)
                if dense_weight is not None:
                    fusion.update(method="weighted", dense_weight=dense_weight)
                if crosslingual is not None:
                    fusion["crosslingual"] = crosslingual
                if thread_merge is not None:
                    fusion["alternative_merge"] = thread_merge
                changes["fusion"] = fusion
            try:
                release = await create_release(session, settings, name, actor=actor.key, base=base, **changes)
            except ReleaseError as exc:
                await audit.record(session, actor=actor.label, platform="cli", where=actor.where,
                                   command=f"release create {name}", allowed=True, detail=f"error: {exc}")
                raise
            await audit.record(session, actor=actor.label, platform="cli", where=actor.where,
                               command=f"release create {name}", allowed=True, after=name,
                               detail=f"model={release.model} prompt={release.prompt_version} "
                                      f"index={release.index_version} k={release.retrieval_k}")
            return release

    try:
        release = run_async(create)
    except ReleaseError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    out.print(Markdown(f"Created {release_line(release)}. Activate it with `deskmate release promote {name}`."))


@release_app.command("list")
def release_list_command() -> None:
    """Releases with their feedback (👍/👎), answers and latest eval metrics; ▶ marks the active one."""

    async def fetch(rt: AdminContext) -> tuple[Release, list[Release], dict[str, ReleaseFigures]]:
        async with rt.db.asession() as session:
            return (await active_release(session, rt.settings), await list_releases(session),
                    await release_figures(session))

    current, releases, figures = run_async(fetch)
    table = Table(title="Releases")
    for column in ("", "name", "model", "prompt", "index", "k", "min score", "answers", "👍", "👎", "eval",
                   "created (UTC)", "by"):
        table.add_column(column, overflow="fold")
    for r in releases:
        fig = figures.get(r.name) or ReleaseFigures()
        table.add_row("▶" if r.name == current.name else "", r.name, r.model, r.prompt_version,
                      "latest" if r.index_version is None else str(r.index_version), str(r.retrieval_k),
                      f"{r.min_score:g}", str(fig.answers), str(fig.up), str(fig.down),
                      format_metrics(fig.eval_metrics), r.created_at.strftime("%Y-%m-%d %H:%M"), r.created_by)
    out.print(table)


@release_app.command("promote")
def release_promote_command(name: str, force: Annotated[bool, typer.Option("--force")] = False) -> None:
    """Make NAME the active release (asks the quality gate; --force overrides it, audited)."""
    admin(f"promote {name}{' --force' if force else ''}")


@release_app.command("canary")
def release_canary_command(
    name: Annotated[str, typer.Argument(help="The candidate release; or `status`, or `stop`.")],
    share: Annotated[Optional[float], typer.Option(help="Percent of conversations (shadow: of questions sampled).")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option(help="A channel that never gets the candidate "
                                                               "(slack:C0123, teams:19:…); repeatable.")] = None,
    min_answers: Annotated[Optional[int], typer.Option(help="Candidate answers before a promotion "
                                                            "(default DESKMATE_CANARY_MIN_ANSWERS).")] = None,
    max_hours: Annotated[Optional[float], typer.Option(help="End inconclusive after this long "
                                                           "(default DESKMATE_CANARY_MAX_HOURS).")] = None,
    shadow: Annotated[bool, typer.Option("--shadow", help="Answer in the background only; never shown.")] = False,
    budget: Annotated[Optional[float], typer.Option(help="Shadow: USD to spend on background answers.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Start even if the quality gate refuses (audited).")] = False,
    reason: Annotated[str, typer.Option(help="With `stop`: why (audited).")] = "",
) -> None:
    """Canary NAME: it answers a share of conversations, and is rolled back or promoted automatically
    (`deskmate release canary status` shows the figures; `deskmate release canary stop` ends it)."""
    if name in ("status", "stop"):
        admin(f"canary {name} {reason}".strip())
        return
    words = ["canary", name]
    if share is not None:
        words += ["--share", f"{share:g}"]
    for channel in exclude or []:
        words += ["--exclude", channel]
    if min_answers is not None:
        words += ["--min-answers", str(min_answers)]
    if max_hours is not None:
        words += ["--max-hours", f"{max_hours:g}"]
    if shadow:
        words.append("--shadow")
    if budget is not None:
        words += ["--budget", f"{budget:g}"]
    if force:
        words.append("--force")
    admin(" ".join(words))


def rollback_command(name: Annotated[Optional[str], typer.Argument(help="Default: the previous release.")] = None) -> None:
    """Roll back to the previously active release, or to NAME (a pointer change: no rebuild)."""
    admin(f"rollback {name or ''}".strip())


def register(app: typer.Typer) -> None:
    """Add these commands to the `deskmate` app."""
    app.add_typer(admin_app, name="admin")
    app.add_typer(release_app, name="release")
    app.command("rollback")(rollback_command)
