"""Learned answers in the index: every build of a knowledge base (``ingest DIR`` and a source sync) holds the
approved answers of ``<data_dir>/learned/<kb>/`` as ``learned/`` documents, and a refresh re-reads only them —
unchanged documents are never embedded again."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from knowledge.config import KnowledgeConfig
from knowledge.connectors.config import parse_sources
from knowledge.connectors.sync import sync_source
from knowledge.index import IndexStore
from knowledge.ingest import ingest
from knowledge.learned import learned_dir
from knowledge.learned_index import refresh_learned
from knowledge.retrieval import Retriever, SearchFilter

PARKING = ("Parking permits for the office garage are issued by Facilities: fill in the parking permit form on "
           "the intranet and collect the sticker from reception.")


@pytest.fixture
def store(tmp_path: Path) -> IndexStore:
    data = tmp_path / "data"
    return IndexStore(KnowledgeConfig(index_dir=data / "index", chroma_dir=data / "chroma", crosslingual=None))


def handbook(root: Path) -> Path:
    pages = {"it/vpn.md": "# VPN\n\nConnect with NorthGate before you open the intranet from home.\n",
             "travel/booking.md": "# Booking travel\n\nBook trains and flights through the travel portal.\n"}
    for rel, text in pages.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def learned(store: IndexStore, name: str, question: str, answer: str, *, visibility: str = "public",
            review_by: datetime | None = None, kb: str = "default") -> Path:
    folder = learned_dir(store.config, kb)
    folder.mkdir(parents=True, exist_ok=True)
    review = (review_by or datetime.now(timezone.utc) + timedelta(days=180)).isoformat(timespec="seconds")
    path = folder / f"{name}.md"
    path.write_text(f"---\ntitle: Answered by Workplace Support on 2 Dec 2026\nvisibility: {visibility}\n"
                    f"knowledge_set: it\nurl: https://northwind.slack.com/archives/C0SUPPORT/p1\n"
                    f"review_by: '{review}'\n---\n\n# {question}\n\n{answer}\n")
    return path


def top(store: IndexStore, question: str, *, public_only: bool = False) -> str:
    passages = Retriever(store).search(question, kb="default", k=3,
                                       search_filter=SearchFilter(public_only=public_only))
    return passages[0].doc_id if passages else ""


def test_a_folder_ingest_holds_the_learned_answers_as_their_own_documents(store: IndexStore, tmp_path: Path) -> None:
    learned(store, "parking-permit-1", "How do I get a parking permit?", PARKING)
    learned(store, "salary-slips-2", "Where are my salary slips?", "Salary slips are in the HR portal under Pay.",
            visibility="restricted")
    report = ingest(store, handbook(tmp_path / "docs"), kb="default")
    assert sorted(report.ingested) == ["it/vpn", "learned/parking-permit-1", "learned/salary-slips-2",
                                       "travel/booking"]
    docs = store.manifest("default").latest["docs"]  # type: ignore[index]
    parking = docs["learned/parking-permit-1"]
    assert parking["title"] == "Answered by Workplace Support on 2 Dec 2026"
    assert parking["location"] == "https://northwind.slack.com/archives/C0SUPPORT/p1"
    assert (parking["public"], parking["knowledge_set"]) == (True, "it")
    assert docs["learned/salary-slips-2"]["public"] is False
    assert top(store, "parking permit for the garage") == "learned/parking-permit-1"
    assert top(store, "where do I find my salary slips", public_only=True) != "learned/salary-slips-2"
    assert top(store, "where do I find my salary slips") == "learned/salary-slips-2"

    again = ingest(store, tmp_path / "docs", kb="default")
    assert not again.created_version, "nothing changed: no version, nothing embedded"


def test_a_source_sync_holds_them_too_and_a_folders_own_learned_ids_are_refused(store: IndexStore,
                                                                                tmp_path: Path) -> None:
    learned(store, "parking-permit-1", "How do I get a parking permit?", PARKING)
    docs = handbook(tmp_path / "docs")
    (docs / "learned").mkdir()
    (docs / "learned" / "fake.md").write_text("# Fake\n\nA page that pretends to be a learned answer, long enough.\n")
    (source,) = parse_sources([{"name": "handbook", "kind": "folder", "path": str(docs)}])
    result = sync_source(store, source, [source], work_root=tmp_path / "work", default_kb="default")
    assert result.status == "ok"
    ids = set(store.manifest("default").latest["docs"])  # type: ignore[index]
    assert ids == {"handbook/it/vpn", "handbook/travel/booking", "handbook/learned/fake", "learned/parking-permit-1"}

    report = ingest(store, docs, kb="other")
    assert "learned/fake" not in report.ingested
    assert any(s.path == "learned/fake" and "reserved" in s.reason for s in report.skipped)


def test_a_refresh_embeds_only_the_learned_answers_that_changed(store: IndexStore, tmp_path: Path) -> None:
    ingest(store, handbook(tmp_path / "docs"), kb="default")
    first = store.latest_version("default")
    assert refresh_learned(store, "default")["created_version"] is False, "no answers yet: nothing to do"

    path = learned(store, "parking-permit-1", "How do I get a parking permit?", PARKING)
    added = refresh_learned(store, "default")
    assert added["created_version"] and added["added"] == ["learned/parking-permit-1"]
    assert added["chunks_embedded"] == 1, "only the new answer was embedded"
    assert added["version"] == (first or 0) + 1
    latest = store.manifest("default").latest
    assert latest is not None and set(latest["docs"]) == {"it/vpn", "travel/booking", "learned/parking-permit-1"}
    assert top(store, "parking permit for the garage") == "learned/parking-permit-1"
    assert top(store, "vpn from home") == "it/vpn", "the carried-over documents are still searchable"

    assert refresh_learned(store, "default")["created_version"] is False, "unchanged: no new version"

    learned(store, "parking-permit-1", "How do I get a parking permit?", PARKING + " Visitors get a day pass.")
    edited = refresh_learned(store, "default")
    assert edited["updated"] == ["learned/parking-permit-1"] and edited["chunks_embedded"] == 1

    # the next full build finds the refreshed answer unchanged: its vectors are kept
    rebuilt = ingest(store, tmp_path / "docs", kb="default")
    assert not rebuilt.created_version

    path.unlink()
    removed = refresh_learned(store, "default")
    assert removed["deleted"] == ["learned/parking-permit-1"] and removed["chunks_embedded"] == 0
    assert top(store, "parking permit for the garage") != "learned/parking-permit-1"


def test_an_answer_past_its_review_date_is_left_out(store: IndexStore, tmp_path: Path) -> None:
    learned(store, "parking-permit-1", "How do I get a parking permit?", PARKING,
            review_by=datetime.now(timezone.utc) - timedelta(days=1))
    report = ingest(store, handbook(tmp_path / "docs"), kb="default")
    assert "learned/parking-permit-1" not in report.ingested
    assert any(s.path == "learned/parking-permit-1" and "review date" in s.reason for s in report.skipped)
