"""Feedback to Langfuse: a vote as a score on its answer's trace, and labelled items as a Langfuse dataset.

- :func:`send_vote_score` is what the one vote path (:class:`feedback.votes.Votes`) calls after storing a vote: the
  score ``user_feedback`` (1 = 👍, 0 = 👎, the reason as comment) on the trace, sent in the background by the
  process's :class:`~bot.tracing.Tracer`.
- :func:`push_scores` (``deskmate feedback push-scores``) sends the current labels again with ids derived from
  the feedback row, so re-running it, or a changed vote, overwrites one score instead of adding another; it
  backfills votes given while Langfuse was down or not yet configured.
- :func:`push_dataset` (``deskmate feedback push-dataset NAME``) creates the dataset if needed and upserts
  one item per labelled answer: input = the question, expected output = the answer for 👍 (none for 👎),
  metadata = label, reason, release, cited documents; linked to the source trace.

The last two use the SDK's REST client (``langfuse.api``) only: no OpenTelemetry machinery for a CLI command.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol, TYPE_CHECKING, Any

from bot.core.log import get_logger
from bot.core.settings import Settings
from bot.core.types import FEEDBACK_SCORE
from feedback.golden import GoldenItem

if TYPE_CHECKING:  # importing langfuse has side effects (a handler on the httpx logger): only when used
    from langfuse.api.client import LangfuseAPI

log = get_logger(__name__)


class LangfuseNotConfigured(RuntimeError):
    pass


def score_value(label: str) -> float:
    return 1.0 if label == "up" else 0.0


def score_id(feedback_id: int | None, trace_id: str) -> str:
    """One stable score id per feedback row (Langfuse upserts scores by id)."""
    return "deskmate-fb-" + hashlib.sha256(f"{feedback_id}:{trace_id}".encode()).hexdigest()[:24]


class ScoreSink(Protocol):
    """Where vote scores go: the tracer (``bot.tracing.Tracer``) when Langfuse is configured."""

    @property
    def enabled(self) -> bool: ...

    def score(self, *, trace_id: str, name: str, value: float, comment: str | None = None,
              score_id: str | None = None) -> None: ...


def send_vote_score(tracer: ScoreSink | None, *, trace_id: str | None, label: str, reason: str | None = None,
                    feedback_id: int | None = None) -> bool:
    """The vote as the ``user_feedback`` score on its trace (no-op without a tracer, Langfuse or trace id).

    A 👎 reason travels as the score's comment. The score id is stable per feedback row, so a changed vote
    replaces the earlier score in Langfuse instead of adding a second one.
    """
    if tracer is None or not trace_id or label not in ("up", "down") or not tracer.enabled:
        return False
    kwargs: dict[str, Any] = {"trace_id": trace_id, "name": FEEDBACK_SCORE, "value": score_value(label),
                              "comment": reason}
    if feedback_id is not None:
        kwargs["score_id"] = score_id(feedback_id, trace_id)
    tracer.score(**kwargs)
    return True


def api_client(settings: Settings, *, timeout_s: float = 10.0) -> LangfuseAPI:
    """Langfuse's REST client for the configured project."""
    if not settings.langfuse_enabled():
        raise LangfuseNotConfigured("Langfuse is not configured (set DESKMATE_LANGFUSE_PUBLIC_KEY and _SECRET_KEY)")
    from langfuse import __version__ as sdk_version  # noqa: PLC0415 - side effects: only when used
    from langfuse.api.client import LangfuseAPI  # noqa: PLC0415 - side effects: only when used

    return LangfuseAPI(
        base_url=settings.langfuse_host.rstrip("/"), username=settings.langfuse_public_key,
        password=settings.langfuse_secret_key, x_langfuse_sdk_name="python", x_langfuse_sdk_version=sdk_version,
        x_langfuse_public_key=settings.langfuse_public_key, timeout=timeout_s,
    )


@dataclass
class PushResult:
    sent: int = 0
    skipped: int = 0  # no trace id (answered before Langfuse was configured) / nothing to push
    failed: int = 0


