"""The one admin command handler behind Slack's ``/deskmate …``, Teams' ``@Deskmate admin …`` and ``deskmate admin``.

Adapters build an :class:`AdminActor` from the platform's payload and pass the command text as typed; the reply
is Markdown for the adapter to render. Needs only the settings and the database (:class:`AdminDeps`: the bot's
runtime has both; the CLI and the dashboard pass an :class:`AdminContext`), so it runs in the web process within
a slash command's 3 s.

Every command that shows or changes something is written to the audit log, allowed or refused — who, where,
what, before, after. ``help`` (and an unknown command, which gets the help) changes nothing and shows nothing
private, so it is open to everyone and not audited.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.core.log import get_logger
from bot.core.settings import Settings
from feedback.db import Database
from feedback.models import Admin, Switch
from playbooks import audit
from playbooks.canary import CanaryError, CanaryOptions, canary_markdown, canary_view, end_canary, publish, \
    running_canary, start_canary
from playbooks.killswitch import parse_mode, set_mode
from playbooks.releases import GateRefused, ReleaseError, promote, rollback
from feedback.releases import get_release
from playbooks.reports import audit_text, budget_text, release_line, releases_text, status_text
from playbooks.targets import PLATFORMS, TargetError, looks_like_target, resolve_target, resolve_user

log = get_logger(__name__)

CLI_PLATFORM = "cli"


class AdminDeps(Protocol):
    """What the handler uses: the settings (admins, messages) and the database (state, audit log)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def db(self) -> Database: ...


@dataclass(frozen=True)
class AdminContext:
    """The plain :class:`AdminDeps` (the CLI and the dashboard build one; the bot's runtime also qualifies)."""

    settings: Settings
    db: Database


@dataclass
class AdminActor:
    """Who is running a command, and where: ``platform`` is slack | teams | local | cli."""

    platform: str
    user_id: str
    channel: str
    display_name: str = ""

    @property
    def key(self) -> str:
        return f"{self.platform}:{self.user_id}"

    @property
    def label(self) -> str:
        return f"{self.key} ({self.display_name})" if self.display_name else self.key

    @property
    def where(self) -> str:
        return f"{self.platform}:{self.channel}" if self.channel else self.platform


@dataclass
class AdminReply:
    text: str  # Markdown
    ok: bool


HELP = """**Deskmate admin commands**

- `status` — active release, kill-switches, last hour's answers, 👍/👎, fallback and error rates, spend today
- `kill on|off|retrieval-only [#channel|here]` — everywhere by default; `off` = maintenance reply, `retrieval-only` = no LLM (cited excerpts); add a reason after the channel (or after `everywhere`)
- `releases` — releases with their feedback and eval results, and recent changes
- `rollback [NAME]` — back to the previously active release, or to NAME
- `promote NAME [--force]` — make NAME active (`--force` overrides the quality gate; audited)
- `canary NAME [--share 10] [--exclude #channel] [--min-answers N] [--max-hours H] [--force]` — NAME answers that share of conversations; rolled back or promoted automatically (`--shadow [--budget USD]`: answers in the background only, never shown)
- `canary status`, `canary stop [reason]` — the running canary's figures and decision; end it (back to the active release)
- `budget` — LLM spend today against the daily cap
- `audit [N]` — the latest N entries of the audit log
- `admins`, `grant USER`, `revoke USER` — who may run these commands
- `help` — this text

Only admins may run them; every attempt is recorded in the audit log. Runbooks: `playbooks/runbooks/`."""

#: First words the handler understands (adapters can use :func:`is_admin_command` to route).
COMMANDS = ("status", "kill", "releases", "rollback", "promote", "canary", "budget", "audit", "admins", "grant", "revoke", "help")
_MENTION = re.compile(r"^(<at>[^<]*</at>|<@[A-Z0-9]+(\|[^>]*)?>|@deskmate)\s*", re.IGNORECASE)


