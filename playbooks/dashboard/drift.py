"""Retrieval drift: the distribution of the best passage's score (``Interaction.top_score``) this week vs last.

A falling top score means people ask about things the knowledge base covers less well than before (new
topics, a re-organised wiki, a broken ingestion). Two checks, either flags the shift:

- the two-sample Kolmogorov-Smirnov statistic, significant at ``alpha`` (any change of shape), and
- the mean moving by at least ``mean_shift`` (a change large enough to matter even with few samples),

each only when both weeks have at least ``min_samples`` scores.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlmodel import col, select

from bot.core.types import Status
from feedback.db import Database
from feedback.models import Interaction

BINS = 20
ALPHA = 0.01
MEAN_SHIFT = 0.1
MIN_SAMPLES = 20


def ks_statistic(a: list[float], b: list[float]) -> float:
    """sup |F_a(x) - F_b(x)| over all x (both samples non-empty)."""
    a, b = sorted(a), sorted(b)
    i = j = 0
    d = 0.0
    while i < len(a) and j < len(b):
        x = min(a[i], b[j])
        while i < len(a) and a[i] <= x:
            i += 1
        while j < len(b) and b[j] <= x:
            j += 1
        d = max(d, abs(i / len(a) - j / len(b)))
    return d


def ks_p_value(d: float, n: int, m: int) -> float:
    """Asymptotic p-value of the two-sample KS statistic (Stephens' small-sample correction)."""
    en = math.sqrt(n * m / (n + m))
    lam = (en + 0.12 + 0.11 / en) * d
    if lam < 1e-3:
        return 1.0
    total = sum(2 * (-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
    return min(1.0, max(0.0, total))


def histogram(values: list[float], bins: int = BINS) -> list[float]:
    """Share of ``values`` in each of ``bins`` equal bins over [0, 1] (scores outside are clipped)."""
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, max(0, int(min(max(v, 0.0), 1.0) * bins)))] += 1
    return [round(c / len(values), 4) if values else 0.0 for c in counts]


def summary(values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)
    return {"n": len(values), "mean": round(sum(values) / len(values), 4) if values else None,
            "median": round(ordered[len(ordered) // 2], 4) if values else None, "hist": histogram(values)}


def compare(this_week: list[float], last_week: list[float], *, alpha: float = ALPHA, mean_shift: float = MEAN_SHIFT,
            min_samples: int = MIN_SAMPLES) -> dict[str, Any]:
    result: dict[str, Any] = {
        "this_week": summary(this_week), "last_week": summary(last_week),
        "edges": [round(i / BINS, 3) for i in range(BINS + 1)], "ks": None, "p_value": None, "mean_shift": None,
        "flagged": False, "reason": "", "alpha": alpha, "mean_shift_threshold": mean_shift, "min_samples": min_samples,
    }
    if not this_week or not last_week:
        result["reason"] = "not enough data: a week has no scored answers"
        return result
    d = ks_statistic(this_week, last_week)
    p = ks_p_value(d, len(this_week), len(last_week))
    shift = sum(this_week) / len(this_week) - sum(last_week) / len(last_week)
    result.update(ks=round(d, 4), p_value=round(p, 6), mean_shift=round(shift, 4))
    if min(len(this_week), len(last_week)) < min_samples:
        result["reason"] = f"not enough data: fewer than {min_samples} scored answers in a week"
        return result
    reasons = []
    if p < alpha:
        reasons.append(f"the distributions differ (KS D={d:.2f}, p={p:.3g} < {alpha})")
    if abs(shift) >= mean_shift:
        reasons.append(f"the mean top score moved {shift:+.2f}")
    result["flagged"] = bool(reasons)
    result["reason"] = "; ".join(reasons) if reasons else "no significant shift"
    return result


async def score_drift(db: Database, now: datetime | None = None) -> dict[str, Any]:
    """Top retrieval scores of answers in the last 7 days against the 7 days before."""
    now = now or datetime.now(timezone.utc)
    week_ago, two_weeks_ago = now - timedelta(days=7), now - timedelta(days=14)
    async with db.asession() as session:
        rows = (await session.exec(  # type: ignore[call-overload]
            select(Interaction.answered_at, Interaction.top_score)
            .where(col(Interaction.answered_at) >= two_weeks_ago, col(Interaction.top_score).is_not(None),
                   col(Interaction.status).in_([Status.ANSWERED, Status.NOT_FOUND])))).all()
    this_week: list[float] = []
    last_week: list[float] = []
    for answered_at, score in rows:
        if answered_at is None or score is None:  # excluded by the query; for the type checker
            continue
        at = answered_at if answered_at.tzinfo else answered_at.replace(tzinfo=timezone.utc)
        (this_week if at >= week_ago else last_week).append(float(score))
    result = compare(this_week, last_week)
    result["weeks"] = {"this": [week_ago.isoformat(timespec="seconds"), now.isoformat(timespec="seconds")],
                       "last": [two_weeks_ago.isoformat(timespec="seconds"), week_ago.isoformat(timespec="seconds")]}
    return result
