"""The guard the worker runs after every answer: the daily budget cap, and alerts on bad trends.

Budget: when the LLM spend recorded since midnight UTC reaches ``daily_budget_usd``, the global switch goes to
``retrieval-only`` with ``automatic=True`` (cited excerpts, no LLM calls) and the admins are alerted. At the next
midnight UTC the automatic switch lapses: :func:`playbooks.killswitch.effective_mode` ignores it from that
moment (no write on the answer path) and the guard deletes it at its next check. If an admin turns the LLM back
on after the guard tripped (``kill on``), the guard does not trip again that day; if an admin sets the switch
themselves it is theirs (``automatic=False``) and never lapses.

Alerts: the 👎 share of the last N rated answers, the LLM fallback rate and the error rate of recent questions,
each against a threshold from settings, at most every ``guard_check_interval_s`` across all workers (a Redis
key) and at most once per ``alert_cooldown_minutes`` per kind. Each names its runbook and the rollback command.

A :class:`Guard` is built once per process with its dependencies (settings, database, Redis, the bot's
:class:`~playbooks.notify.Notifier`); the worker registers :meth:`Guard.after_answer` as an after-answer hook
and runs :meth:`Guard.run_checks` from a cron job (:func:`guard_cron`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from redis.asyncio import Redis

from bot.core.log import get_logger
from bot.core.settings import Settings
from bot.core.types import Answer
from feedback.db import Database
from feedback.models import Switch
from playbooks import audit
from playbooks.alerts import Alerter, last_alert
from playbooks.killswitch import GLOBAL_SCOPE, Mode, clear_expired, is_expired, set_mode
from playbooks.notify import Notifier
from playbooks.releases import ReleaseError, previous_release_name
from feedback.releases import active_release
from playbooks.status import day_start, downvotes_over_last, spend_today, utc_now, window_stats

log = get_logger(__name__)

GUARD_ACTOR = "budget-guard"
CHECK_KEY = "deskmate:guard:last-check"
RUNBOOKS = "playbooks/runbooks"


@dataclass(frozen=True)
class Guard:
    """The budget guard and the trend alerts of one process."""

    settings: Settings
    db: Database
    redis: Redis | None  # None: every caller is "due" and alerts are deduped by the table alone
    notifier: Notifier

    @property
    def alerter(self) -> Alerter:
        return Alerter(settings=self.settings, db=self.db, redis=self.redis, notifier=self.notifier)

    async def after_answer(self, interaction_id: int, answer: Answer) -> None:
        """The worker's after-answer hook: budget after a paid answer, then the rate checks when due."""
        if answer.cost_usd > 0:
            await self.check_budget()
        if await self._due():
            await self.clear_lapsed_switches()
            await self.check_alerts()

    async def run_checks(self) -> list[str]:
        """The cron's checks (see :func:`guard_cron`): lapsed switches and the rate alerts, when due."""
        if not await self._due():
            return []
        await self.clear_lapsed_switches()
        return await self.check_alerts()

    async def _due(self) -> bool:
        """True for one caller per ``guard_check_interval_s`` across all processes."""
        interval = self.settings.guard_check_interval_s
        if interval <= 0:
            return True
        try:
            if self.redis is None:
                return True
            return bool(await self.redis.set(CHECK_KEY, "1", nx=True, px=max(1, int(interval * 1000))))
        except Exception:  # noqa: BLE001
            return True

    # --- budget ----------------------------------------------------------------------------------------
    async def check_budget(self) -> bool:
        """Trip the budget guard if today's spend reached the cap; True when it tripped now."""
        cap = self.settings.daily_budget_usd
        if cap is None:
            return False
        now = utc_now()
        async with self.db.asession() as session:
            spent = await spend_today(session, now)
        if spent < cap:
            return False
        if await last_alert(self.db, "budget", day_start(now)) is not None:
            return False  # already tripped today; if the LLM is on again, an admin chose that
        async with self.db.asession() as session:
            row = await session.get(Switch, GLOBAL_SCOPE)
            current = Mode.ON if row is None or is_expired(row, now) else Mode(row.mode)
            flipped = current.severity < Mode.RETRIEVAL_ONLY.severity
            if flipped:
                reason = f"daily LLM budget ${cap:.2f} reached (${spent:.2f} spent)"
                before, after = await set_mode(session, GLOBAL_SCOPE, Mode.RETRIEVAL_ONLY, actor=GUARD_ACTOR,
                                               reason=reason, automatic=True)
                await audit.record(session, actor=GUARD_ACTOR, platform="deskmate", where="worker",
                                   command="kill retrieval-only (budget cap)", allowed=True,
                                   before=f"global={before}", after=f"global={after}", detail=reason)
        effect = ("Deskmate switched itself to *retrieval-only*: cited excerpts, no LLM calls, until 00:00 UTC."
                  if flipped else f"The global switch is already *{current.value}*, so nothing changed.")
        await self.alerter.raise_alert("budget", (
            f":money_with_wings: Daily LLM budget reached: ${spent:.2f} of ${cap:.2f} today (UTC). {effect}\n"
            f"Runbook: `{RUNBOOKS}/cost-spike.md`. Check `/deskmate budget` and `/deskmate status`.\n"
            "To turn the LLM back on today anyway: `/deskmate kill on` (or `deskmate admin kill on`)."
        ), quiet_since=day_start(now))
        log.warning("guard.budget_tripped", spent=spent, cap=cap, flipped=flipped)
        return flipped

    async def clear_lapsed_switches(self) -> list[str]:
        """Delete automatic switches from before today and tell the admins the LLM is back."""
        async with self.db.asession() as session:
            cleared = await clear_expired(session)
            for scope in cleared:
                await audit.record(session, actor=GUARD_ACTOR, platform="deskmate", where="worker",
                                   command=f"kill on ({scope}, new UTC day)", allowed=True,
                                   before=f"{scope}=retrieval-only (automatic)", after=f"{scope}=on",
                                   detail="the budget guard's automatic switch lapsed at midnight UTC")
        if cleared:
            await self.alerter.raise_alert(
                "budget-reset", "A new UTC day: the budget guard's retrieval-only switch was lifted; "
                                "LLM answers are back on.", quiet_since=day_start())
        return cleared

    # --- trend alerts ----------------------------------------------------------------------------------
    async def rollback_hint(self) -> str:
        async with self.db.asession() as session:
            current = (await active_release(session, self.settings)).name
            try:
                previous = await previous_release_name(session, self.settings)
            except ReleaseError:
                return f"Active release `{current}`; there is no earlier release to roll back to."
        return (f"Active release `{current}`. Roll back to `{previous}`: `/deskmate rollback` in Slack, "
                f"`@Deskmate admin rollback` in Teams, or `deskmate rollback {previous}` on a server.")

    async def check_alerts(self) -> list[str]:
        """Compare the recent figures with the thresholds; returns the kinds of alerts raised."""
        s = self.settings
        now = utc_now()
        async with self.db.asession() as session:
            down, rated = await downvotes_over_last(session, s.alert_downvote_window)
            recent = await window_stats(session, now - timedelta(minutes=s.alert_window_minutes))
        raised: list[str] = []
        window = f"last {s.alert_window_minutes:g} min"
        alerter = self.alerter
        if rated >= min(s.alert_min_samples, s.alert_downvote_window) and down / rated >= s.alert_downvote_rate:
            message = (f":thumbsdown: {down} of the last {rated} rated answers got 👎 ({down / rated:.0%}, "
                       f"threshold {s.alert_downvote_rate:.0%}).\nRunbook: `{RUNBOOKS}/bad-answers-reported.md`.\n"
                       f"{await self.rollback_hint()}")
            if await alerter.raise_alert("downvote-rate", message):
                raised.append("downvote-rate")
        if recent.llm_answers >= s.alert_min_samples and recent.fallback_rate >= s.alert_fallback_rate:
            message = (f":warning: {recent.fallbacks} of {recent.llm_answers} answers ({window}) fell back to "
                       f"excerpts ({recent.fallback_rate:.0%}, threshold {s.alert_fallback_rate:.0%}): the LLM "
                       f"provider may be failing.\nRunbook: `{RUNBOOKS}/llm-provider-outage.md`. To stop calling "
                       f"it: `/deskmate kill retrieval-only`.\n{await self.rollback_hint()}")
            if await alerter.raise_alert("fallback-rate", message):
                raised.append("fallback-rate")
        if recent.total >= s.alert_min_samples and recent.error_rate >= s.alert_error_rate:
            message = (f":rotating_light: {recent.errors} of {recent.total} questions ({window}) ended in an error "
                       f"({recent.error_rate:.0%}, threshold {s.alert_error_rate:.0%}).\n"
                       f"Runbook: `{RUNBOOKS}/bad-release.md`. To pause answers: `/deskmate kill off`.\n"
                       f"{await self.rollback_hint()}")
            if await alerter.raise_alert("error-rate", message):
                raised.append("error-rate")
        return raised


async def guard_cron(ctx: dict[str, Any]) -> list[str]:
    """The checks as an arq cron job (``cron(guard_cron, second={0, 30})`` in ``bot/worker.py``).

    ``after_answer`` only runs when something is answered; when every job fails, nothing is, and only a cron
    notices the error rate and clears a lapsed budget switch. Reads the process's :class:`Guard` from
    ``ctx["guard"]`` (the worker's startup puts it there).
    """
    guard: Guard = ctx["guard"]
    return await guard.run_checks()