def push_scores(settings: Settings, rows: list[dict[str, Any]], *, client: LangfuseAPI | None = None,
                batch_size: int = 100) -> PushResult:
    """The labels of exported rows as ``user_feedback`` scores on their traces (idempotent per feedback row)."""
    from langfuse.api.scores.types import CreateScoreBatchResults, CreateScoreRequest  # noqa: PLC0415 - side effects: only when used

    client = client or api_client(settings)
    result = PushResult()
    scores = []
    for row in rows:
        trace_id = row.get("trace_id")
        if not trace_id:
            result.skipped += 1
            continue
        scores.append(CreateScoreRequest(id=score_id(row["feedback_id"], trace_id), trace_id=trace_id,
                                         name=FEEDBACK_SCORE, value=score_value(row["label"]),
                                         comment=row.get("reason"), environment=settings.environment))
    for start in range(0, len(scores), batch_size):
        batch = scores[start:start + batch_size]
        try:
            response = client.scores.create(request=batch)
        except Exception as exc:  # noqa: BLE001 - report and go on; the command exits non-zero on failures
            log.warning("langfuse.score_push_failed", scores=len(batch), error=type(exc).__name__)
            result.failed += len(batch)
            continue
        if isinstance(response, CreateScoreBatchResults):  # 207: some rejected
            result.sent += response.accepted
            result.failed += response.rejected
        else:
            result.sent += len(batch)
    return result


def dataset_item_id(dataset: str, key: str) -> str:
    """Item ids are global in a Langfuse project: derive them from the dataset name and the item's key."""
    return "deskmate-" + hashlib.sha256(f"{dataset}\x00{key}".encode()).hexdigest()[:32]


def feedback_item(row: dict[str, Any]) -> dict[str, Any]:
    """A labelled answer as a dataset item (keyword arguments of ``dataset_items.create`` minus the name)."""
    up = row["label"] == "up"
    return {
        "id_key": f"feedback:{row['feedback_id']}",
        "input": {"question": row["question"]},
        "expected_output": {"answer": row["answer"], "cited_doc_ids": row["cited_doc_ids"]} if up else None,
        "metadata": {"label": row["label"], "reason": row.get("reason"), "release": row.get("release"),
                     "status": row.get("status"), "interaction_id": row["interaction_id"],
                     "platform": row.get("platform"), "answer": row["answer"], "cited_doc_ids": row["cited_doc_ids"],
                     "voted_at": row.get("voted_at"), "source": "deskmate-feedback"},
        "source_trace_id": row.get("trace_id") or None,
    }


def golden_item(item: GoldenItem) -> dict[str, Any]:
    return {
        "id_key": f"golden:{item.qid}",
        "input": {"question": item.question},
        "expected_output": {"answer": item.answer, "relevant_doc_ids": item.relevant_doc_ids,
                            "answerable": item.answerable},
        "metadata": {"qid": item.qid, "source": "deskmate-golden", "origin": item.origin or None},
        "source_trace_id": None,
    }


def push_dataset(settings: Settings, name: str, items: list[dict[str, Any]], *, description: str = "",
                 client: LangfuseAPI | None = None) -> PushResult:
    """Create dataset ``name`` (if missing) and upsert ``items`` (from :func:`feedback_item` / :func:`golden_item`)."""
    client = client or api_client(settings)
    _ensure_dataset(client, name, description)
    result = PushResult()
    for item in items:
        fields = {k: v for k, v in item.items() if k != "id_key"}
        try:
            client.dataset_items.create(dataset_name=name, id=dataset_item_id(name, item["id_key"]), **fields)
            result.sent += 1
        except Exception as exc:  # noqa: BLE001
            log.warning("langfuse.dataset_item_failed", dataset=name, key=item["id_key"], error=type(exc).__name__)
            result.failed += 1
    return result


def _ensure_dataset(client: LangfuseAPI, name: str, description: str) -> None:
    from langfuse.api.core.api_error import ApiError  # noqa: PLC0415 - side effects: only when used

    try:
        client.datasets.get(name)
        return
    except ApiError as exc:
        if exc.status_code != 404:
            raise
    client.datasets.create(name=name, description=description or "Deskmate labelled answers",
                           metadata={"created_by": "deskmate"})