def split_command(text: str) -> list[str]:
    """Words of a command, without a leading bot mention or ``admin`` (Teams: ``@Deskmate admin status``)."""
    text = (text or "").strip()
    while m := _MENTION.match(text):
        text = text[m.end():]
    words = text.split()
    if words and words[0].lower() in ("admin", "/deskmate", "deskmate"):
        words = words[1:]
    return words


def is_admin_command(text: str) -> bool:
    words = split_command(text)
    return bool(words) and words[0].lower() in COMMANDS


async def is_admin(deps: AdminDeps, actor: AdminActor) -> bool:
    """CLI users are operators (shell access); chat users must be in settings or the ``admin`` table."""
    if actor.platform == CLI_PLATFORM:
        return True
    if not actor.user_id:
        return False
    for entry in deps.settings.admin_user_ids:
        entry = entry.strip()
        prefix, _, rest = entry.partition(":")
        if prefix.lower() in PLATFORMS and rest:  # "slack:U123"; an id like "29:1ab…" has no platform prefix
            if prefix.lower() == actor.platform and rest == actor.user_id:
                return True
        elif entry == actor.user_id:
            return True
    async with deps.db.asession() as session:
        row = (await session.exec(select(Admin).where(Admin.platform == actor.platform,
                                                      Admin.user_id == actor.user_id))).first()
    return row is not None


@dataclass
class Outcome:
    """What a command did, for the reply and the audit entry."""

    text: str
    ok: bool = True
    before: str = ""
    after: str = ""
    detail: str = ""


Command = Callable[[AdminDeps, AdminActor, list[str], AsyncSession], Awaitable[Outcome]]


async def handle_admin_command(deps: AdminDeps, actor: AdminActor, text: str) -> AdminReply:
    """Run one admin command typed by ``actor``; never raises (errors become a reply and an audit entry)."""
    words = split_command(text)
    name = words[0].lower() if words else "help"
    if name not in COMMANDS or name == "help":
        return AdminReply(HELP if name == "help" else f"I don't know `{name}`.\n\n{HELP}", ok=name == "help")
    command_text = " ".join(words)
    if not await is_admin(deps, actor):
        log.warning("admin.refused", actor=actor.key, command=name, where=actor.where)
        async with deps.db.asession() as session:
            await audit.record(session, actor=actor.label, platform=actor.platform, where=actor.where,
                               command=command_text, allowed=False, detail="not an admin")
        return AdminReply(f"Sorry, only Deskmate admins can run `{name}`. This attempt was recorded; "
                          "ask an admin if you need it done.", ok=False)
    handler = _HANDLERS[name]
    try:
        async with deps.db.asession() as session:
            outcome = await handler(deps, actor, words[1:], session)
    except (ReleaseError, CanaryError, TargetError, ValueError) as exc:
        outcome = Outcome(text=str(exc), ok=False, detail=f"error: {exc}")
    except Exception as exc:  # noqa: BLE001 - the admin must get an answer, the log gets the trace
        log.exception("admin.command_failed", command=name)
        outcome = Outcome(text=f"`{name}` failed: {type(exc).__name__}. Details are in the logs.", ok=False,
                          detail=f"failed: {type(exc).__name__}: {exc}")
    log.info("admin.command", actor=actor.key, command=name, ok=outcome.ok, before=outcome.before, after=outcome.after)
    async with deps.db.asession() as session:
        await audit.record(session, actor=actor.label, platform=actor.platform, where=actor.where,
                           command=command_text, allowed=True, before=outcome.before, after=outcome.after,
                           detail=outcome.detail)
    return AdminReply(outcome.text, outcome.ok)


# --- commands ------------------------------------------------------------------------------------------
async def _status(deps: AdminDeps, actor: AdminActor, args: list[str], session: AsyncSession) -> Outcome:
    return Outcome(await status_text(session, deps.settings, slack_links=actor.platform == "slack"))


