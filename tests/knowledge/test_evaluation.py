"""`deskmate eval retrieval` with conversations: a question's history is searched as the worker's offline path
searches it; --no-history searches the turn alone; --standalone-field searches another field; results per
language when several are present."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bot.cli import knowledge as knowledge_cli
from knowledge.evaluation import evaluate_retrieval, item_query, load_qrels
from knowledge.query import ChatTurn, offline_query
from knowledge.retrieval import Retriever
from tests.conftest import settings_for

KB = "default"
VPN_HISTORY = [{"role": "user", "text": "vpn not working"},
               {"role": "assistant", "text": "Switch NorthGate to TCP fallback on hotel Wi-Fi [1]."}]
ROWS: list[dict[str, Any]] = [
    {"qid": "f1", "corpus": "sample", "lang": "en", "history": VPN_HISTORY, "question": "and if that doesn't help?",
     "standalone": "The VPN still does not work after troubleshooting: what next?", "relevant_doc_ids": ["it/vpn"]},
    {"qid": "f2", "corpus": "sample", "lang": "en", "question": "How many days of annual leave do I get?",
     "standalone": "How many days of annual leave do I get?", "relevant_doc_ids": ["people/annual-leave"]},
    {"qid": "f3", "corpus": "sample", "lang": "pt", "history": VPN_HISTORY, "question": "e se isso não ajudar?",
     "standalone": "VPN still not working after troubleshooting", "relevant_doc_ids": ["it/vpn"]},
    {"qid": "x1", "corpus": "18f", "question": "What is TTS?", "standalone": "What is TTS?",
     "relevant_doc_ids": ["about-us/tts"]},
]


@pytest.fixture
def qrels(tmp_path: Path) -> Path:
    path = tmp_path / "followups.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in ROWS) + "\n", encoding="utf-8")
    return path


def test_history_and_language_are_read(qrels: Path) -> None:
    items = load_qrels(qrels, corpus="sample")
    assert [i.qid for i in items] == ["f1", "f2", "f3"], "--corpus keeps one corpus"
    assert items[0].history == [ChatTurn("user", "vpn not working"),
                                ChatTurn("assistant", "Switch NorthGate to TCP fallback on hotel Wi-Fi [1].")]
    assert (items[0].lang, items[1].history) == ("en", [])
    assert len(load_qrels(qrels)) == 4


def test_a_bad_history_is_reported_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"question": "q", "relevant_doc_ids": ["d"],
                                "history": [{"role": "system", "text": "x"}]}) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        load_qrels(path)


def test_the_query_is_built_as_the_worker_builds_it(qrels: Path, sample_retriever: Retriever) -> None:
    item = load_qrels(qrels, corpus="sample")[0]
    vocabulary = sample_retriever.vocabulary(KB)
    expected = offline_query(item.question, item.history, vocabulary=vocabulary).text
    assert item_query(item, vocabulary=vocabulary) == expected
    assert expected.startswith("and if that doesn't help? vpn working ") and "tcp" in expected
    assert item_query(item, vocabulary=vocabulary, use_history=False) == "and if that doesn't help?"
    assert item_query(item, vocabulary=vocabulary, query_field="standalone") == item.fields["standalone"]
    with pytest.raises(ValueError, match="no 'rewritten' text"):
        item_query(item, vocabulary=vocabulary, query_field="rewritten")


def test_history_helps_the_follow_up_and_results_are_given_per_language(qrels: Path,
                                                                        sample_retriever: Retriever) -> None:
    items = load_qrels(qrels, corpus="sample")
    with_history = evaluate_retrieval(sample_retriever, items, kb=KB, modes=("hybrid",))
    alone = evaluate_retrieval(sample_retriever, items, kb=KB, modes=("hybrid",), use_history=False)
    assert (with_history["query"], alone["query"]) == ("history", "alone")
    assert with_history["groups"]["en"]["hybrid"]["recall@1"] == 1.0
    assert alone["groups"]["en"]["hybrid"]["recall@1"] == 0.5, "the follow-up alone misses the VPN page"
    assert with_history["group_by"] == "lang" and set(with_history["groups"]) == {"en", "pt"}
    assert with_history["groups"]["pt"]["n"] == 1
    one_language = evaluate_retrieval(sample_retriever, items[:2], kb=KB, modes=("hybrid",))
    assert "groups" not in one_language


def test_the_command_prints_a_table_per_language(qrels: Path, sample_data_dir: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(knowledge_cli, "get_settings", lambda: settings_for(sample_data_dir))
    runner = CliRunner()
    base = ["--qrels", str(qrels), "--corpus", "sample", "--kb", KB]
    shown = runner.invoke(_app(), [*base])
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())
    assert "with history (offline query)" in text and "lang = en" in text and "lang = pt" in text
    as_json = runner.invoke(_app(), [*base, "--json", "--standalone-field", "standalone", "--by", "qid"])
    assert as_json.exit_code == 0, as_json.output
    results = json.loads(as_json.stdout)
    assert results["query"] == "standalone" and set(results["groups"]) == {"f1", "f2", "f3"}
    alone = json.loads(runner.invoke(_app(), [*base, "--json", "--no-history"]).stdout)
    assert alone["query"] == "alone" and alone["n"] == 3


def _app() -> Any:
    import typer

    app = typer.Typer()
    app.command()(knowledge_cli.eval_retrieval_command)
    return app
