"""How often the canary's sequential test decides wrongly at the default settings, watched continuously.

    .venv/bin/python bench/bench_canary.py              # 1,000 simulated canaries per scenario (~5 min on 2 cores)
    .venv/bin/python bench/bench_canary.py --runs 200   # quicker, rougher

Each simulated canary is a stream of answers: 10 % of them (``--share``) go to the candidate, each answer can be
rated (30 %) with 👍 or 👎, end in an error, fall back, and has a latency (log-normal, median 3 s) and a cost
(gamma, mean $0.004). The decision of :mod:`playbooks.canary_stats` is taken after **every 10 answers** — far more
often than the worker would on real traffic — up to ``--answers`` answers in all (the maximum duration; then the
canary is inconclusive). The defaults of ``bot.core.settings`` are used: α = 0.05, the margins of
``DESKMATE_CANARY_MARGINS``, at least ``DESKMATE_CANARY_MIN_ANSWERS`` candidate answers before a promotion.

Scenarios and what they measure:

- **A/A** (the candidate is the baseline): the false-rollback rate (the guarantee: ≤ α), and how often and how
  fast an equivalent candidate gets promoted;
- **worse by exactly the margin** on one guard metric (👎 share +10 points, latency ×1.2, cost ×1.2): the
  false-promotion rate
  (the guarantee: ≤ α);
- **clearly worse** (👎 share 15 % → 35 %, error rate 1 % → 5 %): how often and after how many answers it is rolled
  back;
- **naive**: the same A/A traffic judged by a fixed-sample z-test at the same α per metric, checked as often — what
  a p-value watched every minute does.

The statistics are computed vectorised with numpy, with the same formulas as :func:`playbooks.canary_stats.compare`;
the script first checks on a few runs that it takes exactly the decisions ``evaluate`` takes.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import NormalDist

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.core.settings import Settings  # noqa: E402
from playbooks.canary_stats import (  # noqa: E402
    DEFAULT_MARGINS,
    GUARD_METRICS,
    MIN_PER_ARM,
    ArmData,
    evaluate,
)

CHECK_EVERY = 10


@dataclass(frozen=True)
class Arm:
    """How one arm behaves."""

    vote_rate: float = 0.3
    down: float = 0.15  # 👎 share of rated answers
    error: float = 0.01
    fallback: float = 0.03
    latency_median_ms: float = 3000.0
    latency_sigma: float = 0.5  # of log latency
    cost_mean: float = 0.004
    cost_shape: float = 4.0


@dataclass
class Outcome:
    rollbacks: int = 0
    promotions: int = 0
    inconclusive: int = 0
    rollback_at: list[int] | None = None
    promote_at: list[int] | None = None
    metrics: dict[str, int] | None = None


def simulate(rng: np.random.Generator, runs: int, answers: int, share: float, base: Arm, cand: Arm
             ) -> dict[str, np.ndarray]:
    """Per run and answer: arm, rated, down, error, fallback, latency, cost."""
    shape = (runs, answers)
    is_c = rng.random(shape) < share

    def pick(a: float, b: float) -> np.ndarray:
        return np.where(is_c, b, a)

    error = rng.random(shape) < pick(base.error, cand.error)
    answered = ~error
    rated = answered & (rng.random(shape) < pick(base.vote_rate, cand.vote_rate))
    down = rated & (rng.random(shape) < pick(base.down, cand.down))
    fallback = answered & (rng.random(shape) < pick(base.fallback, cand.fallback))
    log_lat = (np.log(pick(base.latency_median_ms, cand.latency_median_ms))
               + rng.standard_normal(shape) * pick(base.latency_sigma, cand.latency_sigma))
    shape_k = pick(base.cost_shape, cand.cost_shape)
    cost = rng.gamma(shape_k, pick(base.cost_mean, cand.cost_mean) / shape_k)
    return {"is_c": is_c, "error": error, "answered": answered, "rated": rated, "down": down, "fallback": fallback,
            "log_lat": np.where(answered, log_lat, 0.0), "cost": np.where(answered, cost, 0.0)}


def _cum(values: np.ndarray, mask: np.ndarray, checks: np.ndarray) -> np.ndarray:
    return np.cumsum(np.where(mask, values, 0), axis=1, dtype=np.float64)[:, checks]


def decisions(data: dict[str, np.ndarray], *, alpha: float, margins: dict[str, float], min_answers: int,
              naive: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each run: the first check with a rollback, the first with a promotion (-1: none), and the metric that
    rolled it back (index into GUARD_METRICS, -1). ``naive``: a fixed-sample z-test instead of the sequence."""
    runs, answers = data["is_c"].shape
    checks = np.arange(CHECK_EVERY - 1, answers, CHECK_EVERY)
    each = alpha / len(GUARD_METRICS)
    worse_any = np.zeros((runs, len(checks)), dtype=bool)
    worse_metric = np.full((runs, len(checks)), -1)
    all_ok = np.ones((runs, len(checks)), dtype=bool)
    z = NormalDist().inv_cdf(1 - each / 2)
    for index, metric in enumerate(GUARD_METRICS):
        stats = {}
        for arm, mask_arm in (("b", ~data["is_c"]), ("c", data["is_c"])):
            if metric == "downvote":
                n = _cum(np.ones_like(data["rated"]), mask_arm & data["rated"], checks)
                hits = _cum(np.ones_like(data["down"]), mask_arm & data["down"], checks)
            elif metric == "error":
                n = _cum(np.ones_like(data["error"]), mask_arm, checks)
                hits = _cum(np.ones_like(data["error"]), mask_arm & data["error"], checks)
            elif metric == "fallback":
                n = _cum(np.ones_like(data["answered"]), mask_arm & data["answered"], checks)
                hits = _cum(np.ones_like(data["fallback"]), mask_arm & data["fallback"], checks)
            else:
                key = "log_lat" if metric == "latency" else "cost"
                m = mask_arm & data["answered"]
                n = _cum(np.ones_like(m), m, checks)
                total = _cum(data[key], m, checks)
                total_sq = _cum(data[key] ** 2, m, checks)
                with np.errstate(invalid="ignore", divide="ignore"):
                    mean = np.where(n > 0, total / np.maximum(n, 1), 0.0)
                    var = np.where(n > 1, np.maximum(0.0, (total_sq - n * mean * mean) / np.maximum(n - 1, 1)), 0.0)
                stats[arm] = (n, mean, var)
                continue
            mean = np.where(n > 0, hits / np.maximum(n, 1), 0.0)
            smoothed = (hits + 1) / (n + 2)
            stats[arm] = (n, mean, smoothed * (1 - smoothed))
        (nb, mb, vb), (nc, mc, vc) = stats["b"], stats["c"]
        margin = float(margins[metric])
        if metric == "latency":
            margin_abs = np.full_like(mb, math.log1p(margin))
        elif metric == "cost":
            margin_abs = margin * np.abs(mb)
        else:
            margin_abs = np.full_like(mb, margin)
        ready = (nb >= MIN_PER_ARM) & (nc >= MIN_PER_ARM)
        with np.errstate(invalid="ignore", divide="ignore"):
            s2 = vc / np.maximum(nc, 1) + vb / np.maximum(nb, 1)
            if naive:
                radius = z * np.sqrt(s2)
            else:
                tau = np.where(margin_abs > 0, margin_abs, np.sqrt(s2))
                tau2 = np.where(tau > 0, tau * tau, s2)
                radius = np.where(s2 > 0, np.sqrt(s2 * (s2 + tau2) / np.where(tau2 > 0, tau2, 1)
                                                   * (2 * math.log(1 / each) + np.log((s2 + tau2) / np.where(s2 > 0, s2, 1)))), 0.0)
        diff = mc - mb
        worse = ready & (diff - radius > 0)
        not_worse = ready & (diff + radius < margin_abs)
        newly = worse & ~worse_any
        worse_metric = np.where(newly, index, worse_metric)
        worse_any |= worse
        all_ok &= not_worse
    cand_answers = np.cumsum(data["is_c"] & data["answered"], axis=1)[:, checks]
    promote = all_ok & ~worse_any & (cand_answers >= min_answers)

    def first(flags: np.ndarray) -> np.ndarray:
        return np.where(flags.any(axis=1), flags.argmax(axis=1), -1)

    first_rollback, first_promote = first(worse_any), first(promote)
    metric = np.where(first_rollback >= 0, worse_metric[np.arange(runs), np.maximum(first_rollback, 0)], -1)
    return first_rollback, first_promote, metric