async def _budget(deps: AdminDeps, actor: AdminActor, args: list[str], session: AsyncSession) -> Outcome:
    return Outcome(await budget_text(session, deps.settings))


async def _releases(deps: AdminDeps, actor: AdminActor, args: list[str], session: AsyncSession) -> Outcome:
    return Outcome(await releases_text(session, deps.settings))


async def _audit(deps: AdminDeps, actor: AdminActor, args: list[str], session: AsyncSession) -> Outcome:
    limit = int(args[0]) if args and args[0].isdigit() else 10
    return Outcome(audit_text(await audit.recent(session, min(limit, 50))))


async def _kill(deps: AdminDeps, actor: AdminActor, args: list[str], session: AsyncSession) -> Outcome:
    if not args:
        raise ValueError("Usage: `kill on|off|retrieval-only [#channel|here] [reason]`")
    mode = parse_mode(args[0])
    rest = args[1:]
    if rest and not looks_like_target(rest[0]):
        # "kill on general" must not silently mean "on everywhere": make the admin say which
        raise TargetError(f"`{rest[0]}` is not a channel I recognise. Name one (`#channel`, `here`, `<#C0123>`) "
                          f"or say `everywhere`, then the reason: `kill {mode.value} everywhere {' '.join(rest)}`")
    word = rest.pop(0) if rest else None
    target = await resolve_target(word, platform=actor.platform, channel=actor.channel, settings=deps.settings)
    reason = " ".join(rest)[:255]
    previous = await session.get(Switch, target.scope)
    was_automatic = bool(previous and previous.automatic)
    before, after = await set_mode(session, target.scope, mode, actor=actor.key, reason=reason)
    effect = {
        "on": "answers normally again",
        "off": "replies with the maintenance message (questions are still recorded)",
        "retrieval-only": "answers with cited excerpts only (no LLM calls)",
    }[mode.value]
    note = ""
    if target.is_global and was_automatic:
        note = "\nThis replaces the budget guard's automatic switch; the guard will not flip it again today."
    if not target.is_global and mode.value != "off":
        note += "\nA channel switch can only make a channel stricter than the global switch (see `status`)."
    change = f"already **{after}**" if before == after else f"{before} → **{after}**"
    return Outcome(f"Kill-switch {target.label}: {change}. Deskmate {effect} from the next message.{note}",
                   before=f"{target.scope}={before}{' (automatic)' if was_automatic else ''}",
                   after=f"{target.scope}={after}", detail=f"reason: {reason}" if reason else "")


async def _rollback(deps: AdminDeps, actor: AdminActor, args: list[str], session: AsyncSession) -> Outcome:
    before, after = await rollback(session, deps.settings, args[0] if args else None, actor=actor.key)
    release = await get_release(session, after)
    assert release is not None
    return Outcome(f"Rolled back: `{before}` → `{after}`. The next answer everywhere uses {release_line(release)}.",
                   before=before, after=after)


async def _promote(deps: AdminDeps, actor: AdminActor, args: list[str], session: AsyncSession) -> Outcome:
    # "--force" may arrive as "—force" (smart punctuation in chat clients)
    flags = [a for a in args if a.startswith(("-", "—", "–"))]
    names = [a for a in args if a not in flags]
    force = any(f.lstrip("-—–").lower() in ("force", "f") for f in flags)
    if len(names) != 1:
        raise ValueError("Usage: `promote NAME [--force]` (see `releases`)")
    try:
        result = await promote(session, deps.settings, names[0], actor=actor.key, force=force)
    except GateRefused as exc:
        return Outcome(str(exc), ok=False, detail=f"gate refused: {exc.result.message}")
    release = await get_release(session, result.after)
    assert release is not None
    gate = f"\n⚠️ The quality gate refused ({result.gate.message}); promoted anyway with --force." if result.forced else ""
    return Outcome(f"Promoted: `{result.before}` → `{result.after}`. The next answer everywhere uses "
                   f"{release_line(release)}.{gate}\nUndo with `rollback`.",
                   before=result.before, after=result.after,
                   detail=(f"FORCED past the gate: {result.gate.message}" if result.forced
                           else f"gate: {result.gate.message}"))


