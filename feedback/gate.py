"""The promotion quality gate: a candidate release must not be worse than the active one on the golden set.

Both releases are evaluated on the configured golden set (``DESKMATE_GATE_DATASET``, default the bundled
sample set) through their real pipelines; the candidate is refused when any metric regressed beyond its
tolerance, and the refusal names each one: ``citation coverage 0.909 → 0.000 (−0.909; allowed −0.050)``.

- Quality metrics (shares in 0..1) may drop by at most their tolerance, in absolute points
  (:data:`DEFAULT_TOLERANCES`, overridden per metric by ``DESKMATE_GATE_TOLERANCES``). A metric the active
  release has and the candidate no longer has (no answer cites anything any more) counts as 0.
- Repeated 👎 answers may grow by at most their tolerance.
- p95 latency may grow by ``DESKMATE_GATE_LATENCY_INCREASE`` (relative) plus ``…_SLACK_MS``; the cost per
  answer by ``DESKMATE_GATE_COST_INCREASE``. Both releases are timed in the same run, one after the other.
- More failed items than the active release is always a regression.

Two entry points:

- :func:`check_promotion` evaluates both releases now with an :class:`~feedback.evals.answerer.Answerer`
  (the bot's pipeline), stores both runs (``EvalRun``, kind ``gate``) and decides.
  ``deskmate eval gate NAME [--promote [--force]]`` runs it.
- :func:`promotion_gate` is the hook :mod:`playbooks.gate` finds for ``promote`` (chat and CLI). It decides from
  stored runs only — a slash command has 3 s and the web process has no retriever — using the newest run of
  each release whose fingerprint (golden set hash, resolved index version, generation mode, judge) matches
  what the releases would do now. Without such runs it refuses and says which command to run.
  ``promote --force`` overrides a refusal; playbooks records the override in the release history and the
  audit log, with this message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.core.settings import Settings
from feedback.db import Database
from feedback.evals.answerer import Answerer
from feedback.evals.judge import RUBRIC_VERSION
from feedback.evals.metrics import METRIC_BY_KEY
from feedback.evals.runner import EvalResult, Progress, file_sha256, fingerprint, run_eval
from feedback.golden import SAMPLE_GOLDEN
from feedback.models import EvalRun, Release

#: Allowed drop per quality metric, absolute. With 11 unanswerable items in the sample set one item is 0.09.
DEFAULT_TOLERANCES: dict[str, float] = {
    "recall_at_k": 0.03,
    "mrr": 0.05,
    "citation_precision": 0.05,
    "citation_coverage": 0.05,
    "answer_f1": 0.03,
    "judge_score": 0.05,
    "abstention_unanswerable": 0.10,
    "answered_answerable": 0.05,
    "regression_repeats": 0.0,
}


def gate_dataset(settings: Settings) -> Path:
    return Path(settings.gate_dataset) if settings.gate_dataset else SAMPLE_GOLDEN


def tolerances(settings: Settings) -> dict[str, float]:
    merged = dict(DEFAULT_TOLERANCES)
    merged.update({k: float(v) for k, v in (settings.gate_tolerances or {}).items()})
    unknown = set(merged) - set(METRIC_BY_KEY)
    if unknown:
        raise ValueError(f"DESKMATE_GATE_TOLERANCES names unknown metrics: {', '.join(sorted(unknown))}")
    return merged


def judge_name(settings: Settings) -> str | None:
    """The judge a run with these settings uses (what :func:`feedback.evals.judge.make_judge` would build)."""
    if not (settings.eval_judge and settings.anthropic_api_key):
        return None
    return f"{settings.eval_judge_model or settings.anthropic_model} ({RUBRIC_VERSION})"


@dataclass
class Regression:
    key: str
    active: float | None
    candidate: float | None
    allowed: str

    @property
    def text(self) -> str:
        label = METRIC_BY_KEY[self.key].label if self.key in METRIC_BY_KEY else self.key
        a, c = self.active or 0.0, self.candidate or 0.0
        unit = METRIC_BY_KEY[self.key].unit if self.key in METRIC_BY_KEY else ""
        if unit == "ms":
            return f"{label} {a:,.0f} → {c:,.0f} ms ({c - a:+,.0f} ms; allowed {self.allowed})"
        if unit == "usd":
            return f"{label} ${a:.4f} → ${c:.4f} (allowed {self.allowed})"
        if self.key == "errors":
            return f"failed items {a:.0f} → {c:.0f}"
        return f"{label.lower()} {a:.3f} → {c:.3f} ({c - a:+.3f}; allowed {self.allowed})"


@dataclass
class GateReport:
    ok: bool
    message: str
    regressions: list[Regression] = field(default_factory=list)
    candidate: EvalResult | None = None
    active: EvalResult | None = None

    def as_tuple(self) -> tuple[bool, str]:
        return self.ok, self.message


def find_regressions(settings: Settings, active: dict[str, Any], candidate: dict[str, Any]) -> list[Regression]:
    found: list[Regression] = []
    for key, tol in tolerances(settings).items():
        a, c = active.get(key), candidate.get(key)
        if a is None:
            continue  # not measured for the active release: nothing to fall below
        c_value = 0.0 if c is None else c
        if METRIC_BY_KEY[key].higher_is_better:
            if c_value < a - tol - 1e-9:
                found.append(Regression(key, a, c, f"-{tol:.3f}"))
        elif c_value > a + tol + 1e-9:
            found.append(Regression(key, a, c, f"+{tol:.3f}"))
    a_p95, c_p95 = active.get("latency_p95_ms"), candidate.get("latency_p95_ms")
    if a_p95 is not None and c_p95 is not None:
        limit = a_p95 * (1 + settings.gate_latency_increase) + settings.gate_latency_slack_ms
        if c_p95 > limit:
            found.append(Regression("latency_p95_ms", a_p95, c_p95,
                                    f"+{settings.gate_latency_increase:.0%} + {settings.gate_latency_slack_ms:,.0f} ms"))
    a_cost, c_cost = active.get("cost_per_answer_usd"), candidate.get("cost_per_answer_usd")
    if a_cost is not None and c_cost is not None and c_cost > a_cost * (1 + settings.gate_cost_increase) + 1e-4:
        found.append(Regression("cost_per_answer_usd", a_cost, c_cost, f"+{settings.gate_cost_increase:.0%}"))
    if (candidate.get("errors") or 0) > (active.get("errors") or 0):
        found.append(Regression("errors", active.get("errors") or 0, candidate.get("errors") or 0, "no more"))
    return found


def verdict(settings: Settings, candidate: EvalResult, active: EvalResult) -> GateReport:
    regressions = find_regressions(settings, active.summary, candidate.summary)
    runs = f"eval runs #{active.run_id} and #{candidate.run_id}" if active.run_id and candidate.run_id else "eval runs"
    where = (f"on {active.meta.get('dataset_name', active.dataset)} ({candidate.summary.get('n')} items, "
             f"{candidate.fingerprint.get('generation')}; {runs})")
    if regressions:
        message = (f"'{candidate.release}' is worse than the active '{active.release}' {where}: "
                   + "; ".join(r.text for r in regressions))
        return GateReport(False, message, regressions, candidate, active)
    s = candidate.summary
    headline = ", ".join(f"{METRIC_BY_KEY[k].label.lower()} {s[k]:.3f}" for k in
                         ("recall_at_k", "citation_coverage", "answer_f1", "judge_score", "abstention_accuracy")
                         if s.get(k) is not None)
    message = f"'{candidate.release}' is not worse than '{active.release}' {where}; {headline}"
    return GateReport(True, message, [], candidate, active)


# --- evaluate now ----------------------------------------------------------------------------------------
async def evaluate_gate(answerer: Answerer, settings: Settings, candidate: Release | str,
                        active: Release | str | None = None, *, progress: Progress | None = None,
                        concurrency: int | None = None, db: Database | None = None) -> GateReport:
    """Evaluate the active release and the candidate on the gate dataset now, store both runs, decide."""
    dataset = gate_dataset(settings)
    cand_name = candidate if isinstance(candidate, str) else candidate.name
    active_name = active.name if isinstance(active, Release) else active  # None: the active release
    active_result, cand_result = await run_eval(answerer, settings, dataset, [active_name, cand_name], kind="gate",
                                                progress=progress, concurrency=concurrency, db=db)
    return verdict(settings, cand_result, active_result)


async def check_promotion(answerer: Answerer, settings: Settings, candidate: Release | str,
                          active: Release | str | None = None, *, db: Database | None = None) -> tuple[bool, str]:
    """(ok, message): is ``candidate`` not worse than ``active`` (default: the active release)? Evaluates now."""
    if not settings.gate_enabled:
        return True, "the quality gate is off (DESKMATE_GATE_ENABLED=false)"
    return (await evaluate_gate(answerer, settings, candidate, active, db=db)).as_tuple()


# --- the promote hook: stored runs -----------------------------------------------------------------------
async def _matching_run(session: AsyncSession, release_name: str, wanted: dict[str, Any]) -> EvalResult | None:
    stmt = select(EvalRun).where(EvalRun.release_name == release_name).order_by(col(EvalRun.id).desc()).limit(50)
    for row in (await session.exec(stmt)).all():
        data = row.metrics or {}
        if data.get("meta", {}).get("fingerprint") == wanted:
            return EvalResult.from_run(row)
    return None


async def stored_gate_report(session: AsyncSession, settings: Settings, candidate: Release,
                             current: Release) -> GateReport:
    dataset = gate_dataset(settings)
    if not dataset.is_file():
        return GateReport(False, f"the gate's golden set {dataset} does not exist (DESKMATE_GATE_DATASET)")
    sha = file_sha256(dataset)
    judge = judge_name(settings)
    runs: dict[str, EvalResult | None] = {}
    for release in (current, candidate):
        runs[release.name] = await _matching_run(session, release.name, fingerprint(settings, release, sha, judge))
    missing = [name for name, run in runs.items() if run is None]
    if missing:
        names = " and ".join(f"'{m}'" for m in missing)
        return GateReport(False, f"no evaluation of {names} on {dataset.name} for the current index and settings; "
                                 f"run `deskmate eval gate {candidate.name}` (evaluates both releases and stores the "
                                 "results), then promote again")
    report = verdict(settings, runs[candidate.name], runs[current.name])  # type: ignore[arg-type]
    return report


async def promotion_gate(session: AsyncSession, settings: Settings, candidate: Release,
                         current: Release) -> tuple[bool, str]:
    """The hook :func:`playbooks.gate.resolve_gate` finds: decides from stored eval runs (see module doc)."""
    if not settings.gate_enabled:
        return True, "the quality gate is off (DESKMATE_GATE_ENABLED=false)"
    return (await stored_gate_report(session, settings, candidate, current)).as_tuple()
