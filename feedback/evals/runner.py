"""Running a release over a golden set through the real pipeline, comparing two releases, storing the runs.

Each item is answered by an :class:`~feedback.evals.answerer.Answerer` — the bot's pipeline with the release's
own retrieval (kb, index version, k, candidates, fusion, knowledge sets, min score) and generation (model,
prompt, max tokens), no conversation history and no channel restriction beyond the release's knowledge sets.
Without an API key that is the extractive fallback, exactly what users would get.

The bot's evaluation answerer has no Redis: the circuit breaker is off, so an evaluation's failures can never
open the production breaker, and nothing here needs the queue. Each run is stored as an :class:`EvalRun` whose
``metrics`` hold ``summary`` (the figures), ``meta`` (release settings, dataset hash, generation mode, judge)
and ``items`` (per-item results), so the gate and later reports can use it without running again.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bot.core.log import get_logger
from bot.core.settings import Settings
from feedback.db import Database, get_database
from feedback.evals.answerer import Answerer
from feedback.evals.judge import Judge, make_judge
from feedback.evals.metrics import METRICS, ItemResult, clean_answer, score_item, summarize
from feedback.golden import GoldenItem, load_golden
from feedback.models import EvalRun, Release
from feedback.releases import active_release, get_release
from knowledge.config import KnowledgeConfig
from knowledge.index import IndexNotFound, IndexStore

log = get_logger(__name__)

Progress = Callable[[str, int, int], None]  # (release, done, total)
#: A per-item score difference below this is a tie in :func:`compare`.
WIN_MARGIN = 0.05


class EvalError(RuntimeError):
    """The evaluation cannot run (unknown release, missing index, bad dataset), with a message for the operator."""


# --- results ---------------------------------------------------------------------------------------------
@dataclass
class EvalResult:
    release: str
    dataset: str
    items: list[ItemResult]
    summary: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    run_id: int | None = None

    @property
    def fingerprint(self) -> dict[str, Any]:
        return self.meta.get("fingerprint", {})

    def to_dict(self, *, items: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"release": self.release, "dataset": self.dataset, "run_id": self.run_id,
                               "meta": self.meta, "summary": self.summary}
        if items:
            out["items"] = [i.to_dict() for i in self.items]
        return out

    @classmethod
    def from_run(cls, row: EvalRun) -> EvalResult:
        data = row.metrics or {}
        items = []
        for raw in data.get("items", []):
            raw = {k: v for k, v in raw.items() if k not in ("correctness", "score")}
            items.append(ItemResult(**raw))
        return cls(release=row.release_name, dataset=row.dataset, items=items, summary=data.get("summary", {}),
                   meta=data.get("meta", {}), run_id=row.id)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def resolved_index_version(settings: Settings, release: Release, store: IndexStore | None = None) -> int | None:
    """The index version the release answers from now (None = cannot tell here)."""
    try:
        store = store or IndexStore(KnowledgeConfig.from_settings(settings))
        return int(store.resolve_version(release.kb, release.index_version))
    except Exception:  # noqa: BLE001 - no index on this machine: the release's own pin is all we know
        return release.index_version


def generation_mode(settings: Settings, release: Release) -> str:
    return f"llm:{release.model}" if settings.anthropic_api_key else "extractive"


def fingerprint(settings: Settings, release: Release, dataset_sha256: str, judge_name: str | None,
                store: IndexStore | None = None) -> dict[str, Any]:
    """What makes two runs of one release comparable: same data, same index, same generation, same judge."""
    return {"release": release.name, "dataset_sha256": dataset_sha256, "kb": release.kb,
            "index_version": resolved_index_version(settings, release, store),
            "generation": generation_mode(settings, release), "judge": judge_name}


def release_config(release: Release) -> dict[str, Any]:
    return {"name": release.name, "model": release.model, "prompt_version": release.prompt_version,
            "kb": release.kb, "index_version": release.index_version, "retrieval_k": release.retrieval_k,
            "retrieval_candidates": release.retrieval_candidates, "min_score": release.min_score,
            "not_found_level": release.not_found_level, "fusion": release.fusion, "knowledge_sets": release.knowledge_sets,
            "query_rewrite": release.query_rewrite, "rewrite_model": release.rewrite_model}


# --- running ---------------------------------------------------------------------------------------------
async def resolve_release(db: Database, settings: Settings, name: str | None) -> Release:
    async with db.asession() as session:
        release = await get_release(session, name) if name else await active_release(session, settings)
    if release is None:
        raise EvalError(f"release '{name}' does not exist (see `deskmate admin releases`)")
    return release


async def warm_up(answerer: Answerer, release: Release) -> None:
    """Load the embedder and the release's index before anything is timed; a missing index fails the run."""
    try:
        await answerer.warm_up(release)
    except IndexNotFound as exc:
        raise EvalError(f"release '{release.name}' cannot answer here: {exc}") from exc


