"""The canary's statistics: per-arm figures with confidence intervals, and the sequential test behind every decision.

Pure functions (no database): :mod:`playbooks.canary` feeds them the figures of each arm, ``bench/bench_canary.py``
feeds them simulated traffic.

**The test.** For each guard metric the difference *candidate − baseline* of the arms' means is estimated by
``D = m_c − m_b`` with variance ``s² = v_c/n_c + v_b/n_b``. In information time (``1/s²``) ``D`` behaves like a
Brownian motion with drift, whatever the share routed to the candidate, so the normal-mixture sequential
probability ratio test (mSPRT; Robbins 1970, Johari et al. 2017 "Peeking at A/B tests") applies: with a
``N(0, τ²)`` mixture over the true difference ``δ``, the statistic

    Λ(δ₀) = sqrt(s² / (s² + τ²)) · exp(τ² (D − δ₀)² / (2 s² (s² + τ²)))

is a martingale under ``δ = δ₀``, so by Ville's inequality ``P(Λ ever ≥ 1/α) ≤ α``, however often it is looked at.
Inverting it gives an **always-valid confidence sequence** ``D ± r`` with

    r² = s² (s² + τ²) / τ² · (2 log(1/α) + log((s² + τ²) / s²))

that covers ``δ`` at every check at once with probability ≥ 1 − α. The decisions read it (α split evenly over the
five guard metrics, Bonferroni):

- **rollback** when, for some guard metric, the whole sequence is above 0 (the candidate is worse): a candidate
  that is truly no worse is rolled back with probability ≤ α over the whole canary;
- **promote** when the candidate has its minimum number of answers and, for every guard metric, the whole
  sequence is below the metric's margin (non-inferiority): a candidate worse than a margin on some metric is
  promoted with probability ≤ α.

The variances are plug-in estimates (Bernoulli rates smoothed with one success and one failure, so that an arm
with no errors yet is not treated as certain), which makes the guarantee asymptotic: each arm needs
:data:`MIN_PER_ARM` observations of a metric before the test looks at it. ``τ`` is the metric's margin, the
size of difference the test is tuned to find fastest. Latency is compared on the log scale (its margin is a
ratio: 0.2 = 20 % slower), cost relative to the baseline's mean.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any

#: The metrics that can roll a candidate back, in the order they are checked and shown.
GUARD_METRICS = ("downvote", "error", "fallback", "latency", "cost")
#: What each guard metric is, for explanations.
METRIC_LABELS = {
    "downvote": "👎 share of rated answers",
    "error": "error rate (questions that ended in an error)",
    "fallback": "LLM fallback rate (answers that fell back to excerpts)",
    "latency": "latency per answer (log scale: a ratio)",
    "cost": "LLM cost per answer (USD)",
}
#: Margins read as a share of the baseline (latency: a ratio on the log scale; cost: of the baseline's mean).
RELATIVE_METRICS = ("latency", "cost")
DEFAULT_MARGINS = {"downvote": 0.1, "error": 0.02, "fallback": 0.05, "latency": 0.2, "cost": 0.2}
#: No decision on a metric before each arm has this many observations of it (the normal approximation).
MIN_PER_ARM = 10
Z95 = NormalDist().inv_cdf(0.975)


@dataclass(frozen=True)
class Sample:
    """One arm's observations of one metric: count, mean and the variance of one observation."""

    n: int
    mean: float
    var: float

    @classmethod
    def rate(cls, hits: int, n: int) -> Sample:
        """A Bernoulli rate; the variance is smoothed (one hit and one miss added) so that 0 of n is not certain."""
        smoothed = (hits + 1) / (n + 2)
        return cls(n, hits / n if n else 0.0, smoothed * (1 - smoothed))

    @classmethod
    def of(cls, values: Sequence[float]) -> Sample:
        n = len(values)
        if n == 0:
            return cls(0, 0.0, 0.0)
        mean = math.fsum(values) / n
        var = math.fsum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
        return cls(n, mean, var)

    @classmethod
    def from_sums(cls, n: int, total: float, total_sq: float) -> Sample:
        """From running sums (the simulation's incremental form of :meth:`of`)."""
        if n == 0:
            return cls(0, 0.0, 0.0)
        mean = total / n
        var = max(0.0, (total_sq - n * mean * mean) / (n - 1)) if n > 1 else 0.0
        return cls(n, mean, var)


