"""The versioned index with real Chroma, BM25 and the real embedding model: incremental, deletions, versions,
filters, and the CLI's JSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.core.settings import SAMPLE_KNOWLEDGE_DIR
from knowledge.config import KnowledgeConfig
from knowledge.index import IndexNotFound, IndexStore
from knowledge.ingest import ingest
from knowledge.retrieval import Retriever, SearchFilter

DOCS = {
    "travel/per-diem.md": "---\ntitle: Per diem\n---\n## Meals\n\nThe daily meal allowance is EUR 60 in Europe.\n",
    "it/vpn.md": "---\ntitle: VPN\n---\n## Connecting\n\nOpen NorthGate and sign in with your badge number.\n",
    "it/laptops.md": "---\ntitle: Laptops\n---\n## Replacement\n\nLaptops are replaced every three years.\n",
    "engineering/on-call.md": "---\ntitle: On-call\nvisibility: restricted\n---\n## Pay\n\n"
                              "The on-call allowance is EUR 250 per week.\n",
}


def config_for(data_dir: Path, index_keep_versions: int = 3) -> KnowledgeConfig:
    return KnowledgeConfig(index_dir=data_dir / "index", chroma_dir=data_dir / "chroma",
                           index_keep_versions=index_keep_versions)


def write_docs(root: Path) -> Path:
    """The small knowledge base above, written under ``root``."""
    for rel, text in DOCS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


@pytest.fixture
def kb_dir(tmp_path: Path) -> Path:
    return write_docs(tmp_path / "kb")


@pytest.fixture
def store(tmp_path: Path) -> IndexStore:
    return IndexStore(config_for(tmp_path / "data", index_keep_versions=2))


def test_incremental_reingest_embeds_only_what_changed(store: IndexStore, kb_dir: Path) -> None:
    first = ingest(store, kb_dir, kb="t")
    assert first.version == 1 and sorted(first.ingested) == sorted(p[:-3] for p in DOCS)
    assert first.chunks_embedded == first.chunks_total == 4

    again = ingest(store, kb_dir, kb="t")
    assert not again.created_version and again.version == 1 and len(again.unchanged) == 4

    (kb_dir / "it/vpn.md").write_text("---\ntitle: VPN\n---\n## Connecting\n\nOpen NorthGate and use your passkey.\n")
    (kb_dir / "it/laptops.md").unlink()
    (kb_dir / "people").mkdir()
    (kb_dir / "people/leave.md").write_text("# Leave\n\nEveryone gets 25 days of annual leave.\n")
    third = ingest(store, kb_dir, kb="t")
    assert third.version == 2
    assert third.updated == ["it/vpn"] and third.deleted == ["it/laptops"] and third.ingested == ["people/leave"]
    assert third.chunks_embedded == 2, "unchanged documents keep their vectors"

    retriever = Retriever(store)
    top = retriever.search("how do I sign in to the VPN", kb="t", k=1)[0]
    assert top.doc_id == "it/vpn" and "passkey" in top.text and top.index_version == 2
    assert all(p.doc_id != "it/laptops" for p in retriever.search("laptop replacement", kb="t", k=5))
    # the previous version is kept and still answers as it did
    old = retriever.search("laptop replacement", kb="t", version=1, k=1)[0]
    assert old.doc_id == "it/laptops"


def test_old_versions_are_pruned_but_pinned_ones_kept(store: IndexStore, kb_dir: Path) -> None:
    ingest(store, kb_dir, kb="t")
    for i in range(3):
        (kb_dir / "it/vpn.md").write_text(f"# VPN\n\nRevision {i} of the VPN page, with enough words.\n")
        ingest(store, kb_dir, kb="t", protected_versions={1})
    kept = [v["version"] for v in store.manifest("t").versions]
    assert kept == [1, 3, 4]
    with pytest.raises(IndexNotFound, match="not kept"):
        store.resolve_version("t", 2)


def test_filters_by_knowledge_set_and_visibility(store: IndexStore, kb_dir: Path) -> None:
    ingest(store, kb_dir, kb="t")
    retriever = Retriever(store)
    everything = retriever.search("on-call allowance per week", kb="t", k=4)
    assert everything[0].doc_id == "engineering/on-call"
    public = retriever.search("on-call allowance per week", kb="t", k=4, search_filter=SearchFilter(public_only=True))
    assert public and all(p.doc_id != "engineering/on-call" for p in public)
    it_only = retriever.search("meal allowance", kb="t", k=4, search_filter=SearchFilter(knowledge_sets=["it"]))
    assert it_only and {p.knowledge_set for p in it_only} == {"it"}
    for mode in ("dense", "bm25"):
        restricted = retriever.search("on-call allowance", kb="t", k=4, mode=mode,
                                      search_filter=SearchFilter(public_only=True))
        assert all(p.doc_id != "engineering/on-call" for p in restricted)


def test_persisted_index_reopens_in_a_new_process_state(store: IndexStore, kb_dir: Path, tmp_path: Path) -> None:
    ingest(store, kb_dir, kb="t")
    reopened = IndexStore(config_for(tmp_path / "data"))
    top = Retriever(reopened).search("meal allowance", kb="t", k=1)[0]
    assert top.doc_id == "travel/per-diem" and top.heading == "Meals" and top.title == "Per diem"


def test_cli_search_json_and_ingest(sample_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.core import settings as settings_module
    from bot.cli import app

    monkeypatch.setenv("DESKMATE_DATA_DIR", str(sample_data_dir))
    monkeypatch.setenv("DESKMATE_DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite'}")
    settings_module.get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["search", "how much is the per diem for meals", "--k", "3", "--json"])
        assert result.exit_code == 0, result.output
        rows = json.loads(result.stdout)
        assert [r["rank"] for r in rows] == [1, 2, 3]
        assert set(rows[0]) >= {"rank", "doc_id", "title", "location", "heading", "score", "text"}
        assert rows[0]["doc_id"] == "travel/per-diem"

        missing = CliRunner().invoke(app, ["search", "anything", "--kb", "nope"])
        assert missing.exit_code == 1 and "no index yet" in missing.output

        small = tmp_path / "small"
        shutil.copytree(SAMPLE_KNOWLEDGE_DIR / "it", small)
        (small / "broken.pdf").write_bytes(b"%PDF-1.4 nonsense")
        monkeypatch.setenv("DESKMATE_DATA_DIR", str(tmp_path / "data"))
        settings_module.get_settings.cache_clear()
        ingested = CliRunner().invoke(app, ["ingest", str(small), "--kb", "it", "--json"])
        assert ingested.exit_code == 0, ingested.output
        report = json.loads(ingested.stdout)
        assert report["version"] == 1 and len(report["ingested"]) == 5
        assert report["skipped"] == [{"path": "broken.pdf", "reason": report["skipped"][0]["reason"]}]
        assert "PDF" in report["skipped"][0]["reason"]
    finally:
        settings_module.get_settings.cache_clear()


# --- the Chroma client: created once, race-free (a fresh worker's first burst) -------------------------------
FRESH_PROCESS_BURST = """
import asyncio, json, shutil, sys
from pathlib import Path
from knowledge.config import KnowledgeConfig
from knowledge.index import IndexStore
from knowledge.retrieval import Retriever