def default_concurrency(settings: Settings) -> int:
    if settings.eval_concurrency > 0:
        return settings.eval_concurrency
    return 4 if settings.anthropic_api_key else 1  # extractive answers are CPU work: parallel runs only queue


async def answer_item(answerer: Answerer, release: Release, item: GoldenItem, judge: Judge | None) -> ItemResult:
    result = ItemResult(qid=item.qid, question=item.question, answerable=item.answerable, scored=item.scored,
                        relevant_doc_ids=list(item.relevant_doc_ids), reference=item.answer,
                        regression=item.regression)
    try:
        composed = await answerer.answer(item.question, release, allow_llm=True)
    except Exception as exc:  # noqa: BLE001 - one broken item must not end the run; it counts as wrong
        log.exception("eval.item_failed", qid=item.qid)
        result.error = f"{type(exc).__name__}: {exc}"[:500]
        return score_item(result, rejected_answer=item.rejected_answer, rejected_status=item.rejected_status)
    result.status = composed.status.value
    result.answer = composed.text
    result.fallback = composed.fallback
    result.fallback_reason = composed.fallback_reason
    passages = composed.passages
    latency = composed.latency_ms
    result.retrieved_doc_ids = list(dict.fromkeys(p.doc_id for p in passages))
    result.cited_doc_ids = (list(dict.fromkeys(s.doc_id for s in composed.sources))
                            if result.status == "answered" else [])
    result.top_score = round(max((p.dense_score or 0.0 for p in passages), default=0.0), 4) if passages else None
    result.retrieve_ms = latency.get("retrieve", 0.0)
    result.generate_ms = latency.get("generate", 0.0)
    result.latency_ms = round(result.retrieve_ms + result.generate_ms, 1)
    result.cost_usd = composed.cost_usd
    result.input_tokens = composed.usage.input_tokens
    result.output_tokens = composed.usage.output_tokens
    score_item(result, rejected_answer=item.rejected_answer, rejected_status=item.rejected_status)
    if judge is not None and item.scored and item.answerable and item.answer:
        if result.declined:
            result.judge, result.judge_reason = 0.0, "declined an answerable question"
        else:
            verdict = await judge.grade(item.question, item.answer, clean_answer(result.answer))
            result.judge, result.judge_reason, result.judge_cost_usd = verdict.score, verdict.reason, verdict.cost_usd
    return result


async def evaluate_release(answerer: Answerer, settings: Settings, release: Release, items: list[GoldenItem], *,
                           dataset: Path, judge: Judge | None = None, concurrency: int | None = None,
                           progress: Progress | None = None, dataset_sha256: str | None = None,
                           store: IndexStore | None = None) -> EvalResult:
    """Every item through ``release``'s pipeline; the summary and meta filled in (not stored)."""
    await warm_up(answerer, release)
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    parallel = max(1, concurrency or default_concurrency(settings))
    semaphore = asyncio.Semaphore(parallel)
    done = 0

    async def one(item: GoldenItem) -> ItemResult:
        nonlocal done
        async with semaphore:
            result = await answer_item(answerer, release, item, judge)
        done += 1
        if progress is not None:
            progress(release.name, done, len(items))
        return result

    results = list(await asyncio.gather(*(one(i) for i in items)))
    sha = dataset_sha256 or file_sha256(dataset)
    meta = {
        "fingerprint": fingerprint(settings, release, sha, judge.name if judge else None, store),
        "release_config": release_config(release),
        "dataset_name": dataset.name,
        "started_at": started.isoformat(),
        "seconds": round(time.perf_counter() - t0, 2),
        "concurrency": parallel,
    }
    return EvalResult(release=release.name, dataset=str(dataset), items=results, summary=summarize(results), meta=meta)