CANARY_USAGE = ("Usage: `canary RELEASE [--share 10] [--exclude #channel ...] [--min-answers N] [--max-hours H] "
                "[--force]`, `canary RELEASE --shadow [--share 20] [--budget 5]`, `canary status`, `canary stop [reason]`")


def parse_canary_options(args: list[str]) -> tuple[str, dict[str, list[str]], set[str]]:
    """``RELEASE --share 10 --exclude #a --exclude #b --force`` → (RELEASE, {"share": ["10"], "exclude": [...]},
    {"force"}). Accepts ``--opt=value``, and the dashes chat clients make of ``--`` (``—``, ``–``)."""
    values: dict[str, list[str]] = {}
    flags: set[str] = set()
    names: list[str] = []
    takes_value = ("share", "exclude", "min-answers", "max-hours", "budget")
    i = 0
    while i < len(args):
        word = args[i]
        if word.startswith(("-", "—", "–")):
            key, _, inline = word.lstrip("-—–").lower().partition("=")
            if key in takes_value:
                if not inline:
                    i += 1
                    if i >= len(args):
                        raise ValueError(f"`--{key}` needs a value. {CANARY_USAGE}")
                    inline = args[i]
                values.setdefault(key, []).append(inline)
            elif key in ("force", "f", "shadow"):
                flags.add("force" if key == "f" else key)
            else:
                raise ValueError(f"unknown option `{word}`. {CANARY_USAGE}")
        else:
            names.append(word)
        i += 1
    if len(names) != 1:
        raise ValueError(CANARY_USAGE)
    return names[0], values, flags


def _number(values: dict[str, list[str]], key: str, kind: type[float] | type[int]) -> float | None:
    if key not in values:
        return None
    try:
        return kind(values[key][-1].rstrip("%"))
    except ValueError as exc:
        raise ValueError(f"`--{key}` must be a number, not `{values[key][-1]}`") from exc


async def _canary(deps: AdminDeps, actor: AdminActor, args: list[str], session: AsyncSession) -> Outcome:
    sub = args[0].lower() if args else "status"
    redis = getattr(deps, "redis", None)
    if sub == "status":
        return Outcome(canary_markdown(await canary_view(deps.db, deps.settings)))
    if sub == "stop":
        running = await running_canary(session)
        if running is None or running.id is None:
            return Outcome("No canary is running.", ok=False, detail="no canary running")
        reason = " ".join(args[1:])[:500]
        text = (f"Canary of `{running.candidate}` stopped by {actor.label}"
                f"{': ' + reason if reason else ''}. Every conversation is back on `{running.baseline}`.")
        ended = await end_canary(deps.db, running.id, "stopped", actor=actor.key, decision=text)
        if ended is None:
            return Outcome("The canary had just ended on its own: see `canary status`.", ok=False)
        await publish(deps.settings, redis, None)
        return Outcome(text, before=f"canary {running.candidate} {running.share:g}% running",
                       after=f"canary {running.candidate} stopped", detail=f"reason: {reason}" if reason else "")
    name, values, flags = parse_canary_options(args)
    excluded = [(await resolve_target(w, platform=actor.platform, channel=actor.channel, settings=deps.settings))
                for w in values.get("exclude", [])]
    if any(t.is_global for t in excluded):
        raise TargetError("`--exclude` takes channels (`#channel`, `here`, `slack:C0123`), not everywhere")
    shadow = "shadow" in flags
    share = _number(values, "share", float)
    if share is None:
        share = deps.settings.canary_shadow_sample * 100 if shadow else 10.0
    min_answers = _number(values, "min-answers", int)
    options = CanaryOptions(share=share, excluded=[t.scope for t in excluded],
                            min_answers=int(min_answers) if min_answers is not None else None,
                            max_hours=_number(values, "max-hours", float), shadow=shadow,
                            budget_usd=_number(values, "budget", float), force="force" in flags)
    try:
        canary, gate = await start_canary(session, deps.settings, name, actor=actor.key, options=options)
    except GateRefused as exc:
        return Outcome(str(exc), ok=False, detail=f"gate refused: {exc.result.message}")
    await publish(deps.settings, redis, canary)
    where = f", except in {', '.join(canary.excluded)}" if canary.excluded else ""
    if canary.mode == "shadow":
        text = (f"Shadow canary started: `{canary.candidate}` also answers {canary.share:g}% of the questions to "
                f"`{canary.baseline}` in the background{where} — never shown — until ${canary.shadow_budget_usd:.2f} "
                f"is spent or {canary.max_hours:g} h have passed. Compare with `canary status`.")
    else:
        text = (f"Canary started: `{canary.candidate}` answers {canary.share:g}% of conversations (sticky per "
                f"thread){where}; `{canary.baseline}` the rest. It is rolled back at once if a guard metric is "
                f"significantly worse, promoted after {canary.min_answers} candidate answers if none is, and ends "
                f"inconclusive after {canary.max_hours:g} h. Follow it with `canary status`; end it with `canary stop`.")
    return Outcome(text, before=f"active {canary.baseline}",
                   after=f"canary {canary.candidate} {canary.mode} {canary.share:g}%{where}",
                   detail=gate if gate.startswith("FORCED") or not gate else f"gate: {gate}")