source, scratch, rounds = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])

async def burst(data_dir: Path) -> list[str]:
    # a fresh store on a directory this process has never opened: no Chroma client or system exists yet
    store = IndexStore(KnowledgeConfig(index_dir=data_dir / "index", chroma_dir=data_dir / "chroma"))
    retriever = Retriever(store)
    results = await asyncio.gather(*(retriever.asearch("How do I connect to the VPN?", kb="default", k=3)
                                     for _ in range(10)), return_exceptions=True)
    return [repr(r)[:200] if isinstance(r, BaseException) else ("ok" if r else "empty") for r in results]

outcomes = []
for i in range(rounds):
    target = scratch / f"round-{i}"
    for part in ("index", "chroma"):
        shutil.copytree(source / part, target / part)
    outcomes.append(asyncio.run(burst(target)))
print(json.dumps(outcomes))
"""


def test_a_fresh_process_first_burst_of_searches_all_succeed(sample_data_dir: Path, tmp_path: Path) -> None:
    """Ten concurrent searches on a fresh store in a fresh process (a worker's first burst of jobs).

    Before the client was created under a lock, most such bursts lost some searches inside Chroma (its shared
    system is registered before it has started); three rounds, each on a directory the process has not opened.
    """
    import os
    import subprocess
    import sys

    env = {**os.environ, "ANONYMIZED_TELEMETRY": "False"}
    done = subprocess.run([sys.executable, "-c", FRESH_PROCESS_BURST, str(sample_data_dir), str(tmp_path), "3"],
                          capture_output=True, text=True, timeout=180, env=env,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    outcomes = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcomes == [["ok"] * 10] * 3, outcomes


def test_the_client_is_created_once_under_concurrency(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The invariant behind the burst test, without Chroma's timing: many threads, two stores on one directory
    — one client per store, and never two being created at the same time."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    import knowledge.index as index_module

    created: list[object] = []
    active = 0
    overlap = 0
    guard = threading.Lock()

    class SlowClient:
        def __init__(self, path: str, settings: object) -> None:
            nonlocal active, overlap
            with guard:
                active += 1
                overlap = max(overlap, active)
            time.sleep(0.05)  # Chroma's start-up takes a while: plenty of time for the other threads to arrive
            with guard:
                active -= 1
                created.append(self)

    monkeypatch.setattr(index_module.chromadb, "PersistentClient", SlowClient)
    stores = [IndexStore(config_for(tmp_path)), IndexStore(config_for(tmp_path))]
    barrier = threading.Barrier(16)

    def client_of(i: int) -> object:
        barrier.wait()
        return stores[i % 2].client

    with ThreadPoolExecutor(16) as pool:
        clients = list(pool.map(client_of, range(16)))
    assert len(created) == 2 and overlap == 1
    assert {id(c) for c in clients[0::2]} == {id(stores[0].client)}
    assert {id(c) for c in clients[1::2]} == {id(stores[1].client)}
    assert stores[0].open() is stores[0].client


class _OtherModel:
    """A stand-in embedder of another model with the same width as MiniLM (as multilingual-e5-small has)."""

    name = "other-384"
    dim = 384

    def embed(self, texts):  # noqa: ANN001, ANN201 - test double
        import numpy as np

        vectors = np.ones((len(texts), 384), dtype=np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.mark.filterwarnings("ignore:legacy embedding function config")  # the stand-in is no registered backend
def test_a_version_embedded_by_another_model_is_not_searched(tmp_path: Path, kb_dir: Path) -> None:
    # Switching DESKMATE_EMBEDDING_BACKEND without a re-ingest must fail loudly, not rank by vectors of another
    # space (two 384-d spaces mix without any error from Chroma).
    from knowledge.embedding import EmbeddingModelError

    ingest(IndexStore(config_for(tmp_path / "data")), kb_dir, kb="t")
    other = IndexStore(config_for(tmp_path / "data"), embedder=_OtherModel())  # type: ignore[arg-type]
    with pytest.raises(EmbeddingModelError, match=r"embedded with onnx-minilm-int8.*embeds with other-384.*re-ingest"):
        Retriever(other).search("meal allowance", kb="t")
    # BM25 alone needs no vectors; and a re-ingest with the new model makes a version it can search.
    assert Retriever(other).search("meal allowance", kb="t", mode="bm25")
    report = ingest(other, kb_dir, kb="t")
    assert report.version == 2 and report.chunks_embedded == report.chunks_total
    assert Retriever(other).search("meal allowance", kb="t")


def test_a_version_ingested_by_another_process_is_searched_at_the_next_question(
        store: IndexStore, kb_dir: Path, tmp_path: Path) -> None:
    # A worker keeps the manifest's version list between questions (one stat each): an ingest by another process
    # (another IndexStore on the same folder) must still be what its next question searches.
    ingest(store, kb_dir, kb="t")
    worker = Retriever(IndexStore(config_for(tmp_path / "data")))
    assert worker.search("how do I sign in to the VPN", kb="t", k=1)[0].index_version == 1
    (kb_dir / "it/vpn.md").write_text("---\ntitle: VPN\n---\n## Connecting\n\nOpen NorthGate and use your passkey.\n")
    ingest(store, kb_dir, kb="t")
    top = worker.search("how do I sign in to the VPN", kb="t", k=1)[0]
    assert top.index_version == 2 and "passkey" in top.text


def test_heading_terms_are_prepared_at_ingestion_and_rank_heading_matches(
        store: IndexStore, kb_dir: Path, tmp_path: Path) -> None:
    from knowledge.index import heading_terms

    ingest(store, kb_dir, kb="t")
    version_dir = store.kb_dir("t") / "v1"
    stored = json.loads((version_dir / "headings.json").read_text())
    data = store.load("t")
    assert [frozenset(t) for t in stored] == heading_terms(data.chunks) == data.heading_terms
    assert any("meal" in terms for terms in stored)  # the per-diem page's "Meals" heading, stemmed
    # a version written before headings.json existed gets the same terms when it is loaded
    (version_dir / "headings.json").unlink()
    older = IndexStore(config_for(tmp_path / "data")).load("t")
    assert older.heading_terms == data.heading_terms
    assert Retriever(store).search("meals", kb="t", k=1)[0].heading == "Meals"