def summarise(first_rollback: np.ndarray, first_promote: np.ndarray, metric: np.ndarray, out: Outcome) -> None:
    for r, p, m in zip(first_rollback, first_promote, metric):
        if r >= 0 and (p < 0 or r <= p):
            out.rollbacks += 1
            assert out.rollback_at is not None and out.metrics is not None
            out.rollback_at.append(int((r + 1) * CHECK_EVERY))
            name = GUARD_METRICS[int(m)]
            out.metrics[name] = out.metrics.get(name, 0) + 1
        elif p >= 0:
            out.promotions += 1
            assert out.promote_at is not None
            out.promote_at.append(int((p + 1) * CHECK_EVERY))
        else:
            out.inconclusive += 1


def run_scenario(rng: np.random.Generator, runs: int, answers: int, share: float, base: Arm, cand: Arm, *,
                 alpha: float, margins: dict[str, float], min_answers: int, naive: bool = False,
                 chunk: int = 100) -> Outcome:
    out = Outcome(rollback_at=[], promote_at=[], metrics={})
    done = 0
    while done < runs:
        size = min(chunk, runs - done)
        data = simulate(rng, size, answers, share, base, cand)
        summarise(*decisions(data, alpha=alpha, margins=margins, min_answers=min_answers, naive=naive), out)
        done += size
    return out


