"""A small knowledge base of its own for the learned-answers tests: they approve answers, which makes new index
versions, so they never touch the shared sample index. Built once per test module (:func:`module_kb`), copied for
each test (:func:`copy_kb`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bot.core.settings import SAMPLE_KNOWLEDGE_DIR
from knowledge.config import KnowledgeConfig
from knowledge.index import IndexStore
from knowledge.ingest import ingest
from tests.conftest import settings_for

#: A few sample pages: none says anything about parking, which the tests' support person explains.
DOCS = ("travel/booking.md", "travel/per-diem.md", "it/vpn.md", "it/laptop-setup.md")
OWNER = "W333"  # a knowledge owner (Slack user id)
SUPPORT_PERSON = "W444"
TEAM = "Workplace Support"
QUESTION = "How do I get a parking permit for the office garage?"
SIMILAR = "Where can I get a permit to park in the office garage?"
REPLY = ("Parking permits for the office garage are issued by Facilities: fill in the parking permit form on the "
         "intranet, and collect the permit sticker from reception on the ground floor two days later.")


def build_small_kb(data_dir: Path) -> Path:
    docs = data_dir.parent / f"{data_dir.name}-docs"
    for rel in DOCS:
        target = docs / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLE_KNOWLEDGE_DIR / rel, target)
    report = ingest(IndexStore(KnowledgeConfig.from_settings(settings_for(data_dir))), docs, kb="default")
    assert report.created_version
    return docs


def module_kb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir with the small knowledge base ingested (a module-scoped fixture's body)."""
    data_dir = tmp_path_factory.mktemp("learned-kb") / "data"
    data_dir.mkdir()
    build_small_kb(data_dir)
    return data_dir


def copy_kb(small_kb: Path, tmp_path: Path) -> Path:
    """A test's own copy of the small knowledge base (index and vectors)."""
    target = tmp_path / "data"
    shutil.copytree(small_kb, target)
    return target