def mixture_radius(s2: float, tau: float, alpha: float) -> float:
    """Half-width of the always-valid normal-mixture confidence sequence for an estimate of variance ``s2``."""
    if s2 <= 0:
        return 0.0
    tau2 = tau * tau if tau > 0 else s2
    return math.sqrt(s2 * (s2 + tau2) / tau2 * (2 * math.log(1 / alpha) + math.log((s2 + tau2) / s2)))


@dataclass(frozen=True)
class Comparison:
    """Candidate against baseline on one guard metric, in the metric's units (latency: log ratio)."""

    metric: str
    baseline: Sample
    candidate: Sample
    diff: float
    low: float  # the always-valid confidence sequence at this check
    high: float
    margin: float  # in the same units as diff
    alpha: float  # this metric's share of the error budget
    ready: bool  # both arms have MIN_PER_ARM observations

    @property
    def worse(self) -> bool:
        return self.ready and self.low > 0

    @property
    def not_worse(self) -> bool:
        return self.ready and self.high < self.margin

    def describe(self) -> str:
        """The figures of this comparison in words (for the audit log, the alert and the dashboard)."""
        b, c = self.baseline, self.candidate
        if self.metric == "latency":
            figures = (f"geometric mean {math.exp(c.mean):.0f} ms vs {math.exp(b.mean):.0f} ms; ratio "
                       f"{math.exp(self.diff):.2f}, always-valid {1 - self.alpha:.1%} interval "
                       f"[{math.exp(self.low):.2f}, {math.exp(self.high):.2f}], margin ×{math.exp(self.margin):.2f}")
        elif self.metric == "cost":
            figures = (f"${c.mean:.5f} vs ${b.mean:.5f} per answer; difference {self.diff:+.5f}, always-valid "
                       f"{1 - self.alpha:.1%} interval [{self.low:+.5f}, {self.high:+.5f}], margin {self.margin:+.5f}")
        else:  # a difference of rates lies in [-1, 1]
            low, high = max(self.low, -1.0), min(self.high, 1.0)
            figures = (f"{c.mean:.1%} vs {b.mean:.1%}; difference {self.diff:+.1%}, always-valid "
                       f"{1 - self.alpha:.1%} interval [{low:+.1%}, {high:+.1%}], margin {self.margin:+.1%}")
        return f"{METRIC_LABELS[self.metric]}: candidate {figures} (n = {c.n} vs {b.n})"

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(worse=self.worse, not_worse=self.not_worse, text=self.describe())
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


def compare(metric: str, baseline: Sample, candidate: Sample, *, margin: float, alpha: float) -> Comparison:
    """The confidence sequence of candidate − baseline; ``margin`` as configured (relative ones are converted)."""
    if metric == "latency":
        margin_abs = math.log1p(margin)
    elif metric in RELATIVE_METRICS:
        margin_abs = margin * abs(baseline.mean)
    else:
        margin_abs = margin
    ready = baseline.n >= MIN_PER_ARM and candidate.n >= MIN_PER_ARM
    diff = candidate.mean - baseline.mean
    if not ready:
        return Comparison(metric, baseline, candidate, diff, -math.inf, math.inf, margin_abs, alpha, False)
    s2 = candidate.var / candidate.n + baseline.var / baseline.n
    radius = mixture_radius(s2, margin_abs if margin_abs > 0 else math.sqrt(s2), alpha)
    return Comparison(metric, baseline, candidate, diff, diff - radius, diff + radius, margin_abs, alpha, True)


@dataclass(frozen=True)
class Verdict:
    """What the test says now: ``rollback`` (with the metric), ``promote``, or ``continue``; and why."""

    action: str
    reason: str
    metric: str | None = None
    comparisons: list[Comparison] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"action": self.action, "reason": self.reason, "metric": self.metric,
                "test": TEST_NAME, "comparisons": [c.as_dict() for c in self.comparisons]}


TEST_NAME = ("always-valid normal-mixture confidence sequences (mSPRT), α split evenly over "
             f"{len(GUARD_METRICS)} guard metrics")