async def store_run(db: Database, result: EvalResult, *, kind: str = "run") -> int:
    result.meta["kind"] = kind
    row = EvalRun(release_name=result.release, dataset=result.dataset[-512:],
                  metrics={"summary": result.summary, "meta": result.meta,
                           "items": [i.to_dict() for i in result.items]})
    async with db.asession() as session:
        session.add(row)
        await session.commit()
        await session.refresh(row)
    assert row.id is not None
    result.run_id = row.id
    return row.id


async def run_eval(answerer: Answerer, settings: Settings, dataset: Path, releases: list[str | None], *,
                   judge: bool | None = None, concurrency: int | None = None, progress: Progress | None = None,
                   store: bool = True, kind: str = "run", db: Database | None = None) -> list[EvalResult]:
    """Evaluate each named release (None = the active one) on the same items; stored as EvalRuns.

    ``db`` defaults to the process's database for ``settings``, migrated first.
    """
    if db is None:
        db = get_database(settings.database_url_resolved())
        db.migrate()
    items = load_golden(dataset)
    sha = file_sha256(dataset)
    index = IndexStore(KnowledgeConfig.from_settings(settings))
    resolved = [await resolve_release(db, settings, name) for name in releases]
    for release in resolved:  # every index loaded before the first timed item of any release
        await warm_up(answerer, release)
    grader = make_judge(settings, enabled=judge)
    try:
        results = []
        for release in resolved:
            result = await evaluate_release(answerer, settings, release, items, dataset=dataset, judge=grader,
                                            concurrency=concurrency, progress=progress, dataset_sha256=sha,
                                            store=index)
            if store:
                await store_run(db, result, kind=kind)
            results.append(result)
    finally:
        if grader is not None:
            await grader.close()
    return results


# --- comparing -------------------------------------------------------------------------------------------
def compare(a: EvalResult, b: EvalResult, *, margin: float = WIN_MARGIN) -> dict[str, Any]:
    """Metric deltas (b − a) and per-item wins / losses of ``b`` against ``a`` on the items both scored."""
    metrics = []
    for m in METRICS:
        va, vb = a.summary.get(m.key), b.summary.get(m.key)
        delta = None if va is None or vb is None else round(vb - va, 6)
        better = None
        if delta is not None and abs(delta) > 1e-9:
            better = "b" if (delta > 0) == m.higher_is_better else "a"
        metrics.append({"key": m.key, "label": m.label, "a": va, "b": vb, "delta": delta, "better": better})
    by_qid = {i.qid: i for i in a.items}
    wins, losses, ties = [], [], 0
    rows = []
    for ib in b.items:
        ia = by_qid.get(ib.qid)
        if ia is None or ia.score is None or ib.score is None:
            continue
        diff = ib.score - ia.score
        row = {"qid": ib.qid, "question": ib.question, "answerable": ib.answerable, "a_score": round(ia.score, 3),
               "b_score": round(ib.score, 3), "a_status": ia.status, "b_status": ib.status,
               "a_cited": ia.cited_doc_ids, "b_cited": ib.cited_doc_ids, "relevant": ib.relevant_doc_ids}
        rows.append(row)
        if diff > margin:
            wins.append(row)
        elif diff < -margin:
            losses.append(row)
        else:
            ties += 1
    return {"a": a.release, "b": b.release, "metrics": metrics, "wins": wins, "losses": losses, "ties": ties,
            "items": rows, "margin": margin}
