"""Learned answers as documents of the index: the folder approved answers are written to, and the one hook every
index build of a knowledge base goes through.

The review workflow (:mod:`playbooks.learned`) writes each approved answer as a Markdown file with front matter
into ``<data_dir>/learned/<kb>/`` (:func:`learned_dir`); this module only reads that folder. Two entry points:

- :func:`with_learned` — called by :func:`knowledge.ingest.ingest_documents`, so that every build of a
  knowledge base (``deskmate ingest DIR`` and a source sync alike) holds the approved answers as documents of
  their own, ids prefixed ``learned/``. Unchanged answers keep their vectors like any other document.
- :func:`knowledge.learned_index.refresh_learned` — a new version of the knowledge base in which only the ``learned/`` documents are
  re-read: every other document's chunks and vectors are carried over from the latest version as they are (no
  source is re-read, nothing else is embedded). The worker runs it after an answer is approved, edited,
  rejected or expires.

An answer whose ``review_by`` date has passed is left out of every build (it is re-reviewed or dropped).
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bot.core.log import get_logger
from knowledge.config import KnowledgeConfig
from knowledge.sources import SkippedFile, SourceDocument, scan

log = get_logger(__name__)

#: Ids of learned answers in the index; reserved: a document of a folder or source never gets one.
LEARNED_PREFIX = "learned/"
RESERVED_REASON = "the learned/ id prefix is reserved for learned answers"


def is_learned(doc_id: str) -> bool:
    return doc_id.startswith(LEARNED_PREFIX)


def learned_root(config: KnowledgeConfig) -> Path:
    """``<data_dir>/learned``: beside the index (``<data_dir>/index``), on the same shared volume."""
    return config.index_dir.parent / "learned"


def learned_dir(config: KnowledgeConfig, kb: str) -> Path:
    return learned_root(config) / re.sub(r"[^a-zA-Z0-9_.-]", "-", kb)


def parse_moment(value: Any) -> datetime | None:
    """An ISO date or date-time from front matter (naive = UTC); None when absent or unreadable."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(str(value).strip())
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def learned_documents(config: KnowledgeConfig, kb: str, *,
                      now: datetime | None = None) -> tuple[list[SourceDocument], list[SkippedFile]]:
    """The approved answers of ``kb`` as documents (ids ``learned/<file name>``), those past their review date
    left out (with a reason)."""
    folder = learned_dir(config, kb)
    if not folder.is_dir():
        return [], []
    documents, skipped = scan(folder, max_bytes=config.max_document_bytes)
    now = now or datetime.now(timezone.utc)
    out: list[SourceDocument] = []
    out_skipped = [SkippedFile(LEARNED_PREFIX + s.path, s.reason) for s in skipped]
    for doc in documents:
        review_by = parse_moment(doc.meta.get("review_by"))
        if review_by is not None and review_by <= now:
            out_skipped.append(SkippedFile(LEARNED_PREFIX + doc.doc_id, "past its review date"))
            continue
        out.append(replace(doc, doc_id=LEARNED_PREFIX + doc.doc_id, meta={**doc.meta, "source": "learned"}))
    return out, out_skipped


def with_learned(config: KnowledgeConfig, kb: str, documents: list[SourceDocument],
                 skipped: list[SkippedFile]) -> tuple[list[SourceDocument], list[SkippedFile]]:
    """``documents`` (a folder's or the sources') plus the approved answers of ``kb``: the hook of every build."""
    own = [d for d in documents if not is_learned(d.doc_id)]
    reserved = [SkippedFile(d.doc_id, RESERVED_REASON) for d in documents if is_learned(d.doc_id)]
    learned, learned_skipped = learned_documents(config, kb)
    return own + learned, skipped + reserved + learned_skipped