def evaluate(baseline: Mapping[str, Sample], candidate: Mapping[str, Sample], *, candidate_answers: int,
             min_answers: int, alpha: float, margins: Mapping[str, float]) -> Verdict:
    """Roll back if any guard metric is significantly worse; promote once the candidate has ``min_answers``
    answers and every guard metric is within its margin; otherwise continue."""
    each = alpha / len(GUARD_METRICS)
    comparisons = [compare(m, baseline[m], candidate[m], margin=float(margins.get(m, DEFAULT_MARGINS[m])),
                           alpha=each) for m in GUARD_METRICS]
    worse = [c for c in comparisons if c.worse]
    if worse:
        first = worse[0]
        return Verdict("rollback", f"significantly worse on {first.describe()}", first.metric, comparisons)
    if candidate_answers < min_answers:
        return Verdict("continue", f"{candidate_answers} of {min_answers} candidate answers; nothing significantly "
                                   "worse so far", None, comparisons)
    pending = [c for c in comparisons if not c.not_worse]
    if pending:
        names = ", ".join(c.metric for c in pending)
        return Verdict("continue", f"{candidate_answers} candidate answers; not yet shown within the margin on: "
                                   f"{names}", None, comparisons)
    return Verdict("promote", f"{candidate_answers} candidate answers and within the margin on every guard metric: "
                              + "; ".join(c.describe() for c in comparisons), None, comparisons)


# --- per-arm figures with (fixed-sample, 95 %) confidence intervals, for people -----------------------------
def wilson(hits: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval of a rate; None without observations."""
    if n == 0:
        return None
    p = hits / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(values: Sequence[float], z: float = Z95) -> tuple[float, float] | None:
    sample = Sample.of(values)
    if sample.n < 2:
        return None
    half = z * math.sqrt(sample.var / sample.n)
    return sample.mean - half, sample.mean + half


def quantile(ordered: Sequence[float], q: float) -> float | None:
    if not ordered:
        return None
    pos = (len(ordered) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def quantile_interval(ordered: Sequence[float], q: float, z: float = Z95) -> tuple[float, float] | None:
    """Distribution-free interval of the ``q`` quantile from order statistics (normal approximation of the
    binomial rank)."""
    n = len(ordered)
    if n < 5:
        return None
    half = z * math.sqrt(n * q * (1 - q))
    lo = max(0, math.floor(n * q - half))
    hi = min(n - 1, math.ceil(n * q + half))
    return ordered[lo], ordered[hi]


@dataclass
class ArmData:
    """What one arm did, from the database: the raw material of its figures and samples."""

    questions: int = 0  # final questions routed to the arm
    errors: int = 0
    answers: int = 0  # answered or not found
    llm_answers: int = 0  # answered (the LLM was meant to write it)
    fallbacks: int = 0  # suffered fallbacks among them
    not_found: int = 0
    rated: int = 0
    up: int = 0
    down: int = 0
    escalated: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    costs: list[float] = field(default_factory=list)

    def samples(self) -> dict[str, Sample]:
        return {
            "downvote": Sample.rate(self.down, self.rated),
            "error": Sample.rate(self.errors, self.questions),
            "fallback": Sample.rate(self.fallbacks, self.llm_answers),
            "latency": Sample.of([math.log(max(v, 1.0)) for v in self.latencies_ms]),
            "cost": Sample.of(self.costs),
        }

    def figures(self) -> dict[str, Any]:
        """Each figure with its 95 % interval (``[low, high]`` or None), as shown on the dashboard and in chat."""
        lat = sorted(self.latencies_ms)

        def rate(hits: int, n: int) -> dict[str, Any]:
            return {"value": hits / n if n else None, "ci": wilson(hits, n), "hits": hits, "n": n}

        return {
            "questions": self.questions, "answers": self.answers, "rated": self.rated,
            "up_rate_rated": rate(self.up, self.rated), "down_rate_rated": rate(self.down, self.rated),
            "up_per_answer": rate(self.up, self.answers), "down_per_answer": rate(self.down, self.answers),
            "not_found_rate": rate(self.not_found, self.answers), "fallback_rate": rate(self.fallbacks, self.llm_answers),
            "error_rate": rate(self.errors, self.questions), "ask_human_rate": rate(self.escalated, self.answers),
            "latency_p50_ms": {"value": quantile(lat, 0.5), "ci": quantile_interval(lat, 0.5)},
            "latency_p95_ms": {"value": quantile(lat, 0.95), "ci": quantile_interval(lat, 0.95)},
            "cost_per_answer": {"value": Sample.of(self.costs).mean if self.costs else None,
                                "ci": mean_interval(self.costs)},
        }