def self_check(rng: np.random.Generator, answers: int, share: float, base: Arm, cand: Arm, *, alpha: float,
               margins: dict[str, float], min_answers: int, runs: int = 6) -> None:
    """The vectorised decisions are :func:`playbooks.canary_stats.evaluate`'s, check by check."""
    data = simulate(rng, runs, answers, share, base, cand)
    first_rollback, first_promote, _ = decisions(data, alpha=alpha, margins=margins, min_answers=min_answers)
    for run in range(runs):
        arms = {"b": ArmData(), "c": ArmData()}
        seen_r, seen_p = -1, -1
        for i in range(answers):
            arm = arms["c" if data["is_c"][run, i] else "b"]
            arm.questions += 1
            if data["error"][run, i]:
                arm.errors += 1
            else:
                arm.answers += 1
                arm.llm_answers += 1
                arm.fallbacks += int(data["fallback"][run, i])
                if data["rated"][run, i]:
                    arm.rated += 1
                    arm.down += int(data["down"][run, i])
                arm.latencies_ms.append(float(np.exp(data["log_lat"][run, i])))
                arm.costs.append(float(data["cost"][run, i]))
            if (i + 1) % CHECK_EVERY == 0:
                verdict = evaluate(arms["b"].samples(), arms["c"].samples(), candidate_answers=arms["c"].answers,
                                   min_answers=min_answers, alpha=alpha, margins=margins)
                check = (i + 1) // CHECK_EVERY - 1
                if verdict.action == "rollback" and seen_r < 0:
                    seen_r = check
                if verdict.action == "promote" and seen_p < 0:
                    seen_p = check
                if seen_r >= 0 or seen_p >= 0:
                    break
        vec_r, vec_p = int(first_rollback[run]), int(first_promote[run])
        vec = ("rollback", vec_r) if vec_r >= 0 and (vec_p < 0 or vec_r <= vec_p) else \
            ("promote", vec_p) if vec_p >= 0 else ("none", -1)
        ref = ("rollback", seen_r) if seen_r >= 0 else ("promote", seen_p) if seen_p >= 0 else ("none", -1)
        if vec != ref:
            raise SystemExit(f"self-check failed on run {run}: vectorised {vec}, evaluate {ref}")


def pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:5.1f}%"


def median(values: list[int] | None) -> str:
    return f"{int(np.median(values)):>6}" if values else "     —"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--answers", type=int, default=10_000, help="answers in all before the canary times out")
    parser.add_argument("--share", type=float, default=0.10)
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args()
    defaults = Settings()
    alpha = defaults.canary_alpha
    margins = {**DEFAULT_MARGINS, **defaults.canary_margins}
    min_answers = defaults.canary_min_answers
    rng = np.random.default_rng(args.seed)
    base = Arm()
    print(f"canary simulation: {args.runs} canaries per scenario, {args.answers} answers each "
          f"(≈{int(args.answers * args.share)} to the candidate at share {args.share:.0%}), decision every "
          f"{CHECK_EVERY} answers; α = {alpha}, margins {margins}, min {min_answers} candidate answers")
    print(f"baseline: {base}")
    t0 = time.perf_counter()
    self_check(rng, 3000, 0.5, base, replace(base, down=0.3), alpha=alpha, margins=margins, min_answers=100)
    self_check(rng, 3000, 0.5, base, base, alpha=alpha, margins=margins, min_answers=100)
    print("self-check: the vectorised test takes evaluate()'s decisions on 12 runs, check by check: ok")
    scenarios = [
        ("A/A: candidate = baseline", base, False, "false rollback"),
        ("A/A at share 50%", base, False, "false rollback@0.5"),
        (f"👎 +{margins['downvote'] * 100:g} points (= margin)", replace(base, down=base.down + margins["downvote"]),
         False, "false promotion"),
        ("latency ×1.2 (= margin)", replace(base, latency_median_ms=base.latency_median_ms * (1 + margins["latency"])),
         False, "false promotion"),
        ("cost ×1.2 (= margin)", replace(base, cost_mean=base.cost_mean * (1 + margins["cost"])), False,
         "false promotion"),
        ("👎 15% → 35%", replace(base, down=0.35), False, "rollback"),
        ("errors 1% → 5%", replace(base, error=0.05), False, "rollback"),
        ("naive z-test, A/A, checked as often", base, True, "false rollback"),
    ]
    print(f"\n{'scenario':<40} {'rolled back':>12} {'promoted':>10} {'inconcl.':>9} {'median answers':>15}  "
          f"{'guarantee':<22} rollbacks by metric")
    for name, cand, naive, what in scenarios:
        share = 0.5 if what.endswith("@0.5") else args.share
        what = what.removesuffix("@0.5")
        out = run_scenario(rng, args.runs, args.answers, share, base, cand, alpha=alpha, margins=margins,
                           min_answers=min_answers, naive=naive)
        if what == "false promotion":
            guarantee = f"false promotion ≤ {alpha:.0%}"
            at = median(out.promote_at)
        elif what == "false rollback":
            guarantee = f"false rollback ≤ {alpha:.0%}" if not naive else "(none)"
            at = median(out.promote_at) + " (to promotion)" if out.promote_at and not naive else median(out.rollback_at)
        else:
            guarantee = "power"
            at = median(out.rollback_at) + " (to rollback)"
        print(f"{name:<40} {pct(out.rollbacks, args.runs):>12} {pct(out.promotions, args.runs):>10} "
              f"{pct(out.inconclusive, args.runs):>9} {at:>15}  {guarantee:<22} {out.metrics}")
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
