"""Markdown renderings of the incident figures: ``status``, ``budget``, ``releases``, ``audit``.

The admin command handler replies with these in chat; the CLI prints the same figures as tables.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel.ext.asyncio.session import AsyncSession

from bot.core.settings import Settings
from feedback.models import AuditEntry, Release, Switch
from playbooks.canary import running_canary
from playbooks.killswitch import GLOBAL_SCOPE, Mode, is_expired, list_switches
from playbooks.releases import list_releases, release_history
from feedback.releases import active_release
from playbooks.status import (
    ReleaseFigures,
    day_start,
    downvotes_over_last,
    format_metrics,
    next_reset,
    pct,
    release_figures,
    spend_today,
    utc_now,
    window_stats,
)
from playbooks.targets import scope_label


def hhmm(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC") if at else "—"


def release_line(release: Release) -> str:
    index = f"index v{release.index_version}" if release.index_version is not None else "latest index"
    rewrite = f" ({release.rewrite_model})" if release.query_rewrite in ("auto", "llm") else ""
    return (f"`{release.name}` — {release.model}, prompt {release.prompt_version}, {index}, k={release.retrieval_k}, "
            f"{_not_found(release)}, query {release.query_rewrite}{rewrite}")


def _not_found(release: Release) -> str:
    if release.not_found_level is None:
        return f"not found below cosine {release.min_score:g}"
    return f"not found below relevance {release.not_found_level:g}"


def switch_line(row: Switch, now: datetime | None = None, *, slack_links: bool = False) -> str:
    who = "budget guard" if row.automatic else row.set_by or "?"
    expired = " (expired at midnight UTC; cleared at the next answer)" if is_expired(row, now) else ""
    reason = f" — {row.reason}" if row.reason else ""
    return f"{scope_label(row.scope, slack_links=slack_links)}: **{row.mode}** (by {who}, {hhmm(row.set_at)}){reason}{expired}"


async def budget_text(session: AsyncSession, settings: Settings) -> str:
    now = utc_now()
    spent = await spend_today(session, now)
    reset = next_reset(now)
    left = reset - now
    resets = f"resets at 00:00 UTC (in {int(left.total_seconds() // 3600)}h {int(left.total_seconds() % 3600 // 60)}m)"
    cap = settings.daily_budget_usd
    if cap is None:
        return f"**Spend today:** ${spent:.2f} — no daily cap set (`DESKMATE_DAILY_BUDGET_USD`); {resets}"
    share = spent / cap if cap > 0 else 1.0
    line = f"**Spend today:** ${spent:.2f} of ${cap:.2f} ({share:.0%}); {resets}"
    row = await session.get(Switch, GLOBAL_SCOPE)
    if spent >= cap:
        if row is not None and row.automatic and not is_expired(row, now):
            line += "\n- Over the cap: the budget guard switched Deskmate to **retrieval-only** (no LLM calls) until midnight UTC."
        elif row is None or Mode(row.mode) == Mode.ON:
            line += "\n- Over the cap, but an admin turned the LLM back on for today."
        else:
            line += f"\n- Over the cap; the global switch is **{row.mode}** (set by {row.set_by})."
    return line


async def status_text(session: AsyncSession, settings: Settings, *, slack_links: bool = False) -> str:
    now = utc_now()
    release = await active_release(session, settings)
    history = await release_history(session, 1)
    since = ""
    if history:
        ev = history[0]
        since = f"\n  active since {hhmm(ev.at)} ({ev.action} by {ev.actor}{', FORCED past the gate' if ev.forced else ''})"
    switches = await list_switches(session)
    hour = await window_stats(session, now - timedelta(hours=1))
    down, rated = await downvotes_over_last(session, settings.alert_downvote_window)
    lines = [
        "**Deskmate status**\n",
        f"- **Release:** {release_line(release)}{since}",
        "- **Kill-switch:** " + ("on everywhere (no switches set)" if not switches else "switches set:"),
    ]
    for row in switches:
        lines.append(f"  - {switch_line(row, now, slack_links=slack_links)}")
    canary = await running_canary(session)
    if canary is not None:
        what = "of questions also answered in the background (shadow)" if canary.mode == "shadow" else \
            "of conversations"
        lines.append(f"- **Canary:** `{canary.candidate}` on {canary.share:g}% {what} since {hhmm(canary.started_at)} "
                     f"(by {canary.started_by}); figures and test: `canary status`")
    lines += [
        f"- **Last hour:** {hour.total} questions, {hour.answered} answered, {hour.maintenance} maintenance replies, "
        f"{hour.errors} errors ({pct(hour.errors, hour.total)})",
        f"- **LLM fallback rate (last hour):** {pct(hour.fallbacks, hour.llm_answers)} "
        f"({hour.fallbacks} of {hour.llm_answers} LLM answers)",
        f"- **Votes (last hour):** 👍 {hour.up} / 👎 {hour.down}; last {rated} rated answers: "
        f"👎 {pct(down, rated)}",
        "- " + (await budget_text(session, settings)).replace("\n- ", "\n  - "),
    ]
    return "\n".join(lines)


def release_row_text(release: Release, figures: ReleaseFigures | None, active: bool) -> str:
    fig = figures or ReleaseFigures()
    marker = "▶ " if active else ""
    votes = f"{fig.answers} answers, 👍 {fig.up} / 👎 {fig.down}"
    evals = f"eval: {format_metrics(fig.eval_metrics)}" if fig.eval_metrics else "no eval run"
    return f"{marker}{release_line(release)}\n  created {hhmm(release.created_at)} by {release.created_by}; {votes}; {evals}"


async def releases_text(session: AsyncSession, settings: Settings, limit: int = 10) -> str:
    current = await active_release(session, settings)
    releases = await list_releases(session)
    figures = await release_figures(session)
    shown = releases[-limit:]
    lines = [f"**Releases** (newest last; ▶ = active; {len(releases)} in all)\n"]
    lines += [f"- {release_row_text(r, figures.get(r.name), r.name == current.name)}" for r in shown]
    history = await release_history(session, 5)
    if history:
        lines.append("\n**Recent changes**\n")
        for ev in history:
            forced = " (forced)" if ev.forced else ""
            lines.append(f"- {hhmm(ev.at)} {ev.action}{forced}: {ev.previous or '—'} → `{ev.release_name}` by {ev.actor}")
    lines.append("\nRoll back with `rollback` (to the previous release) or `rollback NAME`.")
    return "\n".join(lines)


def audit_text(entries: list[AuditEntry]) -> str:
    if not entries:
        return "The audit log is empty."
    lines = ["**Audit log** (newest first)\n"]
    for e in entries:
        verdict = "" if e.allowed else " — **refused**"
        change = f": {e.before} → {e.after}" if (e.before or e.after) and e.before != e.after else ""
        detail = f" ({e.detail})" if e.detail else ""
        lines.append(f"- {hhmm(e.at)} {e.actor} in {e.where}: `{e.command}`{verdict}{change}{detail}")
    return "\n".join(lines)


__all__ = ["audit_text", "budget_text", "day_start", "release_line", "releases_text", "status_text", "switch_line"]
