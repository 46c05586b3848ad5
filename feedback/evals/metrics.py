"""What is measured per item and how items add up to a release's figures.

Per item (:class:`ItemResult`), from the real pipeline's passages and answer:

- retrieval: the documents of the ``k`` passages the release retrieved, in rank order (a document counts once);
  ``recall`` = relevant documents found / relevant documents, ``rr`` = 1 / rank of the first relevant one
  (the same document-level definitions as :mod:`knowledge.evaluation`, at the release's own ``k``);
- citations: the documents the answer cites. A "not found" reply lists closest sources, which are not
  citations. ``citation_precision`` = cited relevant / cited; ``cites_relevant`` = cites at least one relevant;
- correctness: token-level F1 (SQuAD-style normalisation) of the answer, without citation markers and the
  fallback's label, against the reference answer; 0 when an answerable question was declined. The LLM judge's
  grade (0, 0.5, 1) when a judge ran;
- abstention: ``declined`` = the reply is "not found" (by its status: the reply is worded in the asker's
  language). Correct for an unanswerable item, wrong for an answerable one;
- latency of retrieval + generation (ms) and the answer's cost (US dollars).

The summary (:func:`summarize`) averages them over the items they apply to; see :data:`METRICS`.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from knowledge.evaluation import score_ranking

# --- answer text -----------------------------------------------------------------------------------------
_MARKERS = re.compile(r"\s?\[\d+\]")
_FALLBACK_LABEL = re.compile(r"^_Automatic excerpt[^\n]*_\s*$", re.MULTILINE)
#: The extractive answer's own first line in any language (bot.status_text.fallback_label): "_<title> — <note>…_".
_LEADING_LABEL = re.compile(r"\A\s*_[^\n]+ — [^\n]+_[ \t]*(?:\n|\Z)")
#: How an English "not found" reply began before golden items recorded the rejected reply's status
#: (``rejected_status``); such items are recognised by it (replies were English-only then).
LEGACY_NOT_FOUND_TEXT = "I couldn't find this in the handbook"
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation + "“”‘’—–…→•›"})


def clean_answer(text: str) -> str:
    """The answer's words: no ``[n]`` markers, no fallback label, no quote marks of Markdown block quotes."""
    text = _LEADING_LABEL.sub("", text or "", count=1)
    text = _FALLBACK_LABEL.sub("", text)
    text = _MARKERS.sub("", text)
    text = re.sub(r"^\s*>\s?", "", text, flags=re.MULTILINE)
    return text.strip()


def normalize_tokens(text: str) -> list[str]:
    """Lower-cased words without punctuation and articles (the SQuAD answer normalisation)."""
    text = (text or "").lower().translate(_PUNCT)
    return _ARTICLES.sub(" ", text).split()


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize_tokens(prediction), normalize_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = Counter(pred) & Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


# --- retrieval -------------------------------------------------------------------------------------------
def ranked_doc_ids(doc_ids: list[str]) -> list[str]:
    return list(dict.fromkeys(d for d in doc_ids if d))


def retrieval_scores(ranking: list[str], relevant: set[str]) -> tuple[float, float]:
    """(recall, reciprocal rank) of a document ranking already cut at the release's ``k`` passages.

    Recall counts the whole ranking (recall@k); the reciprocal rank is :func:`knowledge.evaluation.score_ranking`'s
    (MRR@10), so retrieval figures mean the same here as in ``deskmate eval retrieval``.
    """
    if not relevant:
        return 0.0, 0.0
    recall = len(relevant & set(ranking)) / len(relevant)
    return recall, score_ranking(ranking, relevant)["mrr@10"]


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (``q`` in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


# --- one item --------------------------------------------------------------------------------------------
@dataclass
class ItemResult:
    qid: str
    question: str
    answerable: bool | None
    scored: bool
    relevant_doc_ids: list[str]
    reference: str = ""
    status: str = ""
    answer: str = ""
    fallback: bool = False
    fallback_reason: str | None = None
    retrieved_doc_ids: list[str] = field(default_factory=list)
    cited_doc_ids: list[str] = field(default_factory=list)
    top_score: float | None = None
    recall: float | None = None
    rr: float | None = None
    citation_precision: float | None = None
    cites_relevant: bool | None = None
    f1: float | None = None
    judge: float | None = None
    judge_reason: str | None = None
    declined: bool = False
    abstention_ok: bool | None = None
    retrieve_ms: float = 0.0
    generate_ms: float = 0.0
    latency_ms: float = 0.0
    cost_usd: float = 0.0
    judge_cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    regression: bool = False
    repeated_rejected: bool | None = None
    error: str | None = None

    @property
    def correctness(self) -> float | None:
        """The judge's grade when there is one, else token F1."""
        return self.judge if self.judge is not None else self.f1

    @property
    def score(self) -> float | None:
        """One number per item for wins and losses: declining right, or answering correctly."""
        if not self.scored:
            return None
        if self.answerable is False:
            return 1.0 if self.declined else 0.0
        return 0.0 if self.declined else (self.correctness or 0.0)

    @property
    def problem(self) -> str | None:
        """What went visibly wrong, if anything (token F1 alone is not a problem: wording differs)."""
        if self.error:
            return "failed"
        if self.repeated_rejected:
            return "gave the rejected answer again"
        if not self.scored:
            return None
        if self.answerable is False:
            return None if self.declined else "answered an unanswerable question"
        if self.declined:
            return "declined an answerable question"
        if not self.recall:
            return "retrieved no relevant document"
        if not self.cites_relevant:
            return "cites no relevant document"
        if self.judge is not None and self.judge < 0.5:
            return "judged incorrect"
        return None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"correctness": self.correctness, "score": self.score}