async def _admins(deps: AdminDeps, actor: AdminActor, args: list[str], session: AsyncSession) -> Outcome:
    rows = (await session.exec(select(Admin).order_by(col(Admin.id)))).all()
    lines = ["**Admins**\n"]
    lines += [f"- `{e}` (settings: DESKMATE_ADMIN_USER_IDS)" for e in deps.settings.admin_user_ids]
    lines += [f"- `{r.platform}:{r.user_id}` (added by {r.added_by}{'; ' + r.note if r.note else ''})" for r in rows]
    if len(lines) == 1:  # only the heading
        lines.append("- none besides CLI operators")
    return Outcome("\n".join(lines))


async def _grant(deps: AdminDeps, actor: AdminActor, args: list[str], session: AsyncSession) -> Outcome:
    if not args:
        raise ValueError("Usage: `grant USER [note]` (USER: `@someone`, `slack:U123` or `teams:<AAD object id>`)")
    platform, user_id = resolve_user(args[0], platform=actor.platform)
    session.add(Admin(platform=platform, user_id=user_id, added_by=actor.key, note=" ".join(args[1:])[:255]))
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        return Outcome(f"`{platform}:{user_id}` is already an admin.", detail="already an admin")
    return Outcome(f"`{platform}:{user_id}` can now run admin commands.", before="", after=f"admin {platform}:{user_id}")


async def _revoke(deps: AdminDeps, actor: AdminActor, args: list[str], session: AsyncSession) -> Outcome:
    if not args:
        raise ValueError("Usage: `revoke USER`")
    platform, user_id = resolve_user(args[0], platform=actor.platform)
    row = (await session.exec(select(Admin).where(Admin.platform == platform, Admin.user_id == user_id))).first()
    if row is None:
        return Outcome(f"`{platform}:{user_id}` is not in the admin table (admins named in settings are changed "
                       "there).", ok=False, detail="not in the admin table")
    await session.delete(row)
    await session.commit()
    return Outcome(f"`{platform}:{user_id}` is no longer an admin.", before=f"admin {platform}:{user_id}", after="")


_HANDLERS: dict[str, Command] = {
    "status": _status, "kill": _kill, "releases": _releases, "rollback": _rollback, "promote": _promote,
    "canary": _canary,
    "budget": _budget, "audit": _audit, "admins": _admins, "grant": _grant, "revoke": _revoke,
}
