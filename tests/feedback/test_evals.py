"""The eval runner on a small golden set: the real pipeline, offline (extractive) and with a (fake) Claude."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from bot import cli as bot_cli
from bot.cli import feedback as feedback_cli
from bot.core.settings import Settings
from feedback.evals.judge import RUBRIC, parse_verdict
from bot.status_text import fallback_label, wording
from feedback.evals.metrics import LEGACY_NOT_FOUND_TEXT, ItemResult, clean_answer, percentile, score_item, token_f1
from feedback.evals.report import render_html, to_json
from feedback.evals.runner import EvalError, compare
from feedback.models import EvalRun
from playbooks.releases import create_release
from tests.fakes.anthropic_server import Reply
from tests.feedback.helpers import SMALL_GOLDEN, evaluate, write_golden


def test_token_f1_and_answer_cleaning() -> None:
    assert token_f1("USD 80 a day", "USD 80 a day.") == 1.0
    assert token_f1("The per diem is USD 80", "USD 80 per day") == pytest.approx(2 * (3 / 5) * (3 / 4) / (3 / 5 + 3 / 4))
    assert token_f1("nothing shared", "USD 80") == 0.0
    text = "_Automatic excerpt — not written by the AI model (no API key configured)._\n\n> USD 80 a day. [1]"
    assert clean_answer(text) == "USD 80 a day."
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([], 95) is None


def test_the_excerpt_label_is_dropped_in_any_language() -> None:
    for language in ("de", "zh", "ja"):
        text = f"{fallback_label('no API key configured', language)}\n\n> USD 80 a day. [1]"
        assert clean_answer(text) == "USD 80 a day.", language
    assert clean_answer("_Note — see below_ and more\n\nUSD 80") == "_Note — see below_ and more\n\nUSD 80", \
        "only a whole italic first line is a label"


def regression_item(status: str) -> ItemResult:
    return ItemResult(qid="fb1", question="Wie hoch ist das Tagegeld?", answerable=None, scored=False,
                      relevant_doc_ids=[], status=status, answer="…", regression=True)


def test_a_rejected_not_found_reply_is_recognised_by_its_status_in_any_language() -> None:
    german = f"{wording('de').not_found}\n\n{wording('de').closest_sources}"
    declined_again = score_item(regression_item("not_found"), rejected_answer=german, rejected_status="not_found")
    assert declined_again.repeated_rejected is True
    answered_now = score_item(regression_item("answered"), rejected_answer=german, rejected_status="not_found")
    assert answered_now.repeated_rejected is False
    # items promoted before the status was recorded: the English text (replies were English-only then)
    assert wording("en").not_found.startswith(LEGACY_NOT_FOUND_TEXT)
    legacy = score_item(regression_item("not_found"), rejected_answer=wording("en").not_found)
    assert legacy.repeated_rejected is True


def test_judge_verdicts_parse() -> None:
    assert parse_verdict("SCORE: 2\nREASON: states the allowance") == (1.0, "states the allowance")
    assert parse_verdict("score = 1\nreason: misses the 75%")[0] == 0.5
    assert parse_verdict("I think it is fine")[0] is None
    assert "SCORE: <0, 1 or 2>" in RUBRIC


async def test_offline_eval_runs_the_extractive_pipeline(settings: Settings, small_golden: Path, db) -> None:
    [result] = await evaluate(settings, small_golden, [None])
    s = result.summary
    assert (s["n"], s["n_answerable"], s["n_unanswerable"]) == (5, 3, 2)
    by_qid = {i.qid: i for i in result.items}
    per_diem = by_qid["t1"]
    assert per_diem.status == "answered" and per_diem.fallback, "no key: the extractive fallback"
    assert per_diem.retrieved_doc_ids[0] == "travel/per-diem" and per_diem.cited_doc_ids[0] == "travel/per-diem"
    assert per_diem.recall == 1.0 and per_diem.rr == 1.0 and per_diem.f1 and per_diem.f1 > 0
    assert per_diem.judge is None, "no key: no judge"
    assert by_qid["t4"].declined and by_qid["t5"].declined, "off-topic questions fall below min_score"
    assert s["recall_at_k"] == 1.0 and s["mrr"] == 1.0 and s["citation_coverage"] == 1.0
    assert s["abstention_unanswerable"] == 1.0 and s["answered_answerable"] == 1.0
    assert s["judge_score"] is None and s["cost_per_answer_usd"] == 0.0 and s["fallback_rate"] == 1.0
    assert s["latency_p50_ms"] > 0 and s["latency_p95_ms"] >= s["latency_p50_ms"]
    assert result.fingerprint["generation"] == "extractive" and result.fingerprint["index_version"] == 1

    async with db.asession() as session:
        [row] = (await session.exec(select(EvalRun))).all()
    assert row.id == result.run_id and row.release_name == "initial"
    assert row.metrics["summary"] == s and len(row.metrics["items"]) == 5 and row.metrics["meta"]["kind"] == "run"


async def test_eval_with_claude_cites_and_is_judged(make_settings, fake_anthropic, small_golden: Path) -> None:
    settings: Settings = make_settings(anthropic_api_key="test-key", anthropic_base_url=fake_anthropic.url,
                                       llm_max_retries=0, eval_concurrency=1)
    rows = SMALL_GOLDEN[:1] + SMALL_GOLDEN[3:4]  # the per diem, the capital of Australia
    dataset = write_golden(small_golden.with_name("two.jsonl"), rows)
    # answer (cites the first search result), judge's grade; the capital question never reaches the model
    fake_anthropic.script(Reply.answer(cite=[0]), Reply.plain("SCORE: 2\nREASON: gives the USD 80 allowance"))
    [result] = await evaluate(settings, dataset, [None])
    per_diem, capital = result.items
    assert per_diem.status == "answered" and not per_diem.fallback
    assert per_diem.cited_doc_ids == ["travel/per-diem"] and per_diem.citation_precision == 1.0
    assert per_diem.judge == 1.0 and per_diem.judge_reason == "gives the USD 80 allowance"
    assert per_diem.cost_usd > 0 and per_diem.judge_cost_usd > 0
    assert capital.declined and capital.abstention_ok
    judge_request = fake_anthropic.message_requests[1].body
    assert judge_request["system"] == RUBRIC and "USD 80 for a full day" in json.dumps(judge_request["messages"])
    s = result.summary
    assert s["judge_score"] == 1.0 and s["citation_coverage"] == 1.0 and s["cost_per_answer_usd"] > 0
    assert result.fingerprint["generation"] == "llm:claude-sonnet-5-5" and "judge-v1" in result.fingerprint["judge"]
    assert len(fake_anthropic.message_requests) == 2
    assert render_html([result]).count("<svg") == 3, "bars, latency and cost distributions"


async def test_compare_reports_wins_and_losses(settings: Settings, small_golden: Path, db) -> None:
    async with db.asession() as session:
        await create_release(session, settings, "blind", actor="test", retrieval_k=0)
    a, b = await evaluate(settings, small_golden, [None, "blind"])
    comparison = compare(a, b)
    assert {r["qid"] for r in comparison["losses"]} == {"t1", "t2", "t3"}, "k=0 declines every answerable question"
    assert comparison["wins"] == [] and comparison["ties"] == 2
    deltas = {m["key"]: m for m in comparison["metrics"]}
    assert deltas["recall_at_k"]["delta"] == -1.0 and deltas["recall_at_k"]["better"] == "a"
    assert b.summary["answered_answerable"] == 0.0

    page = render_html([a, b])
    assert page.startswith("<!doctype html>") and page.count("<svg") == 2, "bars and latency; cost is all 0"
    assert "Every answer: 0 USD" in page
    assert "http" not in page.split("<body>")[1].replace("http://www.w3.org/2000/svg", ""), "self-contained"
    assert "worse on 3" in page and "blind" in page
    payload = json.loads(to_json([a, b]))
    assert payload["comparison"]["losses"][0]["qid"] == "t1" and len(payload["runs"]) == 2


async def test_unknown_release_or_missing_index_is_a_clear_error(settings: Settings, small_golden: Path, db) -> None:
    with pytest.raises(EvalError, match="does not exist"):
        await evaluate(settings, small_golden, ["nope"])
    async with db.asession() as session:
        await create_release(session, settings, "elsewhere", actor="test", kb="missing-kb", index_version=3)
    with pytest.raises(EvalError, match="cannot answer here"):
        await evaluate(settings, small_golden, ["elsewhere"])


async def test_eval_commands(settings: Settings, small_golden: Path, tmp_path: Path, monkeypatch, db) -> None:
    monkeypatch.setattr(feedback_cli, "get_settings", lambda: settings)
    monkeypatch.setattr(bot_cli, "get_settings", lambda: settings)
    async with db.asession() as session:
        await create_release(session, settings, "blind", actor="test", retrieval_k=0)
    runner = CliRunner()
    html_path = tmp_path / "report.html"
    result = await asyncio.to_thread(runner.invoke, bot_cli.app, ["eval", "run", "--dataset", str(small_golden),
                                                                  "--json", "--html", str(html_path)])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout[result.stdout.index("{"):])
    assert payload["runs"][0]["summary"]["recall_at_k"] == 1.0 and html_path.read_text().count("<svg") == 2
    result = await asyncio.to_thread(runner.invoke, bot_cli.app, ["eval", "compare", "initial", "blind",
                                                                  "--dataset", str(small_golden)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())  # rich wraps at the terminal's width
    assert "B better on 0, worse on 3, same on 2" in text