#: F1 against a rejected (👎) answer above which a new answer counts as the same answer again.
REPEAT_F1 = 0.8


def score_item(item: ItemResult, *, rejected_answer: str = "", rejected_status: str = "") -> ItemResult:
    """Fill in the per-item scores from the recorded answer (status, docs, text). ``rejected_status`` is the
    status of the rejected reply of a regression item (older items without it: recognised by the text)."""
    relevant = set(item.relevant_doc_ids)
    item.declined = item.status == "not_found"
    if item.regression and rejected_answer and not item.error:
        rejected_declined = (rejected_status == "not_found" if rejected_status
                             else rejected_answer.startswith(LEGACY_NOT_FOUND_TEXT))
        if rejected_declined:  # people wanted an answer and got "not found"
            item.repeated_rejected = item.declined
        else:
            item.repeated_rejected = (item.status == "answered" and token_f1(
                clean_answer(item.answer), clean_answer(rejected_answer)) >= REPEAT_F1)
    if not item.scored or item.error:
        if item.error and item.scored:
            item.abstention_ok = False
            if item.answerable:
                item.recall = item.rr = item.f1 = 0.0
                item.cites_relevant = False
        return item
    if item.answerable:
        item.recall, item.rr = retrieval_scores(item.retrieved_doc_ids, relevant)
        cited = set(item.cited_doc_ids)
        if cited:
            item.citation_precision = len(cited & relevant) / len(cited)
        item.cites_relevant = bool(cited & relevant)
        item.f1 = 0.0 if item.declined else token_f1(clean_answer(item.answer), item.reference)
        item.abstention_ok = not item.declined
    else:
        item.abstention_ok = item.declined
    return item


# --- the summary -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    higher_is_better: bool = True
    unit: str = "share"  # share (0..1) | ms | usd
    help: str = ""


METRICS: tuple[Metric, ...] = (
    Metric("recall_at_k", "Retrieval recall@k", help="relevant documents among the k retrieved passages"),
    Metric("mrr", "Retrieval MRR", help="1 / rank of the first relevant document, within k"),
    Metric("citation_precision", "Citation precision", help="cited documents that are relevant (answers citing)"),
    Metric("citation_coverage", "Citation coverage", help="answerable items whose answer cites a relevant document"),
    Metric("answer_f1", "Answer token F1", help="token F1 vs the reference (0 when declined)"),
    Metric("judge_score", "LLM judge", help="fixed rubric: 1 correct, 0.5 partly, 0 wrong (with an API key)"),
    Metric("abstention_unanswerable", "Declined unanswerable", help="unanswerable items answered 'not found'"),
    Metric("answered_answerable", "Answered answerable", help="answerable items not declined"),
    Metric("abstention_accuracy", "Abstention accuracy", help="items where declining or not was right"),
    Metric("regression_repeats", "Repeated rejected answers", higher_is_better=False,
           help="regression items (voted down) given the rejected answer again"),
    Metric("latency_p50_ms", "Latency p50", higher_is_better=False, unit="ms"),
    Metric("latency_p95_ms", "Latency p95", higher_is_better=False, unit="ms"),
    Metric("cost_per_answer_usd", "Cost per answer", higher_is_better=False, unit="usd"),
)
METRIC_BY_KEY = {m.key: m for m in METRICS}
QUALITY_KEYS = tuple(m.key for m in METRICS if m.unit == "share")


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def summarize(items: list[ItemResult]) -> dict[str, Any]:
    scored = [i for i in items if i.scored]
    answerable = [i for i in scored if i.answerable]
    unanswerable = [i for i in scored if i.answerable is False]
    regression = [i for i in items if i.repeated_rejected is not None]
    latencies = [i.latency_ms for i in items if not i.error]
    answered = [i for i in items if i.status == "answered"]
    return {
        "n": len(items),
        "n_answerable": len(answerable),
        "n_unanswerable": len(unanswerable),
        "n_unscored": len(items) - len(scored),
        "recall_at_k": _mean([i.recall for i in answerable if i.recall is not None]),
        "mrr": _mean([i.rr for i in answerable if i.rr is not None]),
        "citation_precision": _mean([i.citation_precision for i in answerable if i.citation_precision is not None]),
        "citation_coverage": _mean([float(bool(i.cites_relevant)) for i in answerable]),
        "answer_f1": _mean([i.f1 for i in answerable if i.f1 is not None]),
        "judge_score": _mean([i.judge for i in answerable if i.judge is not None]),
        "abstention_unanswerable": _mean([float(i.declined and not i.error) for i in unanswerable]),
        "answered_answerable": _mean([float(not i.declined and not i.error) for i in answerable]),
        "abstention_accuracy": _mean([float(bool(i.abstention_ok)) for i in scored]),
        "regression_repeats": _mean([float(bool(i.repeated_rejected)) for i in regression]),
        "latency_p50_ms": _round(percentile(latencies, 50), 1),
        "latency_p95_ms": _round(percentile(latencies, 95), 1),
        "latency_mean_ms": _round(sum(latencies) / len(latencies), 1) if latencies else None,
        "cost_per_answer_usd": round(sum(i.cost_usd for i in items) / len(items), 6) if items else None,
        "cost_total_usd": round(sum(i.cost_usd for i in items), 6),
        "judge_cost_usd": round(sum(i.judge_cost_usd for i in items), 6),
        "fallback_rate": _mean([float(i.fallback) for i in answered]),
        "errors": sum(1 for i in items if i.error),
    }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
