"""Questions in other languages, and the calibrated "not found" (knowledge.calibration).

On the shared sample index (English documents; built with the default second, cross-lingual embedder): a
question in German, Spanish, French or Chinese finds its page, an everyday question in any language is "not
found" while a handbook question is answered; and on small indexes of their own: the cross-lingual vectors are
kept, copied and pruned with their version, and a version without a calibration falls back to the raw cosine.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from knowledge.calibration import ROUTES, null_questions, relevance
from knowledge.config import KnowledgeConfig
from knowledge.index import IndexStore, collection_name
from knowledge.ingest import ingest
from knowledge.retrieval import FusionConfig, Retriever, relevant_enough
from tests.knowledge.test_index import write_docs

KB = "default"
LEVEL = 0.75  # Settings.retrieval_not_found_level


@pytest.mark.parametrize("question,doc_id", [
    ("Wie hoch ist das Tagegeld für Mahlzeiten in den USA?", "travel/per-diem"),
    ("¿Cuántas semanas de permiso de paternidad tengo?", "people/parental-leave"),
    ("Comment signaler un e-mail d'hameçonnage ?", "security/phishing"),
    ("我的笔记本电脑丢了，怎么办？", "security/lost-device"),
    ("VPN 连不上", "it/vpn"),
])
def test_a_question_in_another_language_finds_its_english_page(sample_retriever: Retriever, question: str,
                                                                 doc_id: str) -> None:
    passages = sample_retriever.search(question, kb=KB, k=5, fusion=FusionConfig())
    assert passages and passages[0].doc_id == doc_id, [p.doc_id for p in passages]
    assert relevant_enough(passages, level=LEVEL, min_score=0.3), "and it is answered, not 'not found'"


def test_the_cross_lingual_vectors_are_what_find_it(sample_retriever: Retriever) -> None:
    """A release made before them searches with the English model alone (FusionConfig without the key)."""
    question = "Wie hoch ist das Tagegeld für Mahlzeiten in den USA?"
    before = sample_retriever.search(question, kb=KB, k=5, fusion=FusionConfig.from_dict({}))
    after = sample_retriever.search(question, kb=KB, k=5, fusion=FusionConfig.from_dict({"crosslingual": True}))
    assert after[0].doc_id == "travel/per-diem"
    assert before[0].dense_score != after[0].dense_score, "another embedder's cosine"


@pytest.mark.parametrize("question", [
    "what's a good recipe for banana bread",  # not one of the bundled null questions
    "Wer hat 1990 die Fußball-Weltmeisterschaft gewonnen?",
    "¿Cómo se hace una tortilla de patatas?",
    "怎么给自行车的链条上油？",
])
def test_an_everyday_question_is_not_found_in_any_language(sample_retriever: Retriever, question: str) -> None:
    passages = sample_retriever.search(question, kb=KB, k=6, fusion=FusionConfig())
    assert passages, "retrieval always proposes something"
    assert all(p.relevance is not None for p in passages), "the sample index is calibrated"
    assert not relevant_enough(passages, level=LEVEL, min_score=0.3), [(p.doc_id, p.relevance) for p in passages]


def test_the_sample_version_is_calibrated_per_route(sample_retriever: Retriever) -> None:
    data = sample_retriever.store.load(KB)
    assert data.crosslingual == "use-multilingual-v3"
    english = sum(1 for lang, _ in null_questions() if lang == "en")
    assert set(data.null_scores) == set(ROUTES)
    assert len(data.null_scores["native"]) == english
    assert len(data.null_scores["foreign"]) == len(null_questions()) - english
    for scores in data.null_scores.values():
        assert scores == sorted(scores) and all(-1.0 <= s <= 1.0 for s in scores)
    assert relevance(max(data.null_scores["native"]) + 0.01, data.null_scores["native"]) == 1.0
    assert relevance(min(data.null_scores["native"]), data.null_scores["native"]) == 0.0
    assert relevance(None, data.null_scores["native"]) is None and relevance(0.5, []) is None


def _kb(tmp_path: Path) -> Path:
    return write_docs(tmp_path / "kb")


def test_cross_lingual_vectors_follow_their_version(tmp_path: Path) -> None:
    kb_dir = _kb(tmp_path)
    store = IndexStore(KnowledgeConfig(index_dir=tmp_path / "index", chroma_dir=tmp_path / "chroma",
                                       index_keep_versions=1))
    ingest(store, kb_dir, kb="t")
    (kb_dir / "it/vpn.md").write_text("---\ntitle: VPN\n---\n## Connecting\n\nOpen NorthGate and use your passkey.\n")
    second = ingest(store, kb_dir, kb="t")
    assert second.version == 2 and second.chunks_embedded == 1, "unchanged chunks keep both of their vectors"
    assert store.collection("t", 2, crosslingual=True).count() == second.chunks_total
    data = store.load("t")
    assert data.vectors is not None and data.crosslingual_vectors is not None
    assert data.vectors.shape == (second.chunks_total, 384) and data.crosslingual_vectors.shape[1] == 512
    stored = store.collection("t", 2).get(ids=[data.chunks[0].chunk_id], include=["embeddings"])["embeddings"]
    assert stored is not None and list(data.vectors[0]) == pytest.approx(list(stored[0]), abs=1e-6)
    names = {c.name for c in store.client.list_collections()}
    assert collection_name("t", 2, crosslingual=True) in names
    assert not {collection_name("t", 1), collection_name("t", 1, crosslingual=True)} & names, "pruned together"

    top = Retriever(store).search("Wie melde ich mich beim VPN an?", kb="t", k=1, fusion=FusionConfig())[0]
    assert top.doc_id == "it/vpn" and "passkey" in top.text


def test_one_embedder_when_the_cross_lingual_one_is_off(tmp_path: Path) -> None:
    store = IndexStore(KnowledgeConfig(index_dir=tmp_path / "index", chroma_dir=tmp_path / "chroma",
                                       crosslingual=None))
    ingest(store, _kb(tmp_path), kb="t")
    data = store.load("t")
    assert data.crosslingual is None and data.null_scores["foreign"], "foreign questions calibrated on MiniLM"
    names = {c.name for c in store.client.list_collections()}
    assert names == {collection_name("t", 1)}
    passages = Retriever(store).search("Wie hoch ist das Tagegeld?", kb="t", k=2, fusion=FusionConfig())
    assert passages and all(p.relevance is not None for p in passages)


def test_a_version_built_before_the_calibration_decides_on_the_raw_cosine(tmp_path: Path) -> None:
    store = IndexStore(KnowledgeConfig(index_dir=tmp_path / "index", chroma_dir=tmp_path / "chroma"))
    ingest(store, _kb(tmp_path), kb="t")
    vdir = tmp_path / "index" / "t" / "v1"
    with_files = Retriever(IndexStore(KnowledgeConfig(index_dir=tmp_path / "index", chroma_dir=tmp_path / "chroma")))
    expected = with_files.search("what is the daily meal allowance in Europe", kb="t", k=2)
    for name in ("vectors.json", "vectors.npy", "vectors_xl.npy"):  # versions built before them have none
        (vdir / name).unlink()
    fresh = IndexStore(KnowledgeConfig(index_dir=tmp_path / "index", chroma_dir=tmp_path / "chroma"))
    data = fresh.load("t")
    assert data.crosslingual is None and data.null_scores == {} and data.vectors is None
    passages = Retriever(fresh).search("what is the daily meal allowance in Europe", kb="t", k=2)
    assert passages[0].doc_id == "travel/per-diem" and passages[0].relevance is None
    assert [p.dense_score for p in passages] == pytest.approx([p.dense_score for p in expected], abs=1e-5), (
        "the vector store's vectors, when the version has no matrix of its own: the same cosines")
    best = max(p.dense_score or 0.0 for p in passages)
    assert relevant_enough(passages, level=LEVEL, min_score=best - 0.01)
    assert not relevant_enough(passages, level=LEVEL, min_score=best + 0.01)


def test_null_questions_are_bundled_in_every_reply_language() -> None:
    from knowledge.language import LANGUAGES

    by_language: dict[str, int] = {}
    for lang, question in null_questions():
        assert question.strip()
        by_language[lang] = by_language.get(lang, 0) + 1
    assert set(by_language) == set(LANGUAGES) and len(set(by_language.values())) == 1
    path = Path(__file__).resolve().parents[2] / "knowledge" / "assets" / "null_questions.jsonl"
    assert all(json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines())
